"""pika's patches (`pika_writes`, `amqp_properties`) replace private pieces of pika: they are
installed by the processes that want them, once, and only on a pika they were written for.

If `test_this_pika_is_one_the_patches_were_written_for` fails after an upgrade of pika: read
both patches against the new pika's `adapters/utils/io_services_utils.py` (`_produce`,
`_tx_buffers`) and `frame.py`/`spec.py` (`spec.props`, `BasicProperties.decode`), then widen
`django_tools.pika_support.SUPPORTED` and the pin in django_tools/pyproject.toml together.
"""

import os
import subprocess  # nosec B404 # runs this interpreter on a fixed script
import sys
from pathlib import Path

import pika
import pytest
from pika import spec
from pika.adapters.utils import io_services_utils

from django_tools import amqp_properties, pika_support, pika_writes
from django_tools.pika_support import UnsupportedPika

# No database in it (pika's patches): CI runs it on SQLite only.
pytestmark = pytest.mark.any_database


def test_this_pika_is_one_the_patches_were_written_for():
    low, high = pika_support.SUPPORTED
    assert low <= pika_support.version() < high, (
        f"pika {pika.__version__} is outside the range pika's patches were written for "
        f"({low} to below {high}): read them again (see this module's docstring)"
    )
    pika_writes.supported()  # raises UnsupportedPika, naming what is missing
    amqp_properties.supported()


@pytest.mark.parametrize("version", ["1.2.3", "2.0.0", "2.0.0b1", "10.1", "unknown"])
def test_a_pika_outside_the_range_is_refused_loudly(version):
    with pytest.raises(UnsupportedPika, match="pika"):
        pika_support.require("a patch", text=version)


def test_a_pika_without_the_private_attribute_a_patch_replaces_is_refused():
    class Transport:
        pass

    with pytest.raises(UnsupportedPika, match=r"Transport\._produce"):
        pika_support.require("a patch", (Transport, "_produce"), text="1.4.0")


def test_pika_writes_refuses_a_produce_that_no_longer_sends_the_buffers(monkeypatch):
    def produce(self):
        return None

    monkeypatch.setattr(io_services_utils._AsyncTransportBase, "_produce", produce)
    monkeypatch.setattr(pika_writes, "_original_produce", None)
    with pytest.raises(UnsupportedPika, match="_tx_buffers"):
        pika_writes.install()
    assert io_services_utils._AsyncTransportBase._produce is produce  # left as it was


def test_installing_twice_is_installing_once():
    pika_writes.install()
    pika_writes.install()
    assert pika_writes.installed()
    # Wrapping our own wrapper would recurse for ever on the first send.
    assert pika_writes._original_produce is not pika_writes._joined_produce
    amqp_properties.install()
    amqp_properties.install()
    assert spec.props[spec.BasicProperties.INDEX] is amqp_properties.TolerantBasicProperties


def test_importing_the_relay_the_consumer_or_the_celery_tasks_patches_nothing():
    """Only `AmqpRelay.run` and a `cqrs_consume` worker install them: a web or Celery worker
    that imports these modules keeps pika as it is, and the Celery task does not import the
    consumer at all."""
    script = """
import sys
import django
django.setup()
from django_tools import amqp_properties, pika_writes
import django_tools.replica.tasks
assert "django_tools.replica.consumer" not in sys.modules, "tasks imports the consumer"
import django_tools.outbox.relays
import django_tools.outbox.relays.amqp
import django_tools.outbox.relays.celery
import django_tools.replica.consumer
import django_tools.replica.transport
assert not pika_writes.installed(), "pika_writes installed on import"
assert not amqp_properties.installed(), "amqp_properties installed on import"
print("untouched")
"""
    tests = Path(__file__).parent
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "django_tools_test_settings",
        "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(  # nosec B603 # this interpreter, a fixed script
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "untouched"
