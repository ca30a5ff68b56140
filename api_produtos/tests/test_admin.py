"""The master's admin: products with django-cqrs's resync action (through the outbox), and the
outbox page (state filter, backlog summary, republish)."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from django_tools.outbox.models import OutboxEvent
from produto import services

pytestmark = pytest.mark.django_db

OUTBOX = "/admin/cqrs_outbox/outboxevent/"


def make(n: int):
    return services.produto_create(sku=f"SKU-{n}", nome=f"Produto {n}", preco=Decimal("10.00"))


@pytest.fixture
def events():
    """Three products' events: the first two published (one an hour ago), the third pending."""
    for n in range(3):
        make(n)
    first, second, third = OutboxEvent.objects.order_by("id")
    now = timezone.now()
    OutboxEvent.objects.filter(pk=first.pk).update(published_at=now - timedelta(hours=1))
    OutboxEvent.objects.filter(pk=second.pk).update(published_at=now - timedelta(minutes=2))
    OutboxEvent.objects.filter(pk=third.pk).update(created_at=now - timedelta(minutes=5))
    return first, second, third


def test_the_outbox_page_shows_the_backlog_and_filters_by_state(admin_client, events):
    first, second, third = events
    response = admin_client.get(OUTBOX)
    assert response.status_code == 200
    text = response.text
    assert "Backlog do outbox" in text
    assert '<td class="backlog-count">1</td>' in text
    assert "há 5 min" in text  # the oldest pending
    assert "há 2 min" in text  # the last published
    assert text.count("pendente") >= 1 and "publicado" in text
    pending = admin_client.get(OUTBOX, {"estado": "pendente"})
    assert list(pending.context["cl"].result_list) == [third]
    published = admin_client.get(OUTBOX, {"estado": "publicado"})
    assert list(published.context["cl"].result_list) == [second, first]


def test_republish_queues_a_new_copy_of_only_the_selected_rows(admin_client, events):
    first, second, third = events
    response = admin_client.post(
        OUTBOX, {"action": "republish", "_selected_action": [first.pk]}, follow=True
    )
    (copy,) = OutboxEvent.objects.filter(pk__gt=third.pk)
    assert f"1 evento(s) de volta a pendente, como novo(s) evento(s) #{copy.pk}" in response.text
    pending = set(
        OutboxEvent.objects.filter(published_at__isnull=True).values_list("pk", flat=True)
    )
    assert pending == {copy.pk, third.pk}
    fields = ("cqrs_id", "instance_pk", "signal_type", "revision", "routing_key", "body",
              "correlation_id", "trace_context")  # fmt: skip
    assert [getattr(copy, f) for f in fields] == [getattr(first, f) for f in fields]
    # The originals are left as they were.
    assert OutboxEvent.objects.get(pk=first.pk).published_at is not None
    assert OutboxEvent.objects.get(pk=second.pk).published_at is not None
    assert '<td class="backlog-count">2</td>' in response.text


@pytest.mark.django_db(transaction=True)
def test_a_republish_while_the_relay_has_the_row_in_flight_is_not_overwritten(
    admin_client, rabbitmq_url, cqrs_exchange, listening_queue
):
    """The real relay, stopped between the broker's confirm of a row and its mark_published
    (deterministically, not by timing); the operator republishes that row meanwhile. Setting the
    row back to pending was undone by the relay's mark a moment later: the event had gone out
    before the click and never went out again."""
    import threading
    from unittest import mock

    from django.db import connections

    from django_tools.outbox.relays import amqp, base
    from django_tools.testing import wait_until

    queue = listening_queue.bind("produto")
    make(1)
    (row,) = OutboxEvent.objects.all()
    confirmed, clicked = threading.Event(), threading.Event()
    real_mark = base.mark_published  # the relays' bookkeeping is the base class's

    def mark_after_the_click(ids):
        if row.pk in ids and not confirmed.is_set():
            confirmed.set()
            assert clicked.wait(10)
        real_mark(ids)

    relay = amqp.AmqpRelay(rabbitmq_url, cqrs_exchange)

    def run():
        try:
            relay.run()
        finally:
            connections.close_all()

    with mock.patch.object(base, "mark_published", mark_after_the_click):
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            assert confirmed.wait(15), "the relay never got the broker's confirm"
            response = admin_client.post(
                OUTBOX, {"action": "republish", "_selected_action": [row.pk]}, follow=True
            )
            assert "1 evento(s) de volta a pendente" in response.text
            clicked.set()
            first, second = queue.get(), queue.get()  # the original, then the republished one
            wait_until(
                lambda: not OutboxEvent.objects.filter(published_at__isnull=True).exists(),
                what="the relay to publish the republished event",
            )
        finally:
            clicked.set()
            relay.request_stop()
            thread.join(15)
    assert first[1] == second[1]  # the same event, sent again after the click
    assert second[0].message_id != str(row.pk)
    assert OutboxEvent.objects.count() == 2


