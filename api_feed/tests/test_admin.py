"""The replica's admin: the read-only pages, and the dead-letter page on the real broker (list,
filter, retry and purge only the selected letters after a confirmation, a broker that is down)."""

import re

import orjson
import pika
import pytest
from django.contrib.auth.models import Permission, User
from pika.exceptions import ChannelClosedByBroker

from django_tools.connectivity import amqp_channel
from django_tools.replica import failures
from django_tools.testing import queue_depth, wait_until
from feed.models import ProdutoMirror

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/admin/cqrs_replica/deadletter/"


def dead_letter(url, topology, body: dict | bytes, reason: str, error: str, **headers) -> None:
    """A letter put straight into the dead-letter queue, with the headers the consumer writes."""
    with amqp_channel(url) as channel:
        channel.confirm_delivery()
        channel.basic_publish(
            "",
            topology.dead_letter_queue,
            body if isinstance(body, bytes) else orjson.dumps(body),
            pika.BasicProperties(
                delivery_mode=2,
                headers={
                    failures.DEAD_REASON: reason,
                    failures.ERROR_CLASS: f"django.db.utils.{error}",
                    failures.ERROR: f"{error} while applying",
                    failures.RETRIES: 3 if reason == failures.EXHAUSTED else 0,
                    failures.FIRST_FAILURE: "2026-01-01T00:00:00+00:00",
                    failures.LAST_FAILURE: "2026-01-01T00:00:07+00:00",
                    failures.ORIGINAL_ROUTING_KEY: "produto",
                    **headers,
                },
            ),
            mandatory=True,
        )


@pytest.fixture
def letters(rabbitmq_url, topology, event_payload, instance_data):
    """Three dead letters: a valid save that failed for a transient reason (its cause is gone),
    an invalid one (estoque -1), and one of another CQRS_ID."""
    dead_letter(
        rabbitmq_url,
        topology,
        event_payload("SAVE", instance_data(70, nome="Volta")),
        failures.EXHAUSTED,
        "OperationalError",
    )
    dead_letter(
        rabbitmq_url,
        topology,
        event_payload("SAVE", instance_data(71, estoque=-1)),
        failures.PERMANENT,
        "InvalidData",
    )
    dead_letter(
        rabbitmq_url,
        topology,
        event_payload("SAVE", instance_data(72), cqrs_id="pedido"),
        failures.PERMANENT,
        "UnknownCqrsId",
    )
    return topology


def shown_ids(response) -> list[str]:
    return re.findall(r'<tr class="dead-letter" data-letter-id="([^"]+)"', response.text)


def depth_is(url, queue, expected):
    wait_until(lambda: queue_depth(url, queue) == expected, what=f"{expected} in {queue}")


def test_the_page_lists_every_letter_with_its_story_and_changes_nothing(
    admin_client, letters, rabbitmq_url
):
    response = admin_client.get(PAGE)
    assert response.status_code == 200
    text = response.text
    assert len(shown_ids(response)) == 3
    needed = (
        "erro do banco",  # OperationalError, in the operator's words
        "dados inválidos",  # InvalidData
        "CQRS_ID desconhecido",  # UnknownCqrsId
        '<td class="reason" title="retries-exhausted: falha transitória que não passou">'
        "tentativas esgotadas</td>",
        '<td class="reason" title="permanent: não pode ser aplicada como está">permanente</td>',
        "2026-01-01 00:00:07",
        "&quot;estoque&quot;: -1",  # the body pretty-printed, folded
        '<details class="json-body">',
        "pedido",
    )
    for part in needed:
        assert part in text, part
    assert "3 mensagem(ns) mostrada(s) de 3 na fila" in text
    depth_is(rabbitmq_url, letters.dead_letter_queue, 3)  # given back, all of them
    # Same letters, same identities, on every read.
    assert shown_ids(admin_client.get(PAGE)) == shown_ids(response)


def test_filters_by_reason_and_cqrs_id(admin_client, letters, rabbitmq_url):
    all_ids = shown_ids(admin_client.get(PAGE))
    depth_is(rabbitmq_url, letters.dead_letter_queue, 3)
    assert shown_ids(admin_client.get(PAGE, {"reason": "retries-exhausted"})) == all_ids[:1]
    depth_is(rabbitmq_url, letters.dead_letter_queue, 3)
    assert shown_ids(admin_client.get(PAGE, {"cqrs_id": "pedido"})) == all_ids[2:]
    depth_is(rabbitmq_url, letters.dead_letter_queue, 3)
    assert shown_ids(admin_client.get(PAGE, {"cqrs_id": "produto", "reason": "permanent"})) == [
        all_ids[1]
    ]


