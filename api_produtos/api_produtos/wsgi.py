import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "api_produtos.settings")

from django_tools.chassis.wsgi import application as _build

application = _build()
