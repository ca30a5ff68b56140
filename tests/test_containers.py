"""The container files, tested without a Docker engine (none runs on these machines):

- docker-compose.yaml is valid against the Compose Specification's JSON schema, vendored in
  tests/data/compose-spec.json (see tests/data/README.md for its source);
- plain `docker compose up -d` still starts RabbitMQ and Redis only; the `ecosystem` profile
  brings up everything, each service waiting for what it needs, with health checks;
- every container runs the command `apis up` runs for that process (apis_lab/catalogue.py), in
  its service's folder, with its service's settings;
- the image as the Dockerfile builds it: the build context its .dockerignore leaves, installed
  the Dockerfile's way (`uv sync --frozen --no-dev`) into a folder here, where every command and
  health check of the compose file must exist (manage.py commands, WSGI apps, Celery apps, the
  health URLs).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from compose_file import COMPOSE_FILE, compose, interpolate, variables
from e2e_lab import REPO_ROOT

from apis_lab.catalogue import FEED, PRODUTOS, SERVICES, EcosystemOptions, processes

pytestmark = pytest.mark.any_database

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
#: From compose-spec/compose-spec, schema/compose-spec.json (tests/data/README.md).
COMPOSE_SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
#: Where the Dockerfile puts the repository in the image.
IMAGE_ROOT = "/app"
PROFILE = "ecosystem"


def services() -> dict[str, dict]:
    return compose()["services"]


def ecosystem() -> dict[str, dict]:
    return {n: s for n, s in services().items() if PROFILE in s.get("profiles", [])}


def ours() -> dict[str, dict]:
    """The services that run the image of ./Dockerfile."""
    return {n: s for n, s in services().items() if "build" in s}


def environment(service: dict, dotenv: dict[str, str] | None = None) -> dict[str, str]:
    """The service's environment as Compose gives it, with `dotenv` as the `.env` file."""
    return {
        key: interpolate(str(value), dotenv)
        for key, value in service.get("environment", {}).items()
    }


def to_image(argv: list[str]) -> list[str]:
    """A command of `apis up` as it runs in the image: the venv's `python` first on PATH, the
    repository at /app."""
    return [
        "python" if arg == sys.executable else arg.replace(str(REPO_ROOT), IMAGE_ROOT)
        for arg in argv
    ]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# --- the compose file -------------------------------------------------------------------------


def test_the_compose_file_is_valid_against_the_compose_specification():
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, "\n".join(errors)
    # And the schema does catch a mistake.
    broken = compose()
    broken["services"]["relay"]["depends_on"]["rabbitmq"]["condition"] = "service_ready"
    broken["services"]["consumer"]["healthcheck"]["retries"] = []
    assert len(list(validator.iter_errors(broken))) == 2


def test_plain_compose_up_still_starts_rabbitmq_and_redis_only():
    default = {n for n, s in services().items() if not s.get("profiles")}
    assert default == {"rabbitmq", "redis"}
    for service in default:
        assert set(services()[service].get("depends_on", {})) <= default
    assert "management" in services()["rabbitmq"]["image"]
    assert {"127.0.0.1:5672:5672", "127.0.0.1:15672:15672"} <= set(services()["rabbitmq"]["ports"])


def test_the_ecosystem_profile_brings_up_everything():
    expected = set(processes(EcosystemOptions(), "/state", "cqrs", {"produtos": {}, "feed": {}}))
    assert expected == {
        "produtos", "feed", "relay", "consumer",
        "produtos-worker", "produtos-beat", "feed-worker", "feed-beat",
    }  # fmt: skip
    assert expected | {"postgres"} <= set(ecosystem())
    assert set(ours()) <= set(ecosystem())
    # RabbitMQ and Redis come with the profile too: a service without profiles always starts.
    assert "management" in services()["rabbitmq"]["image"]


