"""No secret in a response, a log line or a message: URLs whose password a parser cannot read
(unencoded `/`, `?`, `#`, `@`) used to leave fragments of the password in the error text that
`/health` showed and the logs kept ("Port could not be cast to integer value as 'Sup3rS3cret'").
"""

import io
import logging

import pytest

from django_tools import env
from django_tools.connectivity import Unreachable, probe_rabbitmq, probe_redis
from django_tools.observability.logs import JsonFormatter, ScrubSecretsFilter

pytestmark = pytest.mark.django_db

SECRET = "Sup3rS3cret"
#: A password with each character that breaks URL parsing, before and after the secret part.
PASSWORDS = [f"x/{SECRET}", f"{SECRET}/x", f"{SECRET}?x", f"{SECRET}#x", f"a?b#{SECRET}",
             f"p@{SECRET}", f"ab/{SECRET}"]  # fmt: skip


def leaks(text: str, password: str) -> bool:
    """Whether `text` shows the password or any piece of it a parser could cut off (a short
    piece counts when quoted, as the parsers quote it: "ab" is in "database")."""
    pieces = {password, *password.replace("?", "/").replace("#", "/").replace("@", "/").split("/")}
    return any(
        piece in text if len(piece) >= 4 else f"'{piece}'" in text for piece in pieces if piece
    )


@pytest.mark.parametrize("password", PASSWORDS)
def test_scrub_hides_every_piece_of_a_password_a_parser_quotes(password):
    url = f"amqp://admin:{password}@localhost:5672/"
    try:
        probe_rabbitmq(url, timeout=0.5)
        message = ""
    except Unreachable as exc:
        message = str(exc)
    assert not leaks(message, password), message
    # What the parser says on its own, cleaned by the one function every output goes through.
    import pika

    try:
        said = f"parsed, port {pika.URLParameters(url).port}"
    except ValueError as exc:
        said = str(exc)
    assert not leaks(env.scrub(f"{url}: {said}", [url]), password)


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_redis_password_never_shows_either(password):
    url = f"redis://:{password}@127.0.0.1:1/0"
    with pytest.raises(Unreachable) as raised:
        probe_redis(url, timeout=0.5)
    assert not leaks(str(raised.value), password), raised.value


@pytest.mark.parametrize("password", PASSWORDS)
def test_an_unreachable_reason_is_scrubbed_whoever_raises_it(password):
    """A probe that says what the parser said without scrubbing it (as a new probe might):
    the reason shown on /health is clean all the same."""
    import pika

    url = f"amqp://admin:{password}@localhost:5672/"
    try:
        said = f"port {pika.URLParameters(url).port}"
    except ValueError as exc:
        said = str(exc)
    reason = str(Unreachable(f"invalid RABBITMQ_URL {url}: {said}"))
    assert not leaks(reason, password), reason


def test_scrub_masks_secret_variables_and_urls_in_any_text(monkeypatch):
    monkeypatch.setenv("PRODUTOS_API_KEY", "k3y-that-is-long-enough")
    monkeypatch.setenv("RABBITMQ_URL", f"amqp://u:{SECRET}/x@h:5672/")
    text = env.scrub(
        f"key k3y-that-is-long-enough, url redis://user:pw-9931@host/0, fragment {SECRET}"
    )
    assert text == "key ***, url redis://user:***@host/0, fragment ***"
    # The lab's public defaults are no secret: messages about them stay readable.
    assert env.scrub("apis up: user admin") == "apis up: user admin"


@pytest.mark.parametrize("password", PASSWORDS)
def test_health_never_shows_a_password(client, settings, password):
    settings.RABBITMQ_URL = f"amqp://admin:{password}@127.0.0.1:1/"
    settings.REDIS_URL = f"redis://:{password}@127.0.0.1:1/0"
    response = client.get("/health")
    assert response.status_code == 200
    body = response.content.decode()
    assert response.json()["status"] == "degraded"
    assert not leaks(body, password), body


def _log_with_handler(formatter: logging.Formatter, record_it) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(ScrubSecretsFilter())
    logger = logging.getLogger("test.secrets")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        record_it(logger)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue()


@pytest.mark.parametrize("formatter", [logging.Formatter("%(message)s"), JsonFormatter("t")])
def test_log_lines_and_tracebacks_are_scrubbed(monkeypatch, formatter):
    url = f"amqp://admin:ab/{SECRET}@localhost:5672/"
    monkeypatch.setenv("RABBITMQ_URL", url)

    def record_it(logger):
        import pika

        logger.warning("connecting to %s", url)
        try:
            pika.URLParameters(url).port  # noqa: B018
        except ValueError:
            logger.exception("cannot parse")

    output = _log_with_handler(formatter, record_it)
    assert "cannot parse" in output and "ValueError" in output
    assert not leaks(output, f"ab/{SECRET}"), output


def test_the_services_log_handler_scrubs(settings):
    from django.conf import settings as django_settings

    filters = django_settings.LOGGING["handlers"]["console"]["filters"]
    assert "scrub" in filters
    assert django_settings.LOGGING["filters"]["scrub"]["()"].endswith("ScrubSecretsFilter")