def test_the_outbox_is_read_only_and_republishing_needs_the_change_permission(client, events):
    first, _, _ = events
    staff = User.objects.create_user("op", password="x", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_outboxevent"))
    client.force_login(staff)
    response = client.get(OUTBOX)
    assert response.status_code == 200
    assert response.context["action_form"] is None  # no action it may run
    client.post(OUTBOX, {"action": "republish", "_selected_action": [first.pk]})
    assert OutboxEvent.objects.get(pk=first.pk).published_at is not None
    assert client.get(f"{OUTBOX}add/").status_code == 403
    assert client.get(f"{OUTBOX}{first.pk}/change/").status_code == 200  # viewing only
    assert client.post(f"{OUTBOX}{first.pk}/delete/").status_code == 403


def test_the_resync_action_writes_a_sync_to_the_outbox(
    admin_client, django_capture_on_commit_callbacks
):
    produtos = [make(n) for n in range(3)]
    before = OutboxEvent.objects.count()
    # django-cqrs produces a sync after the commit (here, the test's transaction never commits).
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/produto/produto/",
            {"action": "sync_items", "_selected_action": [produtos[0].pk, produtos[2].pk]},
            follow=True,
        )
    assert "2 sincronização(ões) no outbox" in response.text
    syncs = OutboxEvent.objects.order_by("id")[before:]
    assert [(e.signal_type, e.instance_pk) for e in syncs] == [
        ("SYNC", str(produtos[0].pk)),
        ("SYNC", str(produtos[2].pk)),
    ]
    assert all(e.published_at is None for e in syncs)


def visible_text(html: str) -> str:
    """What a reader sees of a page (no tags, scripts, styles, nor the icons' sprites)."""
    html = re.sub(r"<(script|style|svg)\b.*?</\1>", " ", html, flags=re.DOTALL)
    return re.sub(r"<[^>]+>", " ", html)


def test_the_masters_console_says_where_it_is_and_speaks_portuguese(admin_client, events):
    first, _, third = events
    english = re.compile(
        r"\b(Outbox events?|Signal type|Cqrs id|Cqrs revision|Cqrs updated|Instance pk|"
        r"Routing key|Correlation id|Trace context|Created at|Published at|Body|Descricao|"
        r"Preco|Sku|published|pending)\b"
    )
    produto = third.instance_pk
    for url in (
        "/admin/",
        OUTBOX,
        f"{OUTBOX}{first.pk}/change/",
        f"{OUTBOX}{third.pk}/change/",
        "/admin/produto/produto/",
        f"/admin/produto/produto/{produto}/change/",
    ):
        text = visible_text(admin_client.get(url).text)
        assert "Console — api_produtos (mestre)" in text, url
        assert not english.search(text), (url, english.search(text))
    index = admin_client.get("/admin/").text
    assert f'<a href="{OUTBOX}">Eventos do outbox</a>' in index
    # The row's title: Portuguese, to the second.
    published = OutboxEvent.objects.get(pk=first.pk)
    title = str(published)
    assert title.startswith(f"evento #{first.pk}: SAVE produto ") and "publicado em " in title
    assert re.search(r"publicado em \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)$", title), title
    assert str(third).endswith("(pendente)")
    # The body pretty-printed and folded.
    detail = admin_client.get(f"{OUTBOX}{first.pk}/change/").text
    assert '<details class="json-body">' in detail and "&quot;signal_type&quot;: " in detail
    change = admin_client.get(f"/admin/produto/produto/{produto}/change/").text
    for label in ("Descrição", "Preço", "SKU"):
        assert f">{label}:</label>" in change, label