def test_every_service_waits_for_what_it_needs():
    jobs = set()
    for name, service in ecosystem().items():
        for target, dependency in service.get("depends_on", {}).items():
            assert target in services(), f"{name} depends on {target}, which does not exist"
            condition = dependency["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services()[target], f"{name}: {target} has no health"
            elif condition == "service_completed_successfully":
                assert services()[target].get("restart") == "no", f"{target} is a one-off job"
                jobs.add(target)
            else:
                pytest.fail(f"{name} waits for {target} to be merely started")
    assert jobs == {"produtos-migrate", "feed-migrate", "feed-declare"}
    needs = {name: set(s.get("depends_on", {})) for name, s in ecosystem().items()}
    assert {"produtos-migrate"} <= needs["produtos"] and {"feed-migrate"} <= needs["feed"]
    # The replica's queues exist before the first event goes out (as `apis up` does it).
    assert {"produtos-migrate", "feed-declare", "rabbitmq"} <= needs["relay"]
    assert {"feed-migrate", "feed-declare", "rabbitmq"} <= needs["consumer"]
    for worker in ("produtos-worker", "feed-worker"):
        assert {"rabbitmq", "redis"} <= needs[worker]
    assert {"postgres"} <= needs["produtos-migrate"] & needs["feed-migrate"]


def test_each_container_runs_what_apis_up_runs():
    options = EcosystemOptions(host="0.0.0.0")
    expected = processes(options, f"{IMAGE_ROOT}/var", "cqrs", {"produtos": {}, "feed": {}})
    for name, (argv, service) in expected.items():
        container = services()[name]
        assert container["command"] == to_image(argv), name
        assert container["working_dir"] == to_image([str(service.directory)])[0], name
        database = urlsplit(environment(container)["DATABASE_URL"]).path
        assert database == f"/{service.name}", f"{name} must use its service's database"
    jobs = {
        "produtos-migrate": PRODUTOS.manage("migrate", "--noinput"),
        "feed-migrate": FEED.manage("migrate", "--noinput"),
        "feed-declare": FEED.manage("cqrs_declare"),
    }
    for name, argv in jobs.items():
        assert services()[name]["command"] == to_image(argv), name


def definitions(dotenv: dict[str, str] | None = None) -> dict:
    """RabbitMQ's definitions (users, permissions, the exchange) as the broker imports them."""
    return json.loads(interpolate(compose()["configs"]["rabbitmq-definitions"]["content"], dotenv))


DOTENV = {  # a .env with every secret set
    "SECRET_KEY": "0123456789abcdefghij" * 3, "PRODUTOS_API_KEY": "k" * 32,
    "CQRS_SIGNING_KEY": "h" * 32,
    "RABBITMQ_USER": "ops", "RABBITMQ_PASSWORD": "ops-pw", "PRODUTOS_RABBITMQ_PASSWORD": "p-pw",
    "FEED_RABBITMQ_PASSWORD": "f-pw", "POSTGRES_PASSWORD": "pg-pw",
}  # fmt: skip


@pytest.mark.parametrize("dotenv", [{}, DOTENV], ids=["no .env", "a .env"])
def test_the_services_find_each_other(dotenv):
    everything = services()
    postgres = {k: interpolate(v, dotenv) for k, v in everything["postgres"]["environment"].items()}
    databases = {postgres["POSTGRES_DB"]} | set(
        re.findall(
            r"CREATE DATABASE (\w+)", compose()["configs"]["postgres-create-feed"]["content"]
        )
    )
    users = {user["name"]: user["password"] for user in definitions(dotenv)["users"]}
    for name, service in ours().items():
        env = environment(service, dotenv)
        db = urlsplit(env["DATABASE_URL"])
        assert db.scheme == "postgres" and db.hostname == "postgres", name
        assert (db.username, db.password) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
        )
        assert db.path.strip("/") in databases, name
        service_name = db.path.strip("/")
        # Each service with its broker user of its own, whose password the definitions set.
        broker = urlsplit(env["RABBITMQ_URL"])
        assert broker.hostname == "rabbitmq" and broker.port == 5672, name
        assert broker.username == service_name, name
        assert broker.password == users[service_name], name
        assert urlsplit(env["REDIS_URL"]).hostname == "redis", name
        assert service_name in env["ALLOWED_HOSTS"].split(","), name
        for secret in ("SECRET_KEY", "CQRS_SIGNING_KEY"):
            assert env[secret] == dotenv.get(secret, ""), name
        if service_name == "feed":
            assert env["CQRS_QUEUE_TYPE"] == "quorum", name
        else:
            assert env["PRODUTOS_API_KEY"] == dotenv.get("PRODUTOS_API_KEY", ""), name
            feed = urlsplit(env["FEED_URL"])
            assert (feed.hostname, feed.port) == ("feed", 8000), name
    admin = dotenv.get("RABBITMQ_USER", "admin")
    assert users[admin] == dotenv.get("RABBITMQ_PASSWORD", "admin")
    # Each API answers on its port, inside and outside (on this machine only).
    for name, service in (("produtos", PRODUTOS), ("feed", FEED)):
        bind = option(services()[name]["command"], "--bind")
        assert bind == f"0.0.0.0:{service.default_port}"
        port = service.default_port
        assert services()[name]["ports"] == [f"127.0.0.1:{port}:{port}"]


