"""A PostgreSQL outage (nothing answers on the database's port) answers 503 JSON with
Retry-After on the feed's reads, never 500 (what Redis has cached is still served)."""

import pytest

from django_tools.testing import database_unreachable

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/feed/", "/api/feed/?q=cafe&ordering=preco", "/api/feed/1"])
def test_reads_answer_503_while_the_database_is_down(client, mirror, path):
    mirror(1)
    with database_unreachable():
        response = client.get(path)
    assert response.status_code == 503, response.content
    assert response.json() == {"detail": "Database unavailable; try again shortly."}
    assert response["Retry-After"] == "5"
    assert client.get(path).status_code == 200  # the database is back
