from api_produtos.api import api
from django_tools.chassis.urls import handler400, handler404, handler500, service_urlpatterns

urlpatterns = service_urlpatterns(api)

__all__ = ["handler400", "handler404", "handler500", "urlpatterns"]