def test_every_published_port_is_on_loopback_only():
    """RabbitMQ (admin/admin, its UI), Redis (no password) and the APIs were published on every
    interface: anyone on the network reached them."""
    published = {
        name: service.get("ports", []) for name, service in services().items()
    }  # every profile's
    assert published["rabbitmq"] and published["redis"] and published["produtos"]
    for name, ports in published.items():
        for port in ports:
            text = port if isinstance(port, str) else f"{port.get('host_ip')}:{port['published']}"
            assert text.startswith("127.0.0.1:") and text.count(":") == 2, f"{name}: {port}"


SECRET_VARIABLES = ("SECRET_KEY", "PRODUTOS_API_KEY", "CQRS_SIGNING_KEY")


def test_no_secret_is_in_the_file_only_in_dotenv():
    """Compose gave PRODUTOS_API_KEY a published default: now every secret comes from `.env`,
    and without one the APIs refuse to start (tested below); the broker's users keep the lab's
    admin/admin, which reach no other machine."""
    text = COMPOSE_FILE.read_text()
    assert "ecosystem-local-key" not in text
    for name, service in ours().items():
        raw = service.get("environment", {})
        for secret in SECRET_VARIABLES:
            if secret in raw:
                assert raw[secret] == f"${{{secret}:-}}", f"{name}: {secret} has a default"
        for variable in ("DATABASE_URL", "RABBITMQ_URL"):
            password = raw[variable].split("://", 1)[1].rsplit("@", 1)[0].split(":", 1)[1]
            assert password.startswith("${"), f"{name}: the {variable} password is in the file"
    for user in definitions()["users"]:
        assert user["password"] == "admin"  # only the lab's public default, when .env is absent
    raw_users = compose()["configs"]["rabbitmq-definitions"]["content"]
    assert all(variables(line) for line in raw_users.splitlines() if '"password"' in line)


def test_rabbitmq_4_loads_the_users_and_permissions_at_start():
    rabbit = services()["rabbitmq"]
    series = re.match(r"rabbitmq:(\d+)\.(\d+)-management$", rabbit["image"])
    assert series and (int(series[1]), int(series[2])) >= (4, 2), rabbit["image"]
    mounted = {config["source"]: config["target"] for config in rabbit["configs"]}
    conf = compose()["configs"]["rabbitmq-conf"]["content"]
    assert f"load_definitions = {mounted['rabbitmq-definitions']}" in conf
    assert mounted["rabbitmq-conf"].startswith("/etc/rabbitmq/conf.d/")
    loaded = definitions()
    assert {u["name"] for u in loaded["users"]} == {"admin", "produtos", "feed"}
    assert [e["name"] for e in loaded["exchanges"]] == ["cqrs"]
    granted = {p["user"]: p for p in loaded["permissions"]}
    assert not re.fullmatch(granted["feed"]["write"], "cqrs"), "the feed must not publish events"
    assert re.fullmatch(granted["feed"]["read"], "cqrs"), "the feed binds its queue to cqrs"
    assert not re.fullmatch(granted["produtos"]["read"], "api_feed"), "nor the master consume"
    assert re.fullmatch(granted["produtos"]["write"], "cqrs")


