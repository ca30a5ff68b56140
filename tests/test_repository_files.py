"""The files a user starts from say what the contract says."""

import pytest
import yaml
from dotenv import dotenv_values
from e2e_lab import REPO_ROOT

pytestmark = pytest.mark.any_database


def test_compose_brings_rabbitmq_with_management_and_redis_with_healthchecks():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
    rabbit, redis = compose["services"]["rabbitmq"], compose["services"]["redis"]
    assert "management" in rabbit["image"]
    # On this machine only; admin/admin unless .env says otherwise (the contract's defaults).
    assert {"127.0.0.1:5672:5672", "127.0.0.1:15672:15672"} <= set(rabbit["ports"])
    assert rabbit["environment"] == {
        "RABBITMQ_DEFAULT_USER": "${RABBITMQ_USER:-admin}",
        "RABBITMQ_DEFAULT_PASS": "${RABBITMQ_PASSWORD:-admin}",
    }
    assert redis["image"].startswith("redis:7")
    assert "127.0.0.1:6379:6379" in redis["ports"]
    assert rabbit["healthcheck"]["test"] and redis["healthcheck"]["test"]


def test_env_examples_match_the_defaults():
    produtos = dotenv_values(REPO_ROOT / ".env.produtos.example")
    feed = dotenv_values(REPO_ROOT / ".env.feed.example")
    for values in (produtos, feed):
        assert values["RABBITMQ_URL"] == "amqp://admin:admin@localhost:5672/"
        assert values["REDIS_URL"] == "redis://localhost:6379/0"
    assert produtos["PRODUTOS_API_KEY"]
