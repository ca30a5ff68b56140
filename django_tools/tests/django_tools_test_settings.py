"""Settings of django_tools' own tests: the shared settings, and the two reusable apps
(`django_tools.outbox`, `django_tools.replica`) on throwaway models, as django-cqrs tests itself
with tests/dj_master and tests/dj_replica.

- `dj_master.Book`: a master (`TransactionalWritesMixin, MasterMixin`, `OutboxMasterManager`);
  its changes go to the outbox and the relays publish them;
- `dj_replica.BookReplica`: its replica (`ReplicaMixin`, `ConvergentReplicaManager`), applied by
  the consumer, the Celery task and the replication API.

Both have `CQRS_ID = "book"`, in one process, and they do not collide: django-cqrs keeps masters
and replicas in two registries (`MasterRegistry`, `ReplicaRegistry`); `OutboxSignals.install()`
(the outbox app's `ready()`) replaces the handlers of each *master* class only (signals with
`sender=Book`), and everything on the replica side looks models up in `ReplicaRegistry`. So a
Book's change leaves an outbox row whose routing key, "book", is the one the replica's queue is
bound to: a test can follow one change from the master to the replica in this process.

The one setting both sides share is `CQRS["transport"]`: it is the master's (`OutboxTransport`,
so that `cqrs_sync` goes through the outbox). The replica side never needs a transport here: the
tests run its consumer (`django_tools.replica.consumer.Consumer`) directly, as the replica's
transport does in each `cqrs_consume` worker.

The database is a SQLite file (consumers and relays run in threads and need normal locking), or
DATABASE_URL's server with a test database of its own (`test_django_tools`).
"""

import copy
import tempfile
from pathlib import Path

from django_tools.chassis.celery import task_queues
from django_tools.chassis.settings.base import *  # noqa: F403
from django_tools.chassis.settings.celery import *  # noqa: F403
from django_tools.chassis.settings.cqrs import *  # noqa: F403
from django_tools.chassis.settings.logging import *  # noqa: F403
from django_tools.chassis.settings.tracing import *  # noqa: F403

SERVICE_NAME = "tools-tests"
SECRET_KEY = "django-tools-tests"
LANGUAGE_CODE = "en-us"

# django_tools.replica before dj_cqrs: its cqrs_consume and cqrs_dead_letters replace the stock
# commands of the same name.
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "ninja",
    "django_tools.replica",
    "dj_cqrs",
    "django_tools.outbox",
    "dj_master",
    "dj_replica",
]
ROOT_URLCONF = "django_tools_test_urls"
MIDDLEWARE = [
    "django_tools.observability.correlation.RequestIdMiddleware",
    "django_tools.observability.metrics.HttpMetricsMiddleware",
]


def _elsewhere(name: str) -> str:
    stem, dot, suffix = name.rpartition(".sqlite3")
    return f"{stem}_elsewhere{dot}{suffix}" if dot else f"{name}_elsewhere"


# The main database is never opened by the tests; its directory is made under the temporary one.
DATABASES = database_settings("django_tools", Path(tempfile.gettempdir()))  # noqa: F405
# A second database, where the router sends `dj_replica.BookElsewhere` (a replica model routed
# away from `default`): another SQLite file, or another test database on the same server.
DATABASES["elsewhere"] = {
    **copy.deepcopy(DATABASES["default"]),
    "NAME": _elsewhere(DATABASES["default"]["NAME"]),
    "TEST": {"NAME": _elsewhere(DATABASES["default"]["TEST"]["NAME"])},
}
DATABASE_ROUTERS = ["dj_replica.routers.ElsewhereRouter"]

CQRS = {
    "transport": OUTBOX_TRANSPORT,  # noqa: F405
    "url": RABBITMQ_URL,  # noqa: F405
    "exchange": CQRS_EXCHANGE,  # noqa: F405
    "master": {**CQRS_MASTER_OPTIONS},  # noqa: F405
    # Each broker test declares a queue of its own (django_tools.testing's `topology`).
    "queue": "django_tools_tests",
    "replica": {**CQRS_REPLICA_OPTIONS},  # noqa: F405
}

#: Nothing listens there: reconciliation tests give their replica reader explicitly.
RECONCILE_REPLICA_URL = "http://127.0.0.1:1"
CELERY_TASK_DEFAULT_QUEUE = f"{CELERY_QUEUE_PREFIX}django_tools_tests.tasks"  # noqa: F405
#: REPLICATION_MODE=celery: the master's relay sends to the replica's queue, this process's own.
REPLICA_TASK_QUEUE = CELERY_TASK_DEFAULT_QUEUE
CELERY_TASK_QUEUES = task_queues(CELERY_TASK_DEFAULT_QUEUE, queue_type=CELERY_QUEUE_TYPE)  # noqa: F405

#: Where test messages go unless a test names another CQRS_ID (django_tools.testing).
TEST_CQRS_ID = "book"
