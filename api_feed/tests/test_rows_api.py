"""GET /api/replication/rows: the replica's rows for the master's reconciliation."""

import pytest

from django_tools.checksum import row_checksum
from django_tools.replica.rows import compared_fields
from feed.models import ProdutoMirror

pytestmark = pytest.mark.django_db


def test_rows_come_in_key_order_a_page_at_a_time_with_checksums(client, mirror):
    for pk in (5, 1, 3):
        mirror(pk, revision=pk)
    fields = compared_fields(ProdutoMirror)
    assert "cqrs_updated" not in fields and "id" not in fields and "cqrs_revision" in fields
    page = client.get("/api/replication/rows", {"limit": 2}).json()
    assert page["fields"] == fields
    assert [row[:2] for row in page["rows"]] == [[1, 1], [3, 3]]
    expected = row_checksum(ProdutoMirror.objects.filter(pk=1).values(*fields).get(), fields)
    assert page["rows"][0][2] == expected
    rest = client.get("/api/replication/rows", {"limit": 2, "after": 3}).json()
    assert [row[0] for row in rest["rows"]] == [5]


def test_a_corrupted_row_changes_its_checksum(client, mirror):
    mirror(1)
    before = client.get("/api/replication/rows").json()["rows"][0][2]
    ProdutoMirror.objects.filter(pk=1).update(nome="tampered")
    assert client.get("/api/replication/rows").json()["rows"][0][2] != before


@pytest.mark.parametrize("params", [{"cqrs_id": "pedido"}, {"limit": 0}, {"after": -1}])
def test_bad_queries(client, params):
    assert client.get("/api/replication/rows", params).status_code in (404, 422)


def test_tombstones_are_told_for_the_keys_asked(client):
    from django.utils import timezone

    from django_tools.replica.models import Tombstone

    for pk, revision in ((1, 3), (2, 7)):
        Tombstone.objects.create(
            cqrs_id="produto",
            instance_pk=str(pk),
            cqrs_revision=revision,
            deleted_at=timezone.now(),
        )
    page = client.get("/api/replication/tombstones", {"pk": ["2", "5"]}).json()
    assert page == {"cqrs_id": "produto", "tombstones": [["2", 7]]}
    assert client.get("/api/replication/tombstones").status_code == 422
    assert client.get("/api/replication/tombstones", {"pk": 1, "cqrs_id": "x"}).status_code == 404