def _names_of_the_replica(queue: str) -> set[str]:
    """Every queue and exchange name the feed's code declares, binds or publishes to for the
    replica queue `queue`, as its Topology names them (and, where the code of the day has them,
    the migration's `.migrating` queues and marker, the probation queue, the retry exchange, the
    dead-letter queue's reader lock): what the feed's broker user must be allowed."""
    from django_tools.replica import dead_letters
    from django_tools.replica.policy import RetryPolicy
    from django_tools.replica.topology import Topology

    topology = Topology.named(queue, RetryPolicy())
    names = set(topology.queues())
    migrating = getattr(Topology, "migrating", lambda name: f"{name}.migrating")
    names |= {migrating(name) for name in list(names)}
    for kind in ("classic", "quorum"):
        marker = getattr(topology, "migration_marker", None)
        names.add(marker(kind) if marker else f"{queue}.migrating-to-{kind}")
    names.add(getattr(topology, "probation_queue", f"{queue}.probation"))
    names.add(getattr(topology, "retry_exchange", f"{queue}.retries"))
    names.add(dead_letters.lock_queue(topology))  # `<dead-letter queue>.reader`
    return names


#: Celery's names for a service `s` (CELERY_CONTROL_EXCHANGE = s): its task queue, the control
#: exchange and queues (a worker named `s@host` as the containers name it, or `celery@host` when
#: run by hand without -n), the reply exchange and queues of `celery inspect`, the events.
def _celery_names(s: str) -> set[str]:
    return {f"{s}.tasks", f"{s}.pidbox", f"{s}@host.{s}.pidbox", f"celery@host.{s}.pidbox",
            f"reply.{s}.pidbox", f"5f0c-1a2b.reply.{s}.pidbox", f"{s}.celeryev",
            f"{s}.celeryev.5f0c-1a2b"}  # fmt: skip


def test_the_broker_permissions_cover_every_name_each_service_uses_and_nothing_else():
    """The definitions' regular expressions, as RabbitMQ applies them (a search in the name),
    against the names the code uses: a name the feed's code declares and the definitions do not
    grant would be refused at run time (a queue migration, the dead-letter reader lock)."""
    granted = {p["user"]: p for p in definitions()["permissions"]}

    def allowed(user: str, permission: str, name: str) -> bool:
        return re.search(granted[user][permission], name) is not None

    feed_own = _names_of_the_replica("api_feed") | _celery_names("feed")
    for name in sorted(feed_own):
        for permission in ("configure", "write", "read"):
            assert allowed("feed", permission, name), f"feed lacks {permission} on {name}"
    for name in sorted(_celery_names("produtos") | {"cqrs"}):
        for permission in ("configure", "write"):
            if name != "cqrs" or permission == "write":
                assert allowed("produtos", permission, name), (
                    f"produtos lacks {permission} on {name}"
                )
        if name != "cqrs":
            assert allowed("produtos", "read", name), f"produtos lacks read on {name}"
    for user in ("produtos", "feed"):
        assert allowed(user, "write", "amq.default")  # Celery's tasks, the replica's retries

    # Nothing of the other service, nor a name that merely starts like one of ours.
    strangers = {"api_feedx", "xapi_feed", "dead_letter_api_feedx", "celery.pidbox", "celeryev",
                 "other.tasks", "amq.topic"}  # fmt: skip
    for name in sorted(strangers | _celery_names("produtos") | {"cqrs"}):
        for permission in ("configure", "write"):
            assert not allowed("feed", permission, name), f"feed may {permission} {name}"
    for name in sorted(strangers | feed_own):
        for permission in ("configure", "write", "read"):
            assert not allowed("produtos", permission, name), f"produtos may {permission} {name}"
    assert not allowed("produtos", "read", "cqrs")


def test_redis_is_bounded():
    command = services()["redis"]["command"]
    assert option(command, "--maxmemory") and option(command, "--maxmemory-policy") == "allkeys-lru"


