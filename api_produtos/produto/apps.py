from django.apps import AppConfig
from django.conf import settings
from django.core import checks


class ProdutoConfig(AppConfig):
    name = "produto"
    verbose_name = "Produtos"

    def ready(self) -> None:
        checks.register(check_api_key, checks.Tags.security)


def check_api_key(app_configs, **kwargs) -> list[checks.CheckMessage]:
    if settings.PRODUTOS_API_KEY:
        return []
    return [
        checks.Warning(
            "PRODUTOS_API_KEY is not set: writes to /api/produtos/ are open to anyone.",
            hint="Set PRODUTOS_API_KEY in .env.produtos or the environment to require X-API-Key.",
            id="produto.W001",
        )
    ]
