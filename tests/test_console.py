"""The operator console in a real browser: `apis up --create-admin` (the real processes), Debian's
chromium driven by Playwright. On the feed's admin: a poison message and a letter whose cause is
gone, both in the dead-letter page; the second retried (and applied), the first purged. On the
master's admin: the outbox with its backlog summary, a published event republished, and the
products' resync action.

A screenshot of each page goes to the test's folder; the dead-letter page's is copied to
docs/console-dead-letters.png when that file is missing or APIS_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pika
import pytest
from e2e_lab import (
    API_KEY,
    REPO_ROOT,
    Databases,
    Lab,
    Publisher,
    delete_broker_objects,
    produto_data,
    start_lab,
    stock_payload,
    wait_until,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.any_database,
]  # the database plays no part here: CI runs it in its SQLite pass only

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_USER, ADMIN_PASSWORD = "operador", "console-e2e-senha"
DEAD_LETTERS = "/admin/cqrs_replica/deadletter/"
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "console-dead-letters.png"
#: Every wait of the browser, in milliseconds.
TIMEOUT_MS = 20_000
POISON_PK, TRANSIENT_PK = 9001, 9002


@pytest.fixture
def console_lab(tmp_path, rabbitmq_url, redis_url) -> Iterator[Lab]:
    databases = Databases(tmp_path)
    running = start_lab(
        tmp_path,
        rabbitmq_url,
        databases,
        "--create-admin",
        "--web-workers",
        "2",
        APIS_ADMIN_USER=ADMIN_USER,
        APIS_ADMIN_PASSWORD=ADMIN_PASSWORD,
        REPLICATION_MODE="cqrs",
        # No reconciliation during the test: the retried letter's product exists only there.
        RECONCILE_INTERVAL="3600",
    )
    yield running
    running.stop()
    delete_broker_objects(rabbitmq_url, running.exchange, running.broker_queues())
    databases.drop_all()


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (as .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            yield launched
        finally:
            launched.close()


def new_page(browser, base_url: str):
    context = browser.new_context(base_url=base_url, viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.set_default_navigation_timeout(TIMEOUT_MS)
    return page


def log_in(page, path: str) -> None:
    page.goto(f"/admin/login/?next={path}")
    page.fill("#id_username", ADMIN_USER)
    page.fill("#id_password", ADMIN_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(re.escape(path)))


def shot(page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def letter_row(page, pk: int):
    return page.locator(f"tr.dead-letter:has(td:text-is('{pk}'))")


def put_dead_letter(rabbitmq_url: str, queue: str, body: dict) -> None:
    """A valid save that was dead-lettered because the replica's database was locked (its
    retries exhausted): the cause is gone now, a retry applies it."""
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            "",
            queue,
            orjson.dumps(body),
            pika.BasicProperties(
                delivery_mode=2,
                content_type="text/plain",
                headers={
                    "x-cqrs-dead-reason": "retries-exhausted",
                    "x-cqrs-error-class": "django.db.utils.OperationalError",
                    "x-cqrs-error": "database is locked",
                    "x-cqrs-retries": 5,
                    "x-cqrs-first-failure": "2026-01-01T10:00:00+00:00",
                    "x-cqrs-last-failure": "2026-01-01T10:01:02+00:00",
                    "x-cqrs-original-routing-key": "produto",
                },
            ),
            mandatory=True,
        )
    finally:
        connection.close()


def test_the_operator_console(console_lab, browser, rabbitmq_url, tmp_path):
    lab = console_lab
    output = lab.output()
    assert f"{lab.produtos_url}/admin/" in output and f"{lab.feed_url}{DEAD_LETTERS}" in output
    assert f"admin login   user {ADMIN_USER}, password from APIS_ADMIN_PASSWORD" in output
    assert ADMIN_PASSWORD not in output
    (rabbitmq_line,) = [line for line in output.splitlines() if "RabbitMQ UI" in line]
    user = pika.URLParameters(rabbitmq_url).credentials.username
    assert rabbitmq_line.endswith(f":15672 (user {user})"), rabbitmq_line

    # Two dead letters: a poison message the consumer refuses (estoque -1), and a valid save
    # whose failure was transient.
    dead_letter_queue = f"dead_letter_{lab.queue}"
    publisher = Publisher(rabbitmq_url, lab.exchange)
    try:
        publisher.publish(stock_payload("SAVE", produto_data(POISON_PK, 0, estoque=-1)))
        wait_until(lambda: publisher.depth(dead_letter_queue) == 1, 30, what="the poison")
        put_dead_letter(
            rabbitmq_url,
            dead_letter_queue,
            stock_payload("SAVE", produto_data(TRANSIENT_PK, 3, nome="Volta depois do lock")),
        )
        assert publisher.depth(dead_letter_queue) == 2
    finally:
        publisher.close()
    feed = httpx.Client(base_url=lab.feed_url, timeout=10)
    assert feed.get(f"/api/feed/{TRANSIENT_PK}").status_code == 404

    # --- the replica's admin --------------------------------------------------------------
    page = new_page(browser, lab.feed_url)
    log_in(page, "/admin/cqrs_replica/replicastate/")
    page.click("#dead-letters-link")
    page.wait_for_url(re.compile(re.escape(DEAD_LETTERS)))
    assert page.locator("tr.dead-letter").count() == 2
    poison, transient = letter_row(page, POISON_PK), letter_row(page, TRANSIENT_PK)
    assert "permanent" in poison.inner_text() and "InvalidData" in poison.inner_text()
    assert "retries-exhausted" in transient.inner_text()
    assert "database is locked" in transient.inner_text()
    assert "2026-01-01 10:01:02" in transient.inner_text()
    listing = shot(page, tmp_path, "1-dead-letters")
    if not DOCS_SCREENSHOT.exists() or os.environ.get("APIS_UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(listing, DOCS_SCREENSHOT)

    page.select_option("#id_reason", "retries-exhausted")
    page.click("#dead-letter-filters input[type=submit]")
    page.wait_for_url(re.compile(r"reason=retries-exhausted"))
    assert page.locator("tr.dead-letter").count() == 1
    assert letter_row(page, TRANSIENT_PK).count() == 1
    shot(page, tmp_path, "2-dead-letters-filtered")

    # Retry the letter whose cause is gone, through the confirmation step.
    letter_row(page, TRANSIENT_PK).locator("input.letter-select").check()
    page.select_option("#id_action", "retry")
    page.click("#dead-letter-form button[type=submit]")
    page.wait_for_selector("#confirm-question")
    assert page.locator("tr.dead-letter").count() == 1
    shot(page, tmp_path, "3-confirm-retry")
    page.click("#confirm-yes")
    page.wait_for_selector(".messagelist .success")
    assert "1 mensagem(ns) reenviada(s)" in page.inner_text(".messagelist")
    wait_until(
        lambda: feed.get(f"/api/feed/{TRANSIENT_PK}").status_code == 200,
        30,
        what="the retried letter applied on the feed",
    )
    assert feed.get(f"/api/feed/{TRANSIENT_PK}").json()["nome"] == "Volta depois do lock"

    # Purge the poison.
    page.goto(DEAD_LETTERS)
    assert page.locator("tr.dead-letter").count() == 1
    letter_row(page, POISON_PK).locator("input.letter-select").check()
    page.select_option("#id_action", "purge")
    page.click("#dead-letter-form button[type=submit]")
    page.wait_for_selector("#confirm-question")
    page.click("#confirm-yes")
    page.wait_for_selector(".messagelist .success")
    assert "1 mensagem(ns) descartada(s)" in page.inner_text(".messagelist")
    page.wait_for_selector("#no-dead-letters")
    shot(page, tmp_path, "4-dead-letters-empty")
    page.goto("/admin/feed/produtomirror/")
    assert page.locator(f"text=SKU-{TRANSIENT_PK}").count() == 1
    shot(page, tmp_path, "5-feed-produtos")
    feed.close()

    # --- the master's admin: the outbox and the resync --------------------------------------
    with httpx.Client(base_url=lab.produtos_url, headers={"X-API-Key": API_KEY}, timeout=10) as m:
        created = m.post(
            "/api/produtos/", json={"sku": "CONSOLE-1", "nome": "Café", "preco": "9.90"}
        )
        assert created.status_code == 201, created.text
        produto_id = created.json()["id"]
    with httpx.Client(base_url=lab.feed_url, timeout=10) as feed:
        wait_until(lambda: feed.get(f"/api/feed/{produto_id}").status_code == 200, 30)

    page = new_page(browser, lab.produtos_url)
    log_in(page, "/admin/cqrs_outbox/outboxevent/")
    backlog = page.locator("#outbox-backlog")
    assert backlog.locator(".backlog-count").inner_text() == "0"
    assert "há " in backlog.locator(".backlog-last").inner_text()
    row = page.locator("#result_list tbody tr").first
    assert "publicado" in row.inner_text() and "SAVE" in row.inner_text()
    shot(page, tmp_path, "6-outbox")
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "republish")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist .success")
    assert "1 evento(s) de volta a pendente" in page.inner_text(".messagelist")
    shot(page, tmp_path, "7-outbox-republished")

    def published_again() -> bool:
        page.goto("/admin/cqrs_outbox/outboxevent/")
        return page.locator("#outbox-backlog .backlog-count").inner_text() == "0"

    wait_until(published_again, 30, interval=0.5, what="the relay to publish it again")

    page.goto("/admin/produto/produto/")
    page.locator("#result_list tbody tr").first.locator("input.action-select").check()
    page.select_option("select[name=action]", "sync_items")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist .success")
    assert "1 sincronização(ões) no outbox" in page.inner_text(".messagelist")
    shot(page, tmp_path, "8-produtos-resync")
    assert wait_until(published_again, 30, interval=0.5, what="the sync to be published")
