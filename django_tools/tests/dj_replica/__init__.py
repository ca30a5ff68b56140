"""A throwaway replica for django_tools' own tests: one model kept by django_tools.replica."""
