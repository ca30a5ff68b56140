"""Nothing read from Redis or the broker is unpickled: Celery's tasks, results and events are
JSON only (the feed's cache has its own test in api_feed)."""

import pickle

import pytest
from kombu.exceptions import ContentDisallowed
from kombu.serialization import loads

# No database in it (serializers of Celery and kombu): CI runs it on SQLite only.
pytestmark = pytest.mark.any_database


def test_celery_accepts_json_only_for_tasks_results_and_events():
    from celery import current_app

    conf = current_app.conf
    assert conf.task_serializer == conf.result_serializer == conf.event_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert list(conf.result_accept_content) == ["json"]
    assert current_app.backend.accept == {"application/json"}


def test_a_pickled_result_or_task_is_refused_not_run():
    from celery import current_app

    body = pickle.dumps({"status": "SUCCESS", "result": 1})
    with pytest.raises(ContentDisallowed):
        loads(body, "application/x-python-serialize", "binary", accept=current_app.backend.accept)
