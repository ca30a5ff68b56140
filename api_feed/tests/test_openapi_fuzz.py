"""schemathesis against the feed's own OpenAPI schema: no 5xx, no response that breaks it."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from api_feed.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/openapi.json", application)


@pytest.fixture
def catalogue(mirror):
    for pk in range(1, 6):
        mirror(pk, nome=f"Produto {pk}", preco=f"{pk * 3}.50", ativo=pk % 2 == 0)


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_breaks_the_feed(case, catalogue, direct_wsgi_calls):
    case.call_and_validate()
