"""`manage.py cqrs_dead_letters dump|retry|purge` on the real broker."""

import io
from unittest import mock

import orjson
import pika
import pytest
from dj_replica.models import BookReplica
from django.core.management import CommandError, call_command
from django.db import OperationalError

from django_tools.replica import consumer as consumer_module
from django_tools.testing import queue_depth, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def command(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("cqrs_dead_letters", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def letters_back(url: str, topology, count: int) -> None:
    """The letters a command read and left go back to the queue when its connection closes: a
    moment later, on the broker's time (a quorum queue requeues through its log). Exactly
    `count` must be there before the next command reads the queue."""
    wait_until(
        lambda: queue_depth(url, topology.dead_letter_queue) == count,
        what=f"{count} dead letters in {topology.dead_letter_queue}",
    )


@pytest.fixture
def three_dead_letters(consumers, publish, event_payload, instance_data, rabbitmq_url, topology):
    """Two poison messages of book and one of another CQRS_ID, in the dead-letter queue."""
    publish(b"not json at all")
    publish(event_payload("SAVE", instance_data(40, copies=-5)))
    publish(event_payload("SAVE", instance_data(41), cqrs_id="order"))
    consumers.start()
    wait_until(lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) == 3)
    return topology


def test_dump_prints_one_json_object_per_dead_letter_and_changes_nothing(
    three_dead_letters, rabbitmq_url
):
    out, err = command("dump", "--detail")
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert len(lines) == 3
    assert [line["error_class"].rsplit(".", 1)[1] for line in lines] == [
        "InvalidMessage",
        "InvalidData",
        "UnknownCqrsId",
    ]
    assert lines[0]["payload"] == "not json at all"
    assert lines[1]["payload"]["instance_data"]["copies"] == -5
    assert all(
        line["dead_reason"] == "permanent" and line["routing_key"] == "book" for line in lines
    )
    assert all(line["retries"] == 0 and line["first_failure"] for line in lines)
    assert "3 of 3" in err
    letters_back(rabbitmq_url, three_dead_letters, 3)
    out_again, _ = command("dump", "--detail")
    assert out_again == out  # same letters, same order


def test_dump_prints_the_stock_shape_by_default_each_body_as_it_is(
    three_dead_letters, rabbitmq_url
):
    """django-cqrs's own `dump` prints each body on a line and nothing else: a script written
    for it reads this command's default output unchanged."""
    out, _ = command("dump")
    lines = out.splitlines()
    assert lines[0] == "not json at all"
    bodies = [orjson.loads(line) for line in lines[1:]]
    assert [body["cqrs_id"] for body in bodies] == ["book", "order"]
    assert bodies[0]["instance_data"]["copies"] == -5
    assert "dead_reason" not in bodies[0]  # the reasons are `--detail`'s
    letters_back(rabbitmq_url, three_dead_letters, 3)
    out, _ = command("dump", "--cqrs-id", "order")
    assert [orjson.loads(line)["cqrs_id"] for line in out.splitlines()] == ["order"]


def test_dump_filters(three_dead_letters, rabbitmq_url):
    out, _ = command("dump", "--detail", "--cqrs-id", "order")
    assert [orjson.loads(line)["payload"]["cqrs_id"] for line in out.splitlines()] == ["order"]
    letters_back(rabbitmq_url, three_dead_letters, 3)
    # A body that is not JSON has no CQRS_ID.
    out, _ = command("dump", "--detail", "--cqrs-id", "book")
    assert [orjson.loads(line)["payload"]["instance_pk"] for line in out.splitlines()] == [40]
    letters_back(rabbitmq_url, three_dead_letters, 3)
    out, _ = command("dump", "--detail", "--limit", "2")
    assert len(out.splitlines()) == 2


def test_retry_sends_them_back_and_bad_ones_dead_letter_again(
    three_dead_letters, rabbitmq_url, consumers
):
    before = consumers.stats("dead_lettered")
    out, _ = command("retry")
    assert "sent 3 of 3" in out
    wait_until(
        lambda: consumers.stats("dead_lettered") == before + 3, what="a second dead-lettering"
    )
    wait_until(lambda: queue_depth(rabbitmq_url, three_dead_letters.dead_letter_queue) == 3)
    dumped = [orjson.loads(line) for line in command("dump", "--detail")[0].splitlines()]
    assert sorted(d["retries"] for d in dumped) == [0, 0, 0]  # reset, then failed again at once


def test_retry_of_a_transient_failure_applies_it_once_fixed(
    consumers, publish, event_payload, instance_data, rabbitmq_url, topology
):
    def down(changes):
        raise OperationalError("replica database is down")

    with mock.patch.object(consumer_module, "apply_changes", down):
        consumers.start()
        publish(event_payload("SAVE", instance_data(42, title="finally")))
        wait_until(lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) == 1, timeout=15)
    assert not BookReplica.objects.filter(pk=42).exists()

    out, _ = command("retry")  # the database is back
    assert "sent 1 of 1" in out
    wait_until(lambda: BookReplica.objects.filter(pk=42, title="finally").exists())
    assert queue_depth(rabbitmq_url, topology.dead_letter_queue) == 0


