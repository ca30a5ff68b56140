from django.urls import path
from ninja import Router

from django_tools.health import health_view
from django_tools.ninja import build_api
from django_tools.observability.metrics import metrics_view

api = build_api(title="t", version="1", description="d")
router = Router()
api.add_router("/", router)

urlpatterns = [
    path("api/", api.urls),
    path("health", health_view),
    path("metrics", metrics_view),
]
