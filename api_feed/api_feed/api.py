from django_tools.chassis.ninja import build_api
from django_tools.replica.api import router as replication_router
from feed.api import router as feed_router

api = build_api(
    title="API Feed",
    version="1.0.0",
    description="Replica service: read-only feed of the products replicated from api_produtos.",
)
api.add_router("/feed/", feed_router)
api.add_router("/replication/", replication_router)