def test_retry_and_purge_act_only_on_the_selected_letters_after_a_confirmation(
    admin_client, letters, rabbitmq_url, consumers
):
    transient, invalid, other = shown_ids(admin_client.get(PAGE))
    depth_is(rabbitmq_url, letters.dead_letter_queue, 3)

    # Step one: the confirmation, which changes nothing yet.
    response = admin_client.post(PAGE, {"action": "retry", "_selected_letter": [transient]})
    assert response.status_code == 200
    assert "Tem certeza?" in response.text
    # Retrying destroys nothing: Django's non-destructive buttons, not the red delete one.
    assert "delete-confirmation" not in response.text
    assert 'class="default" value="Sim, reenviar"' in response.text
    assert shown_ids(response) == [transient]
    depth_is(rabbitmq_url, letters.dead_letter_queue, 3)

    consumers.start()  # the cause is gone: the replica can apply it now
    response = admin_client.post(
        PAGE, {"action": "retry", "_selected_letter": [transient], "confirm": "yes"}, follow=True
    )
    assert "1 mensagem(ns) reenviada(s)" in response.text
    wait_until(lambda: ProdutoMirror.objects.filter(pk=70, nome="Volta").exists())
    depth_is(rabbitmq_url, letters.dead_letter_queue, 2)
    assert shown_ids(response) == [invalid, other]

    response = admin_client.post(PAGE, {"action": "purge", "_selected_letter": [other]})
    assert "delete-confirmation" in response.text  # discarding deletes: the red button
    response = admin_client.post(
        PAGE, {"action": "purge", "_selected_letter": [other], "confirm": "yes"}, follow=True
    )
    assert "1 mensagem(ns) descartada(s)" in response.text
    depth_is(rabbitmq_url, letters.dead_letter_queue, 1)
    assert shown_ids(admin_client.get(PAGE)) == [invalid]
    assert not ProdutoMirror.objects.filter(pk__in=[71, 72]).exists()


def test_a_letter_already_gone_and_no_selection_are_said_plainly(admin_client, letters):
    response = admin_client.post(PAGE, {"action": "purge"}, follow=True)
    assert "Nenhuma mensagem selecionada" in response.text
    response = admin_client.post(
        PAGE, {"action": "purge", "_selected_letter": ["0" * 16], "confirm": "yes"}, follow=True
    )
    assert "0 mensagem(ns) descartada(s); 1 já não estava(m) na fila" in response.text
    assert len(shown_ids(response)) == 3


def test_identical_letters_are_told_apart(
    admin_client, rabbitmq_url, topology, event_payload, instance_data
):
    body = event_payload("SAVE", instance_data(80, estoque=-1))
    for _ in range(2):
        dead_letter(rabbitmq_url, topology, body, failures.PERMANENT, "InvalidData")
    first, second = shown_ids(admin_client.get(PAGE))
    assert second == f"{first}-2"
    depth_is(rabbitmq_url, topology.dead_letter_queue, 2)
    admin_client.post(PAGE, {"action": "purge", "_selected_letter": [second], "confirm": "yes"})
    depth_is(rabbitmq_url, topology.dead_letter_queue, 1)
    assert shown_ids(admin_client.get(PAGE)) == [first]


def test_staff_may_look_only_superusers_may_act_and_others_are_sent_to_log_in(
    client, letters, rabbitmq_url
):
    assert client.get(PAGE).status_code == 302  # anonymous: the admin's login page
    staff = User.objects.create_user("op", password="x", is_staff=True)
    client.force_login(staff)
    assert client.get(PAGE).status_code == 403  # staff, but may not view the dead letters
    staff.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    response = client.get(PAGE)
    assert response.status_code == 200
    ids = shown_ids(response)
    assert len(ids) == 3
    assert 'name="_selected_letter"' not in response.text
    assert "exigem um superusuário" in response.text
    depth_is(rabbitmq_url, letters.dead_letter_queue, 3)
    response = client.post(PAGE, {"action": "purge", "_selected_letter": ids, "confirm": "yes"})
    assert response.status_code == 403
    depth_is(rabbitmq_url, letters.dead_letter_queue, 3)


