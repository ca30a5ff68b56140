"""Least privilege on the broker, on a RabbitMQ node of the test's own (never the machine's):
the users and permissions of docker-compose.yaml's definitions, imported as the broker would at
start; each service with its own user. The pipeline replicates, Celery works, the operator's
commands work (a dead letter replayed keeps its signature, a queue migration), nothing is
refused; the feed's user cannot publish an event to `cqrs`; a missing permission is one clear
line; and with CQRS_SIGNING_KEY an event from anyone but the relay is dead-lettered."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pika
import pytest
from compose_file import compose, interpolate
from e2e_lab import Databases, produto_data, stock_payload, wait_until
from pika.exceptions import ChannelClosedByBroker

from apis_lab.catalogue import FEED, PRODUTOS
from apis_lab.rabbit_nodes import RabbitNode
from apis_lab.redis_server import RedisServer
from apis_lab.supervised_ecosystem import API_KEY, Ecosystem

pytestmark = [pytest.mark.e2e, pytest.mark.any_database]

PASSWORDS = {
    "RABBITMQ_USER": "admin",
    "RABBITMQ_PASSWORD": "admin-pw-4a1e",
    "PRODUTOS_RABBITMQ_PASSWORD": "produtos-pw-77f2",
    "FEED_RABBITMQ_PASSWORD": "feed-pw-91c3",
}
SIGNING_KEY = "signing-key-for-the-test-0123456789"


class Node:
    def __init__(self, rabbit: RabbitNode) -> None:
        self.rabbit = rabbit

    def url(self, user: str) -> str:
        password = {"produtos": "PRODUTOS_", "feed": "FEED_"}.get(user, "") + "RABBITMQ_PASSWORD"
        return f"amqp://{user}:{PASSWORDS[password]}@127.0.0.1:{self.rabbit.port}/"

    def refusals(self) -> list[str]:
        text = self.rabbit.log_file.read_text() if self.rabbit.log_file.exists() else ""
        return [line for line in text.splitlines() if "access_refused" in line]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A private node with compose's definitions loaded (passwords as a .env would give)."""
    rabbit = RabbitNode().start()
    try:
        definitions = interpolate(
            compose()["configs"]["rabbitmq-definitions"]["content"], PASSWORDS
        )
        path = tmp_path_factory.mktemp("definitions") / "definitions.json"
        path.write_text(json.dumps(json.loads(definitions)))
        rabbit.ctl("import_definitions", str(path))
        wait_until(
            lambda: "feed" in rabbit.ctl("list_users").stdout, what="the definitions imported"
        )
        yield Node(rabbit)
    finally:
        rabbit.stop()


class LeastPrivilegeEcosystem(Ecosystem):
    """The lab's ecosystem with the feed's user for the feed (given as the broker URL: its
    `cqrs_declare` runs first, as that user) and the master's for the master."""

    produtos_rabbitmq_url: str = ""

    def prepare(self) -> None:
        super().prepare()
        self.envs[PRODUTOS.name]["RABBITMQ_URL"] = self.produtos_rabbitmq_url


