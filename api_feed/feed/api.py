"""HTTP layer of the feed (read-only)."""

from django.http import HttpRequest
from ninja import Path, Query, Router
from ninja.pagination import paginate

from django_tools.ninja import BoundedLimitOffsetPagination, ErrorOut, PathId
from feed import selectors
from feed.schemas import FeedFilters, FeedItemOut

router = Router(tags=["feed"])


@router.get("/", response={200: list[FeedItemOut], 422: ErrorOut})
@paginate(BoundedLimitOffsetPagination)
def list_feed(request: HttpRequest, filters: Query[FeedFilters]):
    return selectors.feed_list(**filters.model_dump())


@router.get("/{produto_id}", response={200: FeedItemOut, 404: ErrorOut, 422: ErrorOut})
def get_feed_item(request: HttpRequest, produto_id: Path[PathId]):
    return selectors.feed_get(produto_id=produto_id)
