from django.urls import path
from ninja import Router

from django_tools.chassis.health import health_view, live_view, ready_view
from django_tools.chassis.ninja import build_api
from django_tools.observability.metrics import metrics_view
from django_tools.outbox.api import router as outbox_router
from django_tools.replica.api import router as replication_router

api = build_api(title="t", version="1", description="d")
router = Router()
api.add_router("/", router)
# Where a master and a replica service mount the apps' routers.
api.add_router("/outbox/", outbox_router)
api.add_router("/replication/", replication_router)

urlpatterns = [
    path("api/", api.urls),
    path("health", health_view),
    path("health/live", live_view),
    path("health/ready", ready_view),
    path("metrics", metrics_view),
]
