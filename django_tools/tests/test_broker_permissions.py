"""A permission the broker refuses is said in one line naming the user, the resource and what
each permission is for (the end-to-end check with a real least-privilege user is in
tests/test_broker_permissions.py)."""

import logging
import threading

import pytest
from pika.exceptions import ChannelClosedByBroker

from django_tools.broker_permissions import describe, explain
from django_tools.reconnect import keep_running

# No database in it (the broker's refusals explained): CI runs it on SQLite only.
pytestmark = pytest.mark.any_database

REFUSED = ChannelClosedByBroker(
    403, "ACCESS_REFUSED - access to exchange 'cqrs' in vhost '/' refused for user 'feed'"
)


def test_an_access_refused_is_one_line_with_the_user_and_the_resource():
    line = explain(REFUSED)
    assert line.startswith("RabbitMQ user 'feed' lacks a permission on exchange 'cqrs'")
    assert "write to publish to it" in line and "CQRS.md#permissões-no-broker" in line
    assert "\n" not in line
    queue = "ACCESS_REFUSED - read access to queue 'api_feed' in vhost '/' refused for user 'x'"
    assert "lacks read permission on queue 'api_feed'" in explain(queue)
    assert explain(ChannelClosedByBroker(404, "NOT_FOUND - no queue 'q'")) is None
    assert describe(ValueError("other")) == "ValueError('other')"


def test_a_broker_session_refused_a_permission_logs_that_line(caplog):
    stop = threading.Event()
    calls = []

    def session(connected):
        calls.append(1)
        if len(calls) == 2:
            stop.set()
        raise REFUSED

    with caplog.at_level(logging.WARNING, logger="test.reconnect"):
        keep_running(session, stop=stop, retry_on=(ChannelClosedByBroker,),
                     logger=logging.getLogger("test.reconnect"), what="AMQP connection",
                     initial=0.01, maximum=0.01, jitter=0)  # fmt: skip
    assert any("RabbitMQ user 'feed' lacks a permission" in r.getMessage() for r in caplog.records)
