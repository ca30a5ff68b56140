"""Misconfigurations fail at start-up with the fix named, instead of per message at run time."""

import pytest
from dj_cqrs.mixins import MasterMixin, ReplicaMixin
from dj_cqrs.registries import MasterRegistry, ReplicaRegistry
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import models
from django.test.utils import isolate_apps

from django_tools.outbox.checks import check_master
from django_tools.replica import apply
from django_tools.replica.checks import check_replica
from django_tools.replica.messages import Event


@pytest.fixture
def registered():
    """Registry entries a test adds are removed afterwards."""
    before = dict(MasterRegistry.models), dict(ReplicaRegistry.models)
    yield
    MasterRegistry.models.clear()
    MasterRegistry.models.update(before[0])
    ReplicaRegistry.models.clear()
    ReplicaRegistry.models.update(before[1])


def ids(problems) -> set[str]:
    return {problem.id for problem in problems}


def test_the_test_settings_themselves_pass():
    assert not [p for p in check_replica() + check_master() if p.is_serious()]


@isolate_apps("dj_replica")
def test_a_replica_model_without_the_convergent_manager_is_refused(registered):
    class StockReplica(ReplicaMixin):
        CQRS_ID = "stock_replica"
        id = models.BigIntegerField(primary_key=True)

        class Meta:
            app_label = "dj_replica"

    (problem,) = [p for p in check_replica() if p.id == "django_tools.replica.E005"]
    assert "'stock_replica' does not use the convergent manager" in problem.msg
    assert "cqrs = ConvergentReplicaManager()" in problem.hint
    assert problem.obj is StockReplica
    # At run time too: apply refuses to write it rather than bypass revisions and tombstones.
    event = Event("stock_replica", "SAVE", 1, 1, {"id": 1, "cqrs_revision": 1})
    with pytest.raises(ImproperlyConfigured, match="StockReplica must declare"):
        apply.prepare(event)


class NoReplicaTablesElsewhere:
    """A router that sends BookElsewhere to `elsewhere` but keeps django_tools.replica's tables
    out of it."""

    def db_for_write(self, model, **hints):
        return getattr(model, "DATABASE", None) if model._meta.app_label == "dj_replica" else None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return False if db == "elsewhere" and app_label == "cqrs_replica" else None


def test_a_replica_model_whose_database_lacks_the_tombstone_tables_is_refused(settings):
    from dj_replica.models import BookElsewhere

    assert not [p for p in check_replica() if p.id == "django_tools.replica.E007"]
    settings.DATABASE_ROUTERS = [NoReplicaTablesElsewhere()]
    (problem,) = [p for p in check_replica() if p.id == "django_tools.replica.E007"]
    assert problem.obj is BookElsewhere
    assert "database 'elsewhere'" in problem.msg and "Tombstone" in problem.msg
    assert "migrate --database elsewhere" in problem.hint


@isolate_apps("dj_master")
def test_a_master_model_without_the_outbox_mixin_and_manager_is_refused(registered):
    class PlainMaster(MasterMixin):
        CQRS_ID = "plain_master"
        name = models.CharField(max_length=10)

        class Meta:
            app_label = "dj_master"

    problems = [p for p in check_master() if p.obj is PlainMaster]
    assert ids(problems) == {"django_tools.outbox.E001", "django_tools.outbox.E002"}
    assert any("TransactionalWritesMixin" in p.hint for p in problems)
    assert any("OutboxMasterManager" in p.hint for p in problems)


def test_settings_that_cannot_work_are_named(settings):
    settings.CQRS = {**settings.CQRS, "queue": None, "replica": {"prefetch": 1}}
    found = {p.id: p for p in check_replica()}
    assert "django_tools.replica.E002" in found and "django_tools.replica.E003" in found
    assert "CQRS_MAX_RETRIES" in found["django_tools.replica.E003"].msg
    settings.REPLICATION_MODE, settings.REPLICA_TASK_QUEUE = "celery", ""
    assert "django_tools.outbox.E003" in ids(check_master())


def test_cqrs_consume_refuses_celery_mode_in_one_line(settings):
    settings.REPLICATION_MODE = "celery"
    with pytest.raises(CommandError, match="REPLICATION_MODE=celery: the replica's Celery worker"):
        call_command("cqrs_consume")


@pytest.mark.django_db
def test_cqrs_consume_refuses_a_queue_type_the_broker_contradicts(settings, topology, rabbitmq_url):
    """The queue exists as quorum (the default for a new replica here): asking for classic
    names the migration instead of starting workers that fail on every declare."""
    settings.CQRS = {
        **settings.CQRS,
        "replica": {**settings.CQRS["replica"], "queue_type": "classic"},
    }
    with pytest.raises(CommandError) as refused:
        call_command("cqrs_consume")
    assert f"queue {topology.queue} is a quorum queue on the broker" in str(refused.value)
    assert "cqrs_queues migrate --to classic" in str(refused.value)