def test_purge_empties_or_removes_only_what_matches(three_dead_letters, rabbitmq_url):
    out, _ = command("purge", "--cqrs-id", "order")
    assert "purged 1 of 3" in out
    letters_back(rabbitmq_url, three_dead_letters, 2)
    out, _ = command("purge")
    assert "purged 2" in out
    assert queue_depth(rabbitmq_url, three_dead_letters.dead_letter_queue) == 0


def test_bad_arguments_and_an_unreachable_broker_are_clear_errors(settings, topology):
    with pytest.raises(CommandError, match="--limit"):
        command("dump", "--detail", "--limit", "0")
    settings.CQRS = {**settings.CQRS, "url": "amqp://admin:admin@127.0.0.1:1/"}
    with pytest.raises(CommandError, match="not reachable"):
        command("dump", "--detail")


def test_a_dead_letter_with_headers_that_are_not_utf8_never_hides_the_others(
    rabbitmq_url, topology, consumers, event_payload, instance_data
):
    """One letter with a non-UTF-8 header value (bytes another client put there) made every
    letter behind it unreadable: `dump`, `retry` and a filtered `purge` all decoded strictly."""
    from django_tools.connectivity import amqp_channel

    odd_headers = {
        "x-cqrs-error": b"\xff\xfe not utf-8",
        "x-cqrs-dead-reason": b"\xc3\x28",
        "x-cqrs-original-routing-key": b"book\xff",
        "x-cqrs-retries": b"\xff",
        "x-cqrs-first-failure": {"a": "table"},
    }
    with amqp_channel(rabbitmq_url) as channel:
        channel.confirm_delivery()
        channel.basic_publish(
            "",
            topology.dead_letter_queue,
            orjson.dumps(event_payload("SAVE", instance_data(61, title="behind the odd one"))),
            pika.BasicProperties(delivery_mode=2, headers=odd_headers),
        )
        channel.basic_publish(
            "",
            topology.dead_letter_queue,
            orjson.dumps(event_payload("SAVE", instance_data(62), cqrs_id="order")),
            pika.BasicProperties(delivery_mode=2),
        )

    lines = [orjson.loads(line) for line in command("dump", "--detail")[0].splitlines()]
    assert len(lines) == 2
    letters_back(rabbitmq_url, topology, 2)
    assert lines[0]["error"] == "\\xff\\xfe not utf-8"
    assert lines[0]["retries"] == 0 and lines[0]["first_failure"] == "{'a': 'table'}"

    assert "purged 1 of 2" in command("purge", "--cqrs-id", "order")[0]
    letters_back(rabbitmq_url, topology, 1)
    consumers.start()
    assert "sent 1 of 1" in command("retry", "--cqrs-id", "book")[0]
    wait_until(lambda: BookReplica.objects.filter(pk=61, title="behind the odd one").exists())
    assert queue_depth(rabbitmq_url, topology.dead_letter_queue) == 0


