"""api_produtos under django-outbox-pattern (lab only): the master's settings plus the library
and `outbox_pattern_app.MasterConfig`, which makes Produto publish through it."""

from api_produtos.settings import *  # noqa: F403
from apis_lab.peers.outbox_pattern_options import outbox_pattern_settings

INSTALLED_APPS = [
    *INSTALLED_APPS,  # noqa: F405
    "django_outbox_pattern",
    "apis_lab.peers.outbox_pattern_app.MasterConfig",
]
DJANGO_OUTBOX_PATTERN = outbox_pattern_settings(RABBITMQ_URL)  # noqa: F405
