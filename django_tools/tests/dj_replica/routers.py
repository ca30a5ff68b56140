"""The test settings' database router: `BookElsewhere` lives in the `elsewhere` database;
everything else in `default`. Every app's tables exist in both (migrate runs there too), as
django_tools.replica's tombstones and state must be where a replica model's rows are."""


class ElsewhereRouter:
    def _database(self, model) -> str | None:
        return getattr(model, "DATABASE", None) if model._meta.app_label == "dj_replica" else None

    def db_for_read(self, model, **hints) -> str | None:
        return self._database(model)

    def db_for_write(self, model, **hints) -> str | None:
        return self._database(model)
