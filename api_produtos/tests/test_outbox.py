"""Every change writes its event to the outbox in the same transaction (no broker involved)."""

import io
from datetime import timedelta
from decimal import Decimal

import orjson
import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from django_tools.outbox.models import OutboxEvent
from django_tools.outbox.selectors import outbox_backlog
from django_tools.outbox.services import prune_published
from django_tools.testing import STOCK_PAYLOAD_KEYS
from produto import services
from produto.models import Produto

pytestmark = pytest.mark.django_db


def events() -> list[dict]:
    return [orjson.loads(e.body) for e in OutboxEvent.objects.order_by("id")]


def make(sku="P-1", **kw) -> Produto:
    return services.produto_create(sku=sku, nome="Pão", preco=Decimal("7.5"), **kw)


def test_create_update_delete_each_leave_one_stock_payload():
    produto = make(estoque=2)
    services.produto_update(produto_id=produto.pk, data={"preco": Decimal("8")})
    services.produto_delete(produto_id=produto.pk)
    save, update, delete = events()
    assert set(save) == STOCK_PAYLOAD_KEYS
    assert (save["signal_type"], save["cqrs_id"], save["instance_pk"]) == (
        "SAVE",
        "produto",
        produto.pk,
    )
    data = save["instance_data"]
    assert (data["sku"], data["preco"], data["estoque"], data["cqrs_revision"]) == (
        "P-1",
        "7.50",
        2,
        0,
    )
    assert (update["instance_data"]["preco"], update["instance_data"]["cqrs_revision"]) == (
        "8.00",
        1,
    )
    assert (delete["signal_type"], delete["instance_data"]) == (
        "DELETE",
        {
            "id": produto.pk,
            "cqrs_revision": 2,
            "cqrs_updated": delete["instance_data"]["cqrs_updated"],
        },
    )
    rows = list(
        OutboxEvent.objects.order_by("id").values_list("routing_key", "revision", "published_at")
    )
    assert rows == [("produto", 0, None), ("produto", 1, None), ("produto", 2, None)]


def test_a_rolled_back_transaction_leaves_no_event():
    with pytest.raises(RuntimeError), transaction.atomic():
        make(sku="GONE")
        raise RuntimeError("abort")
    assert OutboxEvent.objects.count() == 0
    make(sku="KEPT")
    assert [e["instance_data"]["sku"] for e in events()] == ["KEPT"]


def test_a_failed_write_leaves_no_event():
    make(sku="A")
    with pytest.raises(Exception):  # noqa: B017 - the conflict, whatever its form
        make(sku="A")
    assert OutboxEvent.objects.count() == 1


def test_several_saves_in_one_transaction_are_distinct_revisions():
    with transaction.atomic():
        produto = make()
        produto.nome = "Pão de queijo"
        produto.save()
        produto.estoque = 9
        produto.save()
    revisions = [
        (e["instance_data"]["cqrs_revision"], e["instance_data"]["nome"]) for e in events()
    ]
    assert revisions == [(0, "Pão"), (1, "Pão de queijo"), (2, "Pão de queijo")]
    assert events()[-1]["instance_data"]["estoque"] == 9
    assert Produto.objects.get().cqrs_revision == 2


def test_a_plain_save_outside_any_transaction_still_commits_with_its_event():
    produto = Produto(sku="RAW", nome="x", preco=Decimal("1"))
    produto.save()  # TransactionalWritesMixin opens the transaction itself
    produto.delete()
    assert [e["signal_type"] for e in events()] == ["SAVE", "DELETE"]


def test_bulk_operations_leave_an_event_per_row():
    created = Produto.cqrs.bulk_create(
        [Produto(sku=f"B-{n}", nome=f"n{n}", preco=Decimal(n)) for n in range(3)]
    )
    Produto.cqrs.bulk_update(Produto.objects.filter(sku__in=["B-0", "B-1"]), ativo=False)
    Produto.objects.filter(sku="B-2").delete()
    kinds = [
        (e["signal_type"], e["instance_data"].get("sku"), e["instance_data"]["cqrs_revision"])
        for e in events()
    ]
    assert kinds == [
        ("SAVE", "B-0", 0),
        ("SAVE", "B-1", 0),
        ("SAVE", "B-2", 0),
        ("SAVE", "B-0", 1),
        ("SAVE", "B-1", 1),
        ("DELETE", None, 1),
    ]
    assert all(p.pk for p in created)


def test_cqrs_sync_to_one_queue_goes_through_the_outbox(django_capture_on_commit_callbacks):
    produto = make()
    OutboxEvent.objects.all().delete()
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "cqrs_sync",
            "--cqrs-id",
            "produto",
            "--filter",
            "{}",
            "--queue",
            "new_replica",
            stdout=out,
        )
    (event,) = OutboxEvent.objects.all()
    assert event.routing_key == "cqrs.new_replica.produto"
    body = orjson.loads(event.body)
    assert (body["signal_type"], body["instance_pk"]) == ("SYNC", produto.pk)


def test_backlog_and_pruning():
    for n in range(3):
        make(sku=f"S-{n}")
    backlog = outbox_backlog()
    assert backlog.count == 3 and backlog.oldest_age_seconds >= 0
    assert backlog.last_published_at is None
    long_ago = timezone.now() - timedelta(hours=5)
    OutboxEvent.objects.filter(
        instance_pk__in=[str(p.pk) for p in Produto.objects.all()[:2]]
    ).update(published_at=long_ago)
    assert outbox_backlog().count == 1
    assert outbox_backlog().last_published_at == long_ago
    assert prune_published(older_than=timedelta(hours=6)) == 0
    assert prune_published(older_than=timedelta(hours=1), chunk=1) == 2
    assert OutboxEvent.objects.count() == 1  # the unpublished one is never pruned


def test_rest_writes_never_touch_the_broker(client, settings):
    settings.CQRS = {**settings.CQRS, "url": "amqp://admin:admin@127.0.0.1:1/"}  # nobody there
    settings.PRODUTOS_API_KEY = None
    response = client.post(
        "/api/produtos/", {"sku": "OFF", "nome": "x", "preco": 1}, content_type="application/json"
    )
    assert response.status_code == 201
    assert OutboxEvent.objects.filter(signal_type="SAVE").count() == 1


def test_the_beat_prune_task_removes_what_was_published_long_ago(settings):
    from django_tools.outbox.tasks import prune_outbox

    settings.OUTBOX_RETENTION = 3600
    make(sku="OLD")
    make(sku="NEW")
    OutboxEvent.objects.filter(body__contains='"OLD"').update(
        published_at=timezone.now() - timedelta(hours=2)
    )
    assert prune_outbox.apply().get() == 1
    assert [orjson.loads(e.body)["instance_data"]["sku"] for e in OutboxEvent.objects.all()] == [
        "NEW"
    ]
