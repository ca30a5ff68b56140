"""The operator console in a real browser: `apis up --create-admin` (the real processes), Debian's
chromium driven by Playwright, at 1280 px. On the feed's admin: the dead-letter page reached from
the sidebar, a poison message and a letter whose cause is gone; the second retried (and applied),
the first retried (it dies again, as the same letter) then purged. On the master's admin: the
outbox with its backlog summary, an event's folded body, a published event republished, and the
products' resync action. On every page: the service's header, no English label, nothing that
scrolls sideways.

A screenshot of each page goes to the test's folder; those of `DOCS_SCREENSHOTS` are copied to
docs/ (the ones CQRS.md shows) when missing or with APIS_UPDATE_SCREENSHOTS=1.
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
#: The test's screenshots that are also the docs' (docs/console-<name>.png).
DOCS_SCREENSHOTS = {
    "1-dead-letters": "console-dead-letters.png",
    "3-confirm-retry": "console-retry-confirm.png",
    "6-outbox": "console-outbox.png",
    "6b-outbox-event": "console-outbox-event.png",
    "0-feed-index": "console-feed-index.png",
}
#: The viewport: the narrowest screen the console must fit without scrolling sideways.
VIEWPORT = {"width": 1280, "height": 900}
#: Labels the console showed in English before (a word of them on a page fails the test).
#: Any case: the admin's CSS shows some labels in capitals (innerText is what is shown).
ENGLISH = re.compile(
    r"\b(Outbox events?|Replica states?|Tombstones?|Dead letters?|Signal type|Cqrs id|"
    r"Cqrs revision|Cqrs updated|Descricao|Preco|Instance pk|Correlation id|Routing key|"
    r"Trace context|Body|Created at|Published at|Applied at|Deleted at|Master updated at|"
    r"CQRS replica|CQRS outbox|permanent|retries-exhausted|undecodable|unauthenticated|"
    r"redelivered|published|pending|Django administration|Administração do Django|"
    r"Site administration)\b|(?-i:\bSku\b)",
    re.IGNORECASE,
)
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
    context = browser.new_context(base_url=base_url, viewport=VIEWPORT)
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
    """The page checked (see `check_page`), then its screenshot; the docs' copy refreshed."""
    check_page(page)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    docs = DOCS_SCREENSHOTS.get(name)
    if docs is not None:
        target = REPO_ROOT / "docs" / docs
        if not target.exists() or os.environ.get("APIS_UPDATE_SCREENSHOTS") == "1":
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(path, target)
    return path


def check_page(page) -> None:
    """What every page of the console must be: under the service's header, in Portuguese,
    and nothing wider than the window (neither the page nor a list inside it)."""
    header = page.inner_text("#site-name")
    assert re.fullmatch(r"Console — api_(produtos \(mestre\)|feed \(réplica\))", header), header
    # The labels, not the data: the JSON bodies (their keys are the wire's) left out.
    text = page.evaluate(
        """() => { const copy = document.body.cloneNode(true);
            copy.querySelectorAll('details.json-body, pre, script, style').forEach(e => e.remove());
            return copy.textContent; }"""
    )
    assert not ENGLISH.search(text), (page.url, ENGLISH.search(text))
    widths = page.evaluate(
        """() => [document.scrollingElement, ...document.querySelectorAll('.results, pre')]
            .map(e => [e.tagName + '.' + e.className, e.scrollWidth, e.clientWidth])"""
    )
    page_width = widths[0]
    assert page_width[1] <= page_width[2], (page.url, "the page scrolls sideways", page_width)
    wide = [w for w in widths[1:] if w[2] and w[1] > w[2] + 1]
    assert not wide, (page.url, "scrolls sideways inside", wide)


