"""Settings of api_feed, the replica: consumes Produto events into ProdutoMirror."""

from pathlib import Path

from django_tools import cqrs
from django_tools.env import load_service_env
from django_tools.settings import common_settings, django_apps

BASE_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BASE_DIR.parent

load_service_env("feed", REPO_ROOT)
_common = common_settings(service="feed", base_dir=BASE_DIR, repo_root=REPO_ROOT)
globals().update(_common)

INSTALLED_APPS = django_apps("feed", cqrs_extensions=("django_tools.replica",))
ROOT_URLCONF = "api_feed.urls"
WSGI_APPLICATION = "api_feed.wsgi.application"

CQRS = cqrs.replica_settings(_common["RABBITMQ_URL"], default_queue="api_feed")
