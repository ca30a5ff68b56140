"""api_produtos' settings with django-jaiminho replicating its changes (lab only, issue 23): the
web server, the writer and `manage.py events_relay` of `apis bench/chaos --pipeline jaiminho` run
under these (DJANGO_SETTINGS_MODULE=apis_lab.peers.jaiminho_settings).

`jaiminho` is the library's app (its `jaiminho_event` table, its `events_relay` command);
`JaiminhoLabConfig`, listed last so that it runs after this project's outbox app, takes the
outbox's handlers off `Produto` and stores each change as a call to jaiminho's decorated
`publish_change` instead (apis_lab/peers/jaiminho_replication.py)."""

from api_produtos.settings import *  # noqa: F403
from apis_lab.peers.jaiminho_replication import JAIMINHO_CONFIG as _CONFIG

INSTALLED_APPS = [
    *INSTALLED_APPS,  # noqa: F405
    "jaiminho",
    "apis_lab.peers.jaiminho_replication.JaiminhoLabConfig",
]
JAIMINHO_CONFIG = dict(_CONFIG)