def test_dotenv_example_lists_every_variable_the_file_reads():
    example = (REPO_ROOT / ".env.example").read_text()
    read = variables(COMPOSE_FILE.read_text())
    missing = {name for name in read if not re.search(rf"^#? ?{name}=", example, re.M)}
    assert not missing, f"in docker-compose.yaml, not in .env.example: {sorted(missing)}"


def test_the_health_checks_are_the_ones_made_for_them():
    for name, service in (("produtos", PRODUTOS), ("feed", FEED)):
        test = services()[name]["healthcheck"]["test"]
        assert test[0] == "CMD"
        assert f"'http://127.0.0.1:{service.default_port}/health/ready'" in test[-1], name
    relay = services()["relay"]["healthcheck"]["test"]
    assert relay == ["CMD", "python", f"{IMAGE_ROOT}/api_produtos/manage.py", "outbox_relay_health"]
    consumer = services()["consumer"]["healthcheck"]["test"]
    assert consumer == ["CMD", "python", f"{IMAGE_ROOT}/api_feed/manage.py", "cqrs_consume_health"]
    for name in ("produtos-worker", "feed-worker"):
        command = services()[name]["command"]
        check = shlex.split(interpolate(services()[name]["healthcheck"]["test"][1]))
        assert check[:5] == ["python", "-m", "celery", "-A", option(command, "-A")]
        node = option(command, "-n").split("@")[0]
        assert option(check, "-d") == f"{node}@$HOSTNAME", name


# --- the monitoring profile: Prometheus, its alerting rules, Grafana ------------------------------

MONITORING = REPO_ROOT / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
ALERTS = MONITORING / "prometheus" / "alerts.yml"
ALERTS_TEST = MONITORING / "prometheus" / "alerts_test.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "apis.json"
#: Series Prometheus makes itself rather than scrapes.
PROMETHEUS_OWN = {"up"}
#: A metric selector (a name before its labels or range), or any name of ours.
METRIC_NAME = re.compile(r"(?<![\w$.])([a-zA-Z_:][\w:]*)\s*(?=[{\[])|\b((?:apis|cqrs)_\w+)")


def monitoring() -> dict[str, dict]:
    return {n: s for n, s in services().items() if "monitoring" in s.get("profiles", [])}


def promtool(*args: str, cwd: Path = REPO_ROOT) -> str:
    """Run promtool; the test fails (never skips) without it, saying how to get it."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool not found: install Debian's `prometheus` package (`apt-get install "
            "prometheus`, as .ci/run does); it checks and unit-tests monitoring/prometheus"
        )
    result = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )  # fmt: skip
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def bind_mounts(service: dict) -> dict[str, Path]:
    """{target in the container: the file or folder of this repository mounted there}."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = REPO_ROOT / source
    return mounts


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    return {a or b for a, b in METRIC_NAME.findall(expr)}


def test_the_monitoring_profile_runs_prometheus_and_grafana_on_loopback_only():
    assert set(monitoring()) == {"prometheus", "grafana"}
    prometheus, grafana = monitoring()["prometheus"], monitoring()["grafana"]
    # On the host's network, where `apis up` serves its loopback-only defaults; nothing
    # published, each listening on 127.0.0.1 only.
    for service in (prometheus, grafana):
        assert service["network_mode"] == "host" and "ports" not in service
    command = prometheus["command"]
    assert "--web.listen-address=127.0.0.1:9090" in command
    env = environment(grafana)
    assert env["GF_SERVER_HTTP_ADDR"] == "127.0.0.1" and env["GF_SERVER_HTTP_PORT"] == "3000"
    # Read-only for anyone and no login at all: no admin password to be a public default.
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_AUTH_DISABLE_LOGIN_FORM"] == "true" and env["GF_AUTH_BASIC_ENABLED"] == "false"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env

    # Every file mounted exists, where the other side looks for it.
    mounts = bind_mounts(prometheus)
    for target, source in {**mounts, **bind_mounts(grafana)}.items():
        assert source.exists(), f"{source} (mounted at {target}) does not exist"
    config_file = option([a for c in command for a in c.split("=", 1)], "--config.file")
    assert mounts[config_file] == PROMETHEUS_CONFIG
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    for rules in config["rule_files"]:  # relative to the config file, in the container too
        assert mounts[str(Path(config_file).parent / rules)] == PROMETHEUS_CONFIG.parent / rules
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert jobs == {
        "api_produtos": [f"127.0.0.1:{PRODUTOS.default_port}"],
        "api_feed": [f"127.0.0.1:{FEED.default_port}"],
    }
    grafana_mounts = bind_mounts(grafana)
    provisioning = grafana_mounts["/etc/grafana/provisioning"]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert [d["url"] for d in datasource["datasources"]] == ["http://127.0.0.1:9090"]
    dashboards = yaml.safe_load((provisioning / "dashboards" / "apis.yml").read_text())
    folder = dashboards["providers"][0]["options"]["path"]
    assert grafana_mounts[folder] == DASHBOARD.parent
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert grafana_mounts[str(Path(home).parent)] / Path(home).name == DASHBOARD
    uids = {d["uid"] for d in datasource["datasources"]}
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert {p["datasource"]["uid"] for p in panels if "datasource" in p} == uids