def test_a_broker_that_is_down_is_one_line_not_a_500(admin_client, settings, topology):
    settings.CQRS = {**settings.CQRS, "url": "amqp://admin:s3cret@127.0.0.1:1/"}
    response = admin_client.get(PAGE)
    assert response.status_code == 200
    errors = re.findall(r'<p class="errornote" id="broker-error">([^<]*)</p>', response.text)
    assert len(errors) == 1 and "RabbitMQ inacessível em amqp://admin:***@127.0.0.1:1/" in errors[0]
    assert errors[0].endswith(": conexão recusada (nada escuta nesse endereço?)")  # Portuguese
    assert "s3cret" not in response.text
    response = admin_client.post(
        PAGE, {"action": "retry", "_selected_letter": ["a" * 16]}
    )  # the confirmation step reads the broker too
    assert response.status_code == 200 and "RabbitMQ inacessível" in response.text
    response = admin_client.post(
        PAGE, {"action": "retry", "_selected_letter": ["a" * 16], "confirm": "yes"}, follow=True
    )
    assert response.status_code == 200 and "Nada foi feito: RabbitMQ inacessível" in response.text
    assert "s3cret" not in response.text


def test_mid_migration_the_page_says_so_and_declares_nothing(admin_client, rabbitmq_url, topology):
    """Viewing the page declared the replica's queues: mid-migration (the queue deleted, to be
    declared again with the other type) it re-created the queue with the old type."""
    with amqp_channel(rabbitmq_url) as channel:
        channel.queue_declare(topology.migration_marker("classic"), durable=True)
        channel.queue_delete(topology.queue)  # as step 5 of a migration leaves it, for a moment
    try:
        response = admin_client.get(PAGE)
        assert response.status_code == 200
        errors = re.findall(r'<p class="errornote" id="broker-error">([^<]*)</p>', response.text)
        assert len(errors) == 1 and errors[0].startswith("Migração das filas em andamento: ")
        assert "cqrs_queues migrate --to classic" in errors[0]
        with amqp_channel(rabbitmq_url) as channel, pytest.raises(ChannelClosedByBroker) as gone:
            channel.queue_declare(topology.queue, passive=True)
        assert gone.value.reply_code == 404  # not declared again
    finally:
        with amqp_channel(rabbitmq_url) as channel:
            channel.queue_delete(topology.migration_marker("classic"))


def test_the_replica_pages_are_read_only(admin_client, mirror):
    mirror(5)
    for model in ("feed/produtomirror", "cqrs_replica/tombstone", "cqrs_replica/replicastate"):
        assert admin_client.get(f"/admin/{model}/").status_code == 200, model
        assert admin_client.get(f"/admin/{model}/add/").status_code == 403, model
    assert admin_client.get("/admin/feed/produtomirror/5/change/").status_code == 200
    response = admin_client.post("/admin/feed/produtomirror/5/change/", {"nome": "x"})
    assert response.status_code == 403
    assert ProdutoMirror.objects.get(pk=5).nome == "Produto 5"
    replica_state = admin_client.get("/admin/cqrs_replica/replicastate/").text
    assert PAGE in replica_state  # the way to the dead letters


