"""The Celery app of api_produtos.

`celery -A api_produtos worker` runs its tasks, `celery -A api_produtos beat` their schedule.
"""

from django_tools.chassis.celery import make_celery

app = make_celery("produtos", "api_produtos.settings")