def test_promtool_checks_the_rules_and_runs_their_unit_tests():
    """The rules are valid and loaded by the config; each alert has a case that fires it and
    one that must not (alerts_test.yml)."""
    assert "SUCCESS" in promtool("check", "config", str(PROMETHEUS_CONFIG))
    promtool("check", "rules", str(ALERTS))
    assert "SUCCESS" in promtool("test", "rules", ALERTS_TEST.name, cwd=ALERTS_TEST.parent)
    alerts = {rule["alert"] for rule in alert_rules()}
    tested: dict[str, set[bool]] = {}
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            tested.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    assert set(tested) == alerts
    assert all(outcomes == {True, False} for outcomes in tested.values()), tested


def test_the_alerts_and_the_dashboard_name_only_metrics_the_services_export(tmp_path):
    from django_tools.observability.metrics import exported_metric_names
    from django_tools.outbox.metrics import OutboxBacklogCollector, RelayHeartbeatCollector
    from django_tools.replica.metrics import ConsumerHeartbeatCollector, ReplicaQueuesCollector

    exported = exported_metric_names([
        OutboxBacklogCollector(), RelayHeartbeatCollector(),
        ReplicaQueuesCollector(), ConsumerHeartbeatCollector(),
    ])  # fmt: skip
    # The deprecated names are still exported (one release), but nothing here uses them.
    deprecated = {"http_requests_total", "cqrs_dead_letters", "cqrs_dead_letters_reported"}
    assert deprecated <= exported
    rules, panels = [r["expr"] for r in alert_rules()], dashboard_exprs()
    assert rules and panels
    for where, exprs in (("alerts.yml", rules), ("apis.json", panels)):
        named = set().union(*map(metric_names, exprs))
        assert named, where
        unknown = named - exported - PROMETHEUS_OWN
        assert not unknown, f"{where} names metrics /metrics does not export: {sorted(unknown)}"
        assert not named & deprecated, f"{where} uses deprecated names"
    # The dashboard's queries are valid PromQL: promtool parses them as recording rules.
    recording = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard_query_{n}", "expr": expr} for n, expr in enumerate(panels)
    ]}]}  # fmt: skip
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(recording))
    promtool("check", "rules", str(tmp_path / "dashboard.yml"))


# --- the Dockerfile and its build context ------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_the_dockerfile_builds_the_image_the_compose_file_runs():
    steps = instructions()
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert froms[-1] == "python:3.11-slim"
    copies = [args for keyword, args in steps if keyword == "COPY"]
    assert any(args.startswith("--from=ghcr.io/astral-sh/uv:") for args in copies)
    env = " ".join(args for keyword, args in steps if keyword == "ENV")
    assert "UV_COMPILE_BYTECODE=1" in env
    assert f'PATH="{IMAGE_ROOT}/.venv/bin:$PATH"' in env, "python must be the venv's"
    assert ("WORKDIR", IMAGE_ROOT) in steps
    syncs = [args for keyword, args in steps if keyword == "RUN" and "uv sync" in args]
    assert syncs and syncs[-1].endswith("uv sync --frozen --no-dev")
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the processes must not run as root"
    assert not [k for k, _ in steps if k == "ENTRYPOINT"], "the compose command picks the process"
    for name, service in ours().items():
        assert service["build"] in (".", {"context": "."}), name
        assert service["command"][0] == "python", name


