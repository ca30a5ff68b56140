"""End-to-end fixtures: a running lab (see e2e_lab), driven over HTTP and AMQP. The broker
and Redis fixtures (`rabbitmq_url`, `redis_url`: fail, with how to start them, when missing)
come from django_tools.testing."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from e2e_lab import (
    API_KEY,
    Databases,
    Lab,
    delete_broker_objects,
    start_lab,
)


@pytest.fixture(scope="module", params=["cqrs", "celery"])
def lab(request, tmp_path_factory, rabbitmq_url, redis_url) -> Iterator[Lab]:
    """The whole lab, shared by the tests of a module; once per REPLICATION_MODE, since both
    modes must behave the same over HTTP."""
    databases = Databases(tmp_path_factory.mktemp("lab"))
    running = start_lab(
        databases.tmp, rabbitmq_url, databases, "--consumers", "2", REPLICATION_MODE=request.param
    )
    yield running
    running.stop()
    delete_broker_objects(rabbitmq_url, running.exchange, running.broker_queues())
    databases.drop_all()


@pytest.fixture
def produtos(lab) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=lab.produtos_url, headers={"X-API-Key": API_KEY}, timeout=10) as c:
        yield c


@pytest.fixture
def feed(lab) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=lab.feed_url, timeout=10) as client:
        yield client
