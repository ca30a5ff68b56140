# syntax=docker/dockerfile:1
#
# One image for every process of the ecosystem. A container runs the command its compose
# service gives it (docker-compose.yaml, profile `ecosystem`): the same commands `uv run apis up`
# runs on a developer's machine (apis_lab/catalogue.py `processes()`; tests/test_containers.py
# keeps the two in step), each in its service's folder:
#
#   API Produtos   python -m gunicorn api_produtos.wsgi:application --chdir /app/api_produtos
#                  --config python:django_tools.chassis.gunicorn_conf --bind 0.0.0.0:8001 ...
#                  (health: /health/ready)
#   API Feed       python -m gunicorn api_feed.wsgi:application --chdir /app/api_feed
#                  --config python:django_tools.chassis.gunicorn_conf --bind 0.0.0.0:8000 ...
#                  (health: /health/ready)
#
# Bound to 0.0.0.0 (the other containers reach them), the APIs refuse to start while a public
# default is in effect: SECRET_KEY and PRODUTOS_API_KEY come from the orchestrator (compose:
# `.env`), never from the image (CQRS.md, Segurança).
#   relay          python /app/api_produtos/manage.py outbox_relay      (outbox_relay_health)
#   consumer       python /app/api_feed/manage.py cqrs_consume -w 2     (cqrs_consume_health)
#   Celery         python -m celery -A api_produtos|api_feed worker|beat ...
#   one-off jobs   manage.py migrate (each service), manage.py cqrs_declare (the feed)
#
# Build: docker build -t apis-ecosystem .   (docker compose --profile ecosystem builds it too)

FROM python:3.11-slim

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/

# Bytecode compiled at install: the venv is read-only for the service user, and no process
# compiles Django again at every start. The venv's python comes first on PATH.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PATH="/app/.venv/bin:$PATH"

WORKDIR /app

# The dependencies first, in a layer of their own: rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
COPY api_produtos/pyproject.toml api_produtos/pyproject.toml
COPY api_feed/pyproject.toml api_feed/pyproject.toml
COPY django_tools/pyproject.toml django_tools/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace

# Then the code: both services, django_tools and the `apis` CLI (the workspace's own packages).
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev

# A user of its own, without a shell login or a home; /app/var holds the Celery beat schedules
# (and SQLite files when DATABASE_URL is unset). Heartbeats go to /tmp.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /app \
        --shell /usr/sbin/nologin app \
    && mkdir -p /app/var \
    && chown app:app /app/var
USER app

EXPOSE 8000 8001

# Without a command of its own, a container says what it can run.
CMD ["apis", "--help"]
