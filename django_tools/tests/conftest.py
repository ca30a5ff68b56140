"""Fixtures of django_tools' own tests, on the throwaway models of `dj_master` and `dj_replica`
(the broker fixtures — `topology`, `consumers`, `publish`, `event_payload` — are
django_tools.testing's)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from django_tools.chassis.celery import make_celery

# The Celery app of this test process (a service has its own, loaded with Django), so that
# `current_app` and the shared tasks talk to the test broker with the test settings.
celery_app = make_celery("tools-tests", "django_tools_test_settings")

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def master_data(pk: int, revision: int = 0, **overrides: Any) -> dict[str, Any]:
    """`instance_data` of a Book as dj_master (or any stock django-cqrs master of it) sends it."""
    data = {
        "id": pk,
        "isbn": f"ISBN-{pk}",
        "title": f"Book {pk}",
        "summary": "",
        "price": "10.00",
        "copies": 1,
        "in_print": True,
        "created_at": str(T0),
        "updated_at": str(T0 + timedelta(minutes=revision)),
        "cqrs_revision": revision,
        "cqrs_updated": str(T0 + timedelta(minutes=revision)),
    }
    data.update(overrides)
    return data


@pytest.fixture
def instance_data():
    return master_data


@pytest.fixture
def replica_row():
    """Factory of replica rows, written directly (as the consumer would leave them)."""
    from dj_replica.models import BookReplica

    def make(pk: int, revision: int = 0, **overrides: Any) -> BookReplica:
        data = master_data(pk, revision, **overrides)
        data["price"] = Decimal(str(data["price"]))
        data["created_at"] = T0
        data["updated_at"] = overrides.get("updated_at", T0 + timedelta(minutes=pk))
        data["cqrs_updated"] = data["updated_at"]
        return BookReplica.objects.create(**data)

    return make
