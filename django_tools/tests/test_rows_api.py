"""GET /api/replication/rows and /tombstones: the replica's rows for the master's
reconciliation."""

import pytest
from dj_replica.models import BookReplica

from django_tools.checksum import row_checksum
from django_tools.replica.rows import compared_fields

pytestmark = pytest.mark.django_db


def test_rows_come_in_key_order_a_page_at_a_time_with_checksums(client, replica_row):
    for pk in (5, 1, 3):
        replica_row(pk, revision=pk)
    fields = compared_fields(BookReplica)
    assert "cqrs_updated" not in fields and "id" not in fields and "cqrs_revision" in fields
    page = client.get("/api/replication/rows", {"cqrs_id": "book", "limit": 2}).json()
    assert (page["cqrs_id"], page["fields"]) == ("book", fields)
    assert [row[:2] for row in page["rows"]] == [[1, 1], [3, 3]]
    expected = row_checksum(BookReplica.objects.filter(pk=1).values(*fields).get(), fields)
    assert page["rows"][0][2] == expected
    rest = client.get("/api/replication/rows", {"cqrs_id": "book", "limit": 2, "after": 3}).json()
    assert [row[0] for row in rest["rows"]] == [5]


def test_a_corrupted_row_changes_its_checksum(client, replica_row):
    replica_row(1)
    before = client.get("/api/replication/rows", {"cqrs_id": "book"}).json()["rows"][0][2]
    BookReplica.objects.filter(pk=1).update(title="tampered")
    assert client.get("/api/replication/rows", {"cqrs_id": "book"}).json()["rows"][0][2] != before


@pytest.mark.parametrize(
    "params,status",
    [
        ({"cqrs_id": "order"}, 404),
        ({}, 422),  # the CQRS_ID is always named: no service's default
        ({"cqrs_id": "book", "limit": 0}, 422),
        ({"cqrs_id": "book", "after": -1}, 422),
    ],
)
def test_bad_queries(client, params, status):
    assert client.get("/api/replication/rows", params).status_code == status


def test_tombstones_are_told_for_the_keys_asked(client):
    from django.utils import timezone

    from django_tools.replica.models import Tombstone

    for pk, revision in ((1, 3), (2, 7)):
        Tombstone.objects.create(
            cqrs_id="book",
            instance_pk=str(pk),
            cqrs_revision=revision,
            deleted_at=timezone.now(),
        )
    page = client.get("/api/replication/tombstones", {"cqrs_id": "book", "pk": ["2", "5"]}).json()
    assert page == {"cqrs_id": "book", "tombstones": [["2", 7]]}
    assert client.get("/api/replication/tombstones", {"cqrs_id": "book"}).status_code == 422
    assert client.get("/api/replication/tombstones", {"pk": 2}).status_code == 422
    assert client.get("/api/replication/tombstones", {"pk": 1, "cqrs_id": "x"}).status_code == 404


def test_more_keys_than_django_parses_is_a_documented_400(client, settings):
    """Django refuses a query of more than DATA_UPLOAD_MAX_NUMBER_FIELDS fields before the view
    runs: the answer is a 400, and the schema says so (fuzzing found it undocumented)."""
    pks = [str(n) for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)]
    response = client.get("/api/replication/tombstones", {"cqrs_id": "book", "pk": pks})
    assert response.status_code == 400
    schema = client.get("/api/openapi.json").json()
    documented = schema["paths"]["/api/replication/tombstones"]["get"]["responses"]
    assert set(documented) == {"200", "400", "404", "422"}
