"""URL layout both services share: admin, the ninja API under /api/, /health (and /health/live,
/health/ready), JSON errors.

A service's ROOT_URLCONF does `urlpatterns = service_urlpatterns(api)` and re-exports the
handlers below (Django looks them up on the ROOT_URLCONF module).
"""

from django.contrib import admin
from django.urls import URLPattern, URLResolver, path
from ninja import NinjaAPI

from django_tools.chassis.health import health_view, live_view, ready_view
from django_tools.observability.metrics import metrics_view

handler400 = "django_tools.chassis.views.json_bad_request"
handler404 = "django_tools.chassis.views.json_not_found"
handler500 = "django_tools.chassis.views.json_server_error"


def service_urlpatterns(api: NinjaAPI) -> list[URLPattern | URLResolver]:
    return [
        path("admin/", admin.site.urls),
        path("api/", api.urls),
        path("health", health_view, name="health"),
        path("health/live", live_view, name="health-live"),
        path("health/ready", ready_view, name="health-ready"),
        path("metrics", metrics_view, name="metrics"),
    ]
