"""HTTP layer of Produto: validation and status codes only; work happens in services and
selectors."""

import secrets

from django.conf import settings
from django.http import HttpRequest
from ninja import Path, Query, Router, Status
from ninja.pagination import paginate
from ninja.security import APIKeyHeader

from django_tools.chassis.ninja import BoundedLimitOffsetPagination, ErrorOut, PathId
from produto import selectors, services
from produto.schemas import ProdutoFilters, ProdutoIn, ProdutoOut, ProdutoPatch


class ApiKey(APIKeyHeader):
    param_name = "X-API-Key"

    def authenticate(self, request: HttpRequest, key: str | None) -> bool:
        expected = settings.PRODUTOS_API_KEY
        if not expected:
            return True  # no key configured: local lab mode, announced at start-up
        return key is not None and secrets.compare_digest(key.encode(), expected.encode())


router = Router(tags=["produtos"])
write_auth = ApiKey()


@router.get("/", response={200: list[ProdutoOut], 422: ErrorOut})
@paginate(BoundedLimitOffsetPagination)
def list_produtos(request: HttpRequest, filters: Query[ProdutoFilters]):
    return selectors.produto_list(ativo=filters.ativo, q=filters.q)


@router.post(
    "/", response={201: ProdutoOut, 401: ErrorOut, 409: ErrorOut, 422: ErrorOut}, auth=write_auth
)
def create_produto(request: HttpRequest, payload: ProdutoIn):
    return Status(201, services.produto_create(**payload.model_dump()))


@router.get("/{produto_id}", response={200: ProdutoOut, 404: ErrorOut, 422: ErrorOut})
def get_produto(request: HttpRequest, produto_id: Path[PathId]):
    return selectors.produto_get(produto_id=produto_id)


@router.put(
    "/{produto_id}",
    response={200: ProdutoOut, 401: ErrorOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut},
    auth=write_auth,
)
def replace_produto(request: HttpRequest, produto_id: Path[PathId], payload: ProdutoIn):
    return services.produto_update(produto_id=produto_id, data=payload.model_dump())


@router.patch(
    "/{produto_id}",
    response={200: ProdutoOut, 401: ErrorOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut},
    auth=write_auth,
)
def update_produto(request: HttpRequest, produto_id: Path[PathId], payload: ProdutoPatch):
    return services.produto_update(
        produto_id=produto_id, data=payload.model_dump(exclude_unset=True)
    )


@router.delete(
    "/{produto_id}",
    response={204: None, 401: ErrorOut, 404: ErrorOut, 422: ErrorOut},
    auth=write_auth,
)
def delete_produto(request: HttpRequest, produto_id: Path[PathId]):
    services.produto_delete(produto_id=produto_id)
    return Status(204, None)
