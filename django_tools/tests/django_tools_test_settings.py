"""Minimal settings for django_tools' own tests (no service apps)."""

SECRET_KEY = "django-tools-tests"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "ninja"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
ROOT_URLCONF = "django_tools_test_urls"
USE_TZ = True
SERVICE_NAME = "tools-tests"
RABBITMQ_URL = "amqp://admin:admin@localhost:5672/"
REDIS_URL = "redis://localhost:6379/0"
MIDDLEWARE = [
    "django_tools.observability.correlation.RequestIdMiddleware",
    "django_tools.observability.metrics.HttpMetricsMiddleware",
]