def test_dump_shows_each_letters_identity_and_the_filters_take_it(three_dead_letters, rabbitmq_url):
    """The identity of `dump` (and of the admin's dead-letter page) chooses letters for `retry`
    and `purge`; `--reason` chooses by why they died."""
    ids = [orjson.loads(line)["id"] for line in command("dump", "--detail")[0].splitlines()]
    assert len(set(ids)) == 3
    letters_back(rabbitmq_url, three_dead_letters, 3)
    assert "purged 1 of 3" in command("purge", "--id", ids[1])[0]
    letters_back(rabbitmq_url, three_dead_letters, 2)
    remaining = {orjson.loads(line)["id"] for line in command("dump", "--detail")[0].splitlines()}
    assert remaining == {ids[0], ids[2]}
    letters_back(rabbitmq_url, three_dead_letters, 2)
    assert command("dump", "--detail", "--reason", "retries-exhausted")[0] == ""
    letters_back(rabbitmq_url, three_dead_letters, 2)
    assert len(command("dump", "--detail", "--reason", "permanent")[0].splitlines()) == 2


def test_a_letters_identity_is_its_content_not_the_brokers_counters():
    from django_tools.replica.dead_letters import letter_id

    headers = {"b": 1, "a": {"y": b"\xff", "x": [1, 2]}}
    read_once = pika.BasicProperties(message_id="7", headers=headers)
    # Given back and read again from a quorum queue: a delivery count, tables in another order.
    read_again = pika.BasicProperties(
        message_id="7", headers={"x-delivery-count": 2, "a": {"x": [1, 2], "y": b"\xff"}, "b": 1}
    )
    assert letter_id(read_once, b"body") == letter_id(read_again, b"body")
    assert letter_id(read_once, b"body") != letter_id(read_once, b"other body")
    assert letter_id(read_once, b"body") != letter_id(
        pika.BasicProperties(message_id="8", headers=headers), b"body"
    )
    assert letter_id(read_once, b"body") != letter_id(
        pika.BasicProperties(message_id="7", headers={**headers, "b": "1"}), b"body"
    )
    assert len(letter_id(None, b"")) == 16


def test_a_letter_retried_that_dies_again_keeps_its_identity_and_first_failure(
    three_dead_letters, rabbitmq_url, consumers
):
    """A letter retried (from the admin's page or the command) that failed again came back
    with a new identity and its first failure reset: an id copied earlier no longer matched,
    and its history was lost. It is the same letter now, however many times it is retried."""
    from django_tools.replica import dead_letters

    def dump() -> dict[str, dict]:
        lines = [orjson.loads(line) for line in command("dump", "--detail")[0].splitlines()]
        letters_back(rabbitmq_url, three_dead_letters, 3)
        return {line["id"]: line for line in lines}

    before = dump()
    poison = next(i for i, d in before.items() if d["error_class"].endswith("InvalidData"))
    dead = consumers.stats("dead_lettered")
    for n, retry in enumerate(
        (
            lambda: dead_letters.act_on(three_dead_letters, dead_letters.RETRY, [poison]),
            lambda: command("retry", "--id", poison),  # the command, then the page again
            lambda: dead_letters.act_on(three_dead_letters, dead_letters.RETRY, [poison]),
        ),
        start=1,
    ):
        retry()
        wait_until(lambda n=n: consumers.stats("dead_lettered") == dead + n, what="dead again")
        letters_back(rabbitmq_url, three_dead_letters, 3)
        after = dump()
        assert set(after) == set(before)  # every identity as it was
        assert after[poison]["first_failure"] == before[poison]["first_failure"]
        assert after[poison]["last_failure"] > before[poison]["last_failure"]
        assert after[poison]["retries"] == 0 and after[poison]["dead_reason"] == "permanent"
        others = set(before) - {poison}
        assert {i: after[i] for i in others} == {i: before[i] for i in others}