def test_each_service_works_with_its_own_user_and_nothing_else(node, tmp_path):
    redis = RedisServer().start()
    databases = Databases(tmp_path)
    eco = LeastPrivilegeEcosystem(
        tmp_path, node.url("feed"), redis.url, databases,
        exchange="cqrs", queue="api_feed",  # the names the definitions grant
        extra_env={
            "CELERY_QUEUE_PREFIX": "",
            "RECONCILE_INTERVAL": "2",  # Celery beat and workers at work during the test
            "DEAD_LETTER_REPORT_EVERY": "2",
            "CQRS_SIGNING_KEY": SIGNING_KEY,
        },
    )  # fmt: skip
    eco.produtos_rabbitmq_url = node.url("produtos")
    try:
        eco.start()
        with httpx.Client(base_url=eco.produtos_url, headers={"X-API-Key": API_KEY}) as api:
            created = []
            for number in range(3):
                body = {"sku": f"LP-{number}", "nome": "n", "preco": "1.00"}
                response = api.post("/api/produtos/", json=body)
                assert response.status_code == 201
                created.append(response.json()["id"])
        wait_until(
            lambda: httpx.get(f"{eco.feed_url}/api/feed/").json()["count"] == 3,
            30, what="the three products replicated",
        )  # fmt: skip

        # An event from outside the relay (here the admin, who may publish): never applied.
        with pika.BlockingConnection(pika.URLParameters(node.url("admin"))) as connection:
            channel = connection.channel()
            channel.confirm_delivery()
            forged = {"signal_type": "SAVE", "cqrs_id": "produto", "instance_pk": 99,
                      "instance_data": {"id": 99, "cqrs_revision": 10**9}}  # fmt: skip
            channel.basic_publish("cqrs", "produto", json.dumps(forged).encode())
        wait_until(lambda: eco.queue_state("dead_letter_api_feed") == (1, 0), 30)
        dump = eco.manage(FEED.name, "cqrs_dead_letters", "dump", "--detail")  # feed user
        assert dump.returncode == 0, dump.stderr
        assert json.loads(dump.stdout.splitlines()[0])["dead_reason"] == "unauthenticated"
        assert httpx.get(f"{eco.feed_url}/api/feed/99").status_code == 404

        # A letter of the master's (signed) replayed by the operator with the feed's user: the
        # copy keeps its signature and is applied; the forged one stays where it is. Of a product
        # the master has, at a later revision: one it does not have, the reconciliation running
        # every 2 s would remove again (maybe before a poll sees it).
        replayed = created[0]
        signed = stock_payload("SAVE", produto_data(replayed, 5, sku="LP-0", nome="replayed"))
        body = json.dumps(signed).encode()
        with pika.BlockingConnection(pika.URLParameters(node.url("admin"))) as connection:
            channel = connection.channel()
            channel.confirm_delivery()
            headers = {**signing_headers(body), "x-cqrs-dead-reason": "retries-exhausted"}
            channel.basic_publish(
                "",
                "dead_letter_api_feed",
                body,
                pika.BasicProperties(headers=headers, delivery_mode=2),
            )
        wait_until(lambda: eco.queue_state("dead_letter_api_feed") == (2, 0), 30)
        retry = eco.manage(FEED.name, "cqrs_dead_letters", "retry", "--reason", "retries-exhausted")
        assert retry.returncode == 0, retry.stderr
        wait_until(
            lambda: httpx.get(f"{eco.feed_url}/api/feed/{replayed}").json()["nome"] == "replayed",
            60, what="the replayed letter applied",
        )  # fmt: skip
        assert eco.queue_state("dead_letter_api_feed") == (1, 0)

        # The compose health check of a Celery worker, with the service's own user.
        ping = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "api_produtos", "inspect", "ping",
             "-d", f"produtos@{_hostname()}", "--timeout", "10"],
            cwd=PRODUTOS.directory, env=eco.envs[PRODUTOS.name], capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert ping.returncode == 0, ping.stdout + ping.stderr
        wait_until(
            lambda: "reconciliation produto" in eco.processes["produtos-worker"].tail(40),
            30, what="a reconciliation run by the master's Celery",
        )  # fmt: skip
        dead = [name for name, process in eco.processes.items() if not process.alive()]
        assert not dead, dead
        assert node.refusals() == [], node.refusals()
    finally:
        eco.stop()
        redis.stop(delete=True)
        databases.drop_all()


def signing_headers(body: bytes) -> dict:
    import hashlib
    import hmac

    digest = hmac.new(SIGNING_KEY.encode(), body, hashlib.sha256).hexdigest()
    return {"x-cqrs-signature": f"sha256={digest}"}


def _hostname() -> str:
    import socket

    return socket.gethostname()