def dockerignore() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _glob(pattern: str, path: str) -> bool:
    """Docker's matching (Go's filepath.Match, plus `**` for any number of folders)."""
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            regex, i = regex + pattern[i : end + 1], end + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.fullmatch(regex, path) is not None


def excluded(path: str, patterns: list[str]) -> bool:
    """Whether the build leaves `path` (relative to the context) out: the last pattern that
    matches it or one of its folders decides, `!` patterns bringing files back."""
    result = False
    parents = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if any(_glob(pattern, candidate) for candidate in parents):
            result = not negated
    return result


def build_context() -> list[str]:
    """The repository's files (tracked, or new and not ignored) that reach the build."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    patterns = dockerignore()
    return sorted(p for p in listed if (REPO_ROOT / p).is_file() and not excluded(p, patterns))


def test_the_dockerignore_matcher_reads_patterns_as_docker_does():
    patterns = ["**/__pycache__", "tests", "*.sqlite3", ".env.*", "!.env.keep"]
    assert excluded("a/b/__pycache__/x.pyc", patterns)
    assert excluded("tests/test_x.py", patterns) and not excluded("api/tests.py", patterns)
    assert excluded("db.sqlite3", patterns) and not excluded("var/db.sqlite3", patterns)
    assert excluded(".env.feed", patterns) and not excluded(".env.keep", patterns)


def test_the_build_context_has_what_the_image_needs_and_nothing_private():
    context = set(build_context())
    needed = {"pyproject.toml", "uv.lock", "README.md", "apis/cli.py", "apis_lab/catalogue.py"}
    for service in SERVICES:
        folder = service.directory.name
        needed |= {
            f"{folder}/pyproject.toml",
            f"{folder}/manage.py",
            f"{folder}/{service.project}/wsgi.py",
            f"{folder}/{service.project}/celery.py",
            f"{folder}/{service.project}/settings.py",
        }
    needed |= {"django_tools/pyproject.toml", "django_tools/django_tools/health.py"}
    assert needed <= context, sorted(needed - context)
    for copied in (args.split()[0] for k, args in instructions() if k == "COPY"):
        if not copied.startswith("--") and copied != ".":
            assert copied in context, f"the Dockerfile copies {copied}, left out of the build"
    leaked = [
        p for p in context
        if p.startswith((".env", "tests/", "var/", ".venv/")) or "/tests/" in p
        or p.endswith((".sqlite3", ".pyc"))
    ]  # fmt: skip
    assert not leaked, leaked


# --- the image: the context installed the Dockerfile's way, every command run against it -------


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """The build context in a folder of its own, installed as the Dockerfile does (the
    workspace's packages and their dependencies, no dev group); the folder stands for /app."""
    root = tmp_path_factory.mktemp("image") / "app"
    for relative in build_context():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / relative, target)
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(root / ".venv"),
        "UV_COMPILE_BYTECODE": "0",  # the Dockerfile compiles; here it would only cost time
    }
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        [shutil.which("uv") or "uv", "sync", "--frozen", "--no-dev"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def in_image(image: Path, argv: list[str]) -> list[str]:
    python = str(image / ".venv" / "bin" / "python")
    return [python if arg == "python" else arg.replace(IMAGE_ROOT, str(image)) for arg in argv]


def run_in_image(image: Path, service: dict, argv: list[str]) -> tuple[list[str], int, str]:
    """Run `argv` as the service's container would (its folder, its environment, no env file of
    a developer's), in the installed image folder."""
    env = {
        "PATH": f"{image / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
        "HOME": str(image),
        "PRODUTOS_ENV_FILE": str(image / "no-env-file"),
        "FEED_ENV_FILE": str(image / "no-env-file"),
        "HEARTBEAT_DIR": str(image / "heartbeats"),
        **environment(service),
    }
    cwd = Path(service["working_dir"].replace(IMAGE_ROOT, str(image)))
    result = subprocess.run(
        in_image(image, argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    return argv, result.returncode, (result.stdout + result.stderr)[-2000:]


def checks_of(name: str, service: dict) -> list[list[str]]:
    """Commands that succeed only when the service's command (and health check) can run: the
    manage.py command exists, the WSGI app loads with gunicorn's options, the Celery app loads,
    the health URL exists."""
    command = service["command"]
    checks = []
    if command[1].endswith("manage.py"):
        checks.append(["python", command[1], "help", command[2]])
    elif command[1:3] == ["-m", "gunicorn"]:
        checks.append(["python", "-m", "gunicorn", "--check-config", *command[3:]])
    elif command[1:3] == ["-m", "celery"]:
        checks.append(["python", "-m", "celery", "-A", option(command, "-A"), "report"])
    else:
        pytest.fail(f"{name}: a command this test does not know: {command}")
    test = service.get("healthcheck", {}).get("test", [])
    manage = f"{service['working_dir']}/manage.py"
    if test[:1] == ["CMD"] and test[2:3] and test[2].endswith("manage.py"):
        checks.append(["python", test[2], "help", test[3]])
    elif test[:1] == ["CMD"] and "/health/ready" in test[-1]:
        path = "/health/ready"
        resolve = f"from django.urls import resolve; resolve({path!r})"
        checks.append(["python", manage, "shell", "-c", resolve])
    return checks


def test_every_command_and_health_check_exists_in_the_image(image):
    work = [
        (service, check)
        for name, service in ours().items()
        for check in checks_of(name, service)
    ]  # fmt: skip
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda item: run_in_image(image, *item), work))
    failed = [
        f"{' '.join(argv)} → exit {code}:\n{output}" for argv, code, output in results if code
    ]
    assert not failed, "\n\n".join(failed)
    assert len(results) >= 14


def test_the_image_without_a_command_says_what_it_can_run(image):
    cmd = json.loads(next(args for keyword, args in instructions() if keyword == "CMD"))
    argv = [str(image / ".venv" / "bin" / cmd[0]), *cmd[1:]]
    result = subprocess.run(argv, cwd=image, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "{up," in result.stdout, result.stdout


def test_nothing_of_the_dev_group_is_in_the_image(image):
    site = next((image / ".venv" / "lib").glob("python3*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {"django", "gunicorn", "celery", "psycopg", "whitenoise"} <= installed
    assert not installed & {"pytest", "ruff", "hypothesis", "schemathesis", "jsonschema"}


def test_the_api_containers_refuse_to_start_without_the_secrets_of_dotenv(image, tmp_path):
    """The containers' APIs bind 0.0.0.0 (the other containers reach them): without `.env`
    they stop at once with one line naming what to set; with it, they serve."""
    from apis_lab.net import free_port

    for name in ("produtos", "feed"):
        service = services()[name]
        _, code, output = run_in_image(image, service, service["command"])
        assert code == 1, output
        refusal = [line for line in output.splitlines() if line.startswith("gunicorn: ")]
        assert len(refusal) == 1, output
        assert "SECRET_KEY" in refusal[0] and "CQRS.md#segurança" in refusal[0]
        assert ("PRODUTOS_API_KEY" in refusal[0]) == (name == "produtos")

        command = list(service["command"])
        command[command.index("--bind") + 1] = f"0.0.0.0:{free_port()}"
        env = {
            "PATH": f"{image / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
            "HOME": str(image),
            f"{name.upper()}_ENV_FILE": str(image / "no-env-file"),
            **environment(service, DOTENV),
            "DATABASE_URL": f"sqlite:///{tmp_path / f'{name}.sqlite3'}",
        }
        cwd = Path(service["working_dir"].replace(IMAGE_ROOT, str(image)))
        process = subprocess.Popen(
            in_image(image, command), cwd=cwd, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            lines = []
            for line in process.stdout:
                lines.append(line)
                if "Booting worker" in line or len(lines) > 200:
                    break
            assert any("Booting worker" in line for line in lines), "".join(lines)
        finally:
            process.terminate()
            process.wait(timeout=30)
