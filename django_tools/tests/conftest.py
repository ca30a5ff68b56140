pytest_plugins = ["django_tools.testing"]
