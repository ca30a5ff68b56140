from django_tools.chassis.ninja import build_api
from django_tools.outbox.api import router as outbox_router
from produto.api import router as produtos_router

api = build_api(
    title="API Produtos",
    version="1.0.0",
    description="Master service: CRUD of Produto. Every change is published through django-cqrs.",
)
api.add_router("/produtos/", produtos_router)
api.add_router("/outbox/", outbox_router)