def feed_env(tmp_path, url: str, **extra: str) -> dict[str, str]:
    """The feed's manage.py environment for a command run by an operator, no env file."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return {
        **FEED.env(),
        "FEED_ENV_FILE": str(empty),
        "RABBITMQ_URL": url,
        "CQRS_EXCHANGE": "cqrs",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'feed.sqlite3'}",
        **extra,
    }


def test_the_feeds_user_moves_its_queues_to_another_type_and_back(node, tmp_path):
    """`cqrs_queues migrate` declares `<queue>.migrating` copies, binds them to `cqrs`, deletes
    and re-declares the queues: all of it allowed to the feed's own user, nothing refused."""
    before = len(node.refusals())
    env = feed_env(tmp_path, node.url("feed"), CQRS_QUEUE="api_feed")

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            FEED.manage(*args), cwd=FEED.directory, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip

    assert manage("cqrs_declare").returncode == 0
    for to_type in ("classic", "quorum"):
        moved = manage("cqrs_queues", "migrate", "--to", to_type)
        assert moved.returncode == 0, moved.stdout + moved.stderr
        shown = manage("cqrs_queues", "show")
        assert f"api_feed: {to_type}" in shown.stdout, shown.stdout + shown.stderr
    assert node.refusals()[before:] == []


def test_the_feeds_user_cannot_publish_an_event_nor_the_masters_consume(node):
    with pika.BlockingConnection(pika.URLParameters(node.url("feed"))) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        with pytest.raises(ChannelClosedByBroker) as refused:
            channel.basic_publish("cqrs", "produto", b'{"signal_type": "SAVE"}')
        assert refused.value.reply_code == 403
    with pika.BlockingConnection(pika.URLParameters(node.url("produtos"))) as connection:
        with pytest.raises(ChannelClosedByBroker) as refused:
            connection.channel().basic_get("api_feed")
        assert refused.value.reply_code == 403


def test_a_missing_permission_is_one_clear_line(node, tmp_path):
    """A user without read on `cqrs` cannot bind its queue: `cqrs_declare` said a pika repr
    in a traceback; now one line naming the user, the exchange and the permissions."""
    node.rabbit.ctl("add_user", "narrow", "narrow-pw-1")
    own = "(narrow_feed.*|dead_letter_narrow_feed)"  # everything but read on `cqrs`
    node.rabbit.ctl(
        "set_permissions", "-p", "/", "narrow", f"^{own}$", f"^(amq\\.default|{own})$", f"^{own}$"
    )  # fmt: skip
    env = feed_env(
        tmp_path,
        f"amqp://narrow:narrow-pw-1@127.0.0.1:{node.rabbit.port}/",
        CQRS_QUEUE="narrow_feed",
    )
    result = subprocess.run(
        FEED.manage("cqrs_declare"), cwd=FEED.directory, env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "RabbitMQ user 'narrow' lacks a permission on exchange 'cqrs'" in lines[0]
    assert "CQRS.md#permissões-no-broker" in lines[0] and "Traceback" not in result.stderr


def test_a_users_password_reaches_rabbitmqctl_on_stdin_never_on_its_command_line(node, monkeypatch):
    """`ensure_user` creates the user, then changes its password on a second call; neither
    password is ever in an argv (readable by any local user in `ps`), and each one works."""
    rabbit = node.rabbit
    argvs: list[list[str]] = []
    run = subprocess.run

    def recording(argv, *args, **kwargs):
        argvs.append(list(argv))
        return run(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording)
    user, password = rabbit.user, rabbit.password
    try:
        for secret in ("first-pw-5d0c", "second-pw-e81b"):
            rabbit.user, rabbit.password = "operator", secret
            rabbit.ensure_user()
            params = pika.URLParameters(f"amqp://operator:{secret}@127.0.0.1:{rabbit.port}/")
            pika.BlockingConnection(params).close()
    finally:
        rabbit.user, rabbit.password = user, password
    assert any("add_user" in argv for argv in argvs)
    assert any("change_password" in argv for argv in argvs)
    assert not [argv for argv in argvs if any("-pw-" in arg for arg in argv)]
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(
            pika.URLParameters(f"amqp://operator:first-pw-5d0c@127.0.0.1:{rabbit.port}/")
        )
