"""The Celery app of api_feed.

`celery -A api_feed worker` runs its tasks, `celery -A api_feed beat` their schedule.
"""

from django_tools.chassis.celery import make_celery

app = make_celery("feed", "api_feed.settings")