def letter_row(page, pk: int):
    return page.locator(f"tr.dead-letter:has(span.instance:text-is('{pk}'))")


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
    log_in(page, "/admin/")
    # The dead letters are in the index and the sidebar, not only behind a button.
    assert page.locator(f"#content-main th a[href='{DEAD_LETTERS}']").inner_text() == (
        "Mensagens mortas"
    )
    shot(page, tmp_path, "0-feed-index")
    page.goto("/admin/cqrs_replica/replicastate/")
    page.click(f"#nav-sidebar a[href='{DEAD_LETTERS}']")
    page.wait_for_url(re.compile(re.escape(DEAD_LETTERS)))
    assert page.locator("#nav-sidebar tr.current-model th").inner_text() == "Mensagens mortas"
    assert page.locator("tr.dead-letter").count() == 2
    poison, transient = letter_row(page, POISON_PK), letter_row(page, TRANSIENT_PK)
    assert "permanente" in poison.inner_text() and "dados inválidos" in poison.inner_text()
    assert "tentativas esgotadas" in transient.inner_text()
    assert "database is locked" in transient.inner_text()  # the error as it was recorded
    assert "2026-01-01 10:01:02" in transient.inner_text()
    poison_id = poison.get_attribute("data-letter-id")
    poison_first_failure = poison.locator("td.failures span").first.inner_text()
    # The body: folded, pretty-printed when opened, within the page.
    poison.locator("details.json-body summary").click()
    assert '"estoque": -1' in poison.locator("pre.json-pretty").inner_text()
    shot(page, tmp_path, "1-dead-letters")

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
    # Retrying destroys nothing: Django's non-destructive buttons, not the red delete one.
    assert "delete-confirmation" not in (page.get_attribute("body", "class") or "")
    assert "default" in page.get_attribute("#confirm-yes", "class")
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

    # The poison retried: it dies again, and comes back as the same letter (same identity,
    # same first failure).
    page.goto(DEAD_LETTERS)
    assert page.locator("tr.dead-letter").count() == 1
    letter_row(page, POISON_PK).locator("input.letter-select").check()
    page.select_option("#id_action", "retry")
    page.click("#dead-letter-form button[type=submit]")
    page.click("#confirm-yes")
    page.wait_for_selector(".messagelist .success")

    def poison_back() -> bool:
        page.goto(DEAD_LETTERS)
        return page.locator("tr.dead-letter").count() == 1

    wait_until(poison_back, 30, interval=0.5, what="the poison dead-lettered again")
    again = letter_row(page, POISON_PK)
    assert again.get_attribute("data-letter-id") == poison_id
    assert again.locator("td.failures span").first.inner_text() == poison_first_failure

    # Purge the poison.
    letter_row(page, POISON_PK).locator("input.letter-select").check()
    page.select_option("#id_action", "purge")
    page.click("#dead-letter-form button[type=submit]")
    page.wait_for_selector("#confirm-question")
    assert "delete-confirmation" in page.get_attribute("body", "class")  # discarding deletes
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
    with httpx.Client(base_url=lab.produtos_url, timeout=10) as m:
        # The relay marks confirmed rows published in groups, a moment after the replica has them.
        wait_until(lambda: m.get("/api/outbox/status").json()["backlog"] == 0, 10)

    page = new_page(browser, lab.produtos_url)
    log_in(page, "/admin/cqrs_outbox/outboxevent/")
    backlog = page.locator("#outbox-backlog")
    assert backlog.locator(".backlog-count").inner_text() == "0"
    assert "há " in backlog.locator(".backlog-last").inner_text()
    row = page.locator("#result_list tbody tr").first
    assert "publicado" in row.inner_text() and "SAVE" in row.inner_text()
    shot(page, tmp_path, "6-outbox")
    event_url = row.locator("th a").first.get_attribute("href")
    page.goto(event_url)
    assert re.search(r"evento #\d+: SAVE produto \d+ \(publicado em [\d-]+ [\d:]+ UTC\)",
                     page.inner_text("#content"))  # fmt: skip
    page.click("details.json-body summary")
    assert '"signal_type": "SAVE"' in page.inner_text("pre.json-pretty")
    shot(page, tmp_path, "6b-outbox-event")
    page.goto("/admin/cqrs_outbox/outboxevent/")
    row = page.locator("#result_list tbody tr").first
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
