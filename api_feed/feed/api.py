"""HTTP layer of the feed (read-only). Responses are cached in Redis (feed/cache.py)."""

from django.http import HttpRequest
from ninja import Path, Query, Router

from django_tools.chassis.ninja import ErrorOut, PathId
from feed import cache, selectors
from feed.schemas import FeedFilters, FeedItemOut, FeedPageOut, PageQuery

router = Router(tags=["feed"])


@router.get("/", response={200: FeedPageOut, 422: ErrorOut})
def list_feed(request: HttpRequest, filters: Query[FeedFilters], page: Query[PageQuery]):
    def compute() -> dict:
        rows, count = selectors.feed_page(
            offset=page.offset, limit=page.limit, **filters.model_dump()
        )
        items = [FeedItemOut.model_validate(row).model_dump(mode="json") for row in rows]
        return {"items": items, "count": count}

    params = {**filters.model_dump(mode="json"), **page.model_dump()}
    return cache.cached("list", params, compute)


@router.get("/{produto_id}", response={200: FeedItemOut, 404: ErrorOut, 422: ErrorOut})
def get_feed_item(request: HttpRequest, produto_id: Path[PathId]):
    def compute() -> dict:
        item = selectors.feed_get(produto_id=produto_id)
        return FeedItemOut.model_validate(item).model_dump(mode="json")

    return cache.cached("item", {"id": produto_id}, compute)