def test_the_dead_letters_are_in_the_index_and_the_sidebar_under_the_services_header(
    admin_client, client, topology
):
    index = admin_client.get("/admin/").text
    assert "Console — api_feed (réplica)" in index
    assert f'<a href="{PAGE}">Mensagens mortas</a>' in index
    page = admin_client.get(PAGE).text
    assert '<nav class="sticky" id="nav-sidebar"' in page
    assert f'<a href="{PAGE}" aria-current="page">Mensagens mortas</a>' in page  # the sidebar
    # The first address still leads there (a POST stays a POST).
    old = admin_client.get("/admin/cqrs_replica/replicastate/dead-letters/?reason=permanent")
    assert old.status_code == 307 and old["Location"] == f"{PAGE}?reason=permanent"
    # A staff user who may view the replica's state (the permission it needed before) too.
    staff = User.objects.create_user("op2", password="x", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_replicastate"))
    client.force_login(staff)
    assert f'<a href="{PAGE}">Mensagens mortas</a>' in client.get("/admin/").text
    assert client.get(PAGE).status_code == 200


def visible_text(html: str) -> str:
    """What a reader sees of a page (no tags, scripts, styles, nor the icons' sprites)."""
    html = re.sub(r"<(script|style|svg)\b.*?</\1>", " ", html, flags=re.DOTALL)
    return re.sub(r"<[^>]+>", " ", html)


def test_the_replica_pages_speak_portuguese(admin_client, mirror):
    mirror(5)
    english = re.compile(
        r"\b(Replica states?|Tombstones?|Dead letters?|Signal type|Cqrs id|Cqrs revision|"
        r"Cqrs updated|Instance pk|Applied at|Deleted at|Correlation id|Master updated at)\b",
        re.IGNORECASE,
    )
    for url in (
        "/admin/",
        "/admin/cqrs_replica/",
        "/admin/feed/produtomirror/",
        "/admin/feed/produtomirror/5/change/",
        "/admin/cqrs_replica/tombstone/",
        "/admin/cqrs_replica/replicastate/",
    ):
        text = visible_text(admin_client.get(url).text)
        assert not english.search(text), (url, english.search(text))
    change = admin_client.get("/admin/feed/produtomirror/5/change/").text
    for label in ("Descrição", "Preço", "SKU", "Revisão CQRS"):
        assert f">{label}:</label>" in change or f">{label}</label>" in change, label


def test_an_action_confirmed_while_another_admin_views_acts_on_what_was_seen(
    admin_client, letters, rabbitmq_url
):
    """A viewer held every letter unacknowledged while it read: a purge confirmed meanwhile
    found nothing and said the letter was already gone. Viewing now moves letters (it holds
    none) under the readers' lock: the purge waits for the view and finds the letter."""
    import threading

    from django_tools.replica import dead_letters

    transient, invalid, other = shown_ids(admin_client.get(PAGE))
    stop, views, errors = threading.Event(), [], []

    def another_admin() -> None:
        while not stop.is_set():
            try:
                views.append(len(dead_letters.browse(letters).letters))
            except Exception as exc:
                errors.append(exc)

    viewer = threading.Thread(target=another_admin)
    viewer.start()
    try:
        wait_until(lambda: views, what="the other admin viewing")
        response = admin_client.post(
            PAGE, {"action": "purge", "_selected_letter": [other], "confirm": "yes"}, follow=True
        )
    finally:
        stop.set()
        viewer.join(timeout=30)
    assert "1 mensagem(ns) descartada(s)." in response.text
    assert "já não estava" not in response.text
    assert shown_ids(response) == [transient, invalid]
    assert not errors and set(views) <= {2, 3}
    depth_is(rabbitmq_url, letters.dead_letter_queue, 2)


def test_queues_of_another_type_than_configured_are_said_not_a_500(admin_client, letters, settings):
    """After (or during) a queue migration the queues' type differs from CQRS_QUEUE_TYPE:
    declaring them raised QueueTypeMismatch and the page answered 500."""
    from django_tools.replica.topology import CLASSIC

    settings.CQRS = {
        **settings.CQRS,
        "replica": {**settings.CQRS["replica"], "queue_type": CLASSIC},  # they are quorum
    }
    response = admin_client.get(PAGE)
    assert response.status_code == 200
    assert len(shown_ids(response)) == 3  # read all the same
    assert f"A fila {letters.queue} existe com outro tipo" in response.text
    assert "cqrs_queues migrate --to classic" in response.text


def test_a_dead_letter_queue_missing_mid_migration_is_said(admin_client, letters, rabbitmq_url):
    """Mid-migration the dead-letter queue is gone and its letters wait in `.migrating`: the
    page says so (and creates nothing)."""
    holding = letters.dead_letter_queue + ".migrating"
    with amqp_channel(rabbitmq_url) as channel:
        channel.queue_declare(holding, durable=True)
        channel.queue_delete(letters.dead_letter_queue)
        channel.basic_publish("", holding, b"{}")
    try:
        response = admin_client.get(PAGE)
        assert response.status_code == 200
        assert f"A fila {letters.dead_letter_queue} não existe agora" in response.text
        assert f"{holding} guarda 1 mensagem(ns)" in response.text
        with amqp_channel(rabbitmq_url) as channel, pytest.raises(pika.exceptions.ChannelClosed):
            channel.queue_declare(letters.dead_letter_queue, passive=True)  # not created
    finally:
        with amqp_channel(rabbitmq_url) as channel:
            channel.queue_delete(holding)


def test_a_retry_that_fails_halfway_says_how_many_moved(admin_client, letters, rabbitmq_url):
    """The replica's queue takes one message and refuses the next (a length limit): one letter
    was sent back and the page said "Nada confirmado". Now it says what moved, what stayed."""
    with amqp_channel(rabbitmq_url) as channel:
        channel.queue_delete(letters.queue)
        channel.queue_declare(
            letters.queue,
            durable=True,
            arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
        )
    ids = shown_ids(admin_client.get(PAGE))
    response = admin_client.post(
        PAGE, {"action": "retry", "_selected_letter": ids, "confirm": "yes"}, follow=True
    )
    assert "1 mensagem(ns) reenviada(s) para a fila da réplica" in response.text
    assert f"depois parou: a fila {letters.queue} recusou a mensagem" in response.text
    assert "As outras 2 selecionada(s) continuam na fila de mensagens mortas" in response.text
    assert "Nada confirmado" not in response.text and "Nada foi feito" not in response.text
    assert shown_ids(response) == ids[1:]  # in their order, nothing lost
    assert queue_depth(rabbitmq_url, letters.queue) == 1
