"""The outbox in the admin of a master: every event with its state and age, a backlog summary
above the list, and `republish` (the selected events sent again, as new pending rows; replicas
ignore what they already have, by revision). Also `OutboxSyncAdminMixin`, for a
master model's own admin: django-cqrs's resync action, whose syncs go through the outbox.

Generic: any master with `django_tools.outbox` installed gets the outbox page; a master model's
admin adds the mixin."""

from __future__ import annotations

from dj_cqrs.admin import CQRSAdminMasterSyncMixin
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.utils import timezone

from django_tools.admin import ReadOnlyModelAdmin, folded_json, format_age, short_id, short_time
from django_tools.outbox import services
from django_tools.outbox.models import OutboxEvent
from django_tools.outbox.selectors import outbox_backlog

PENDING, PUBLISHED = "pendente", "publicado"


class StateFilter(admin.SimpleListFilter):
    title = "estado"
    parameter_name = "estado"

    def lookups(self, request, model_admin):
        return [(PENDING, "pendente"), (PUBLISHED, "publicado")]

    def queryset(self, request, queryset):
        if self.value() == PENDING:
            return queryset.filter(published_at__isnull=True)
        if self.value() == PUBLISHED:
            return queryset.filter(published_at__isnull=False)
        return queryset


def titled(title: str):
    """Django's filter of a field's values, under a title of our own."""

    class Titled(admin.AllValuesFieldListFilter):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.title = title

    return Titled


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyModelAdmin):
    list_display = (
        "id",
        "tipo",
        "cqrs",
        "instancia",
        "revisao",
        "estado",
        "idade",
        "criado_em",
        "publicado_em",
        "correlacao",
    )
    list_filter = (StateFilter, ("signal_type", titled("sinal")), ("cqrs_id", titled("CQRS_ID")))
    search_fields = ("=instance_pk", "=correlation_id", "=cqrs_id")
    ordering = ("-id",)
    list_per_page = 50
    # No COUNT(*) of the whole table on every page: the outbox of a busy master is big.
    show_full_result_count = False
    actions = ("republish",)
    fields = (
        "id",
        "signal_type",
        "cqrs_id",
        "instance_pk",
        "revision",
        "routing_key",
        "correlation_id",
        "contexto",
        "created_at",
        "published_at",
        "corpo",
    )
    readonly_fields = fields

    @admin.display(description="sinal", ordering="signal_type")
    def tipo(self, event: OutboxEvent) -> str:
        return event.signal_type

    @admin.display(description="CQRS_ID", ordering="cqrs_id")
    def cqrs(self, event: OutboxEvent) -> str:
        return event.cqrs_id

    @admin.display(description="instância (pk)")
    def instancia(self, event: OutboxEvent) -> str:
        return event.instance_pk

    @admin.display(description="revisão")
    def revisao(self, event: OutboxEvent):
        return event.revision

    @admin.display(description="estado", ordering="published_at")
    def estado(self, event: OutboxEvent) -> str:
        return PUBLISHED if event.published_at else PENDING

    @admin.display(description="idade", ordering="-created_at")
    def idade(self, event: OutboxEvent) -> str:
        return format_age((timezone.now() - event.created_at).total_seconds())

    @admin.display(description="criado em", ordering="created_at")
    def criado_em(self, event: OutboxEvent) -> str:
        return short_time(event.created_at)

    @admin.display(description="publicado em", ordering="published_at")
    def publicado_em(self, event: OutboxEvent) -> str:
        return short_time(event.published_at)

    @admin.display(description="correlação")
    def correlacao(self, event: OutboxEvent):
        return short_id(event.correlation_id)

    @admin.display(description="corpo (JSON)")
    def corpo(self, event: OutboxEvent):
        return folded_json(event.body, f"{len(event.body.encode())} bytes: ver o corpo")

    @admin.display(description="contexto de rastreamento")
    def contexto(self, event: OutboxEvent):
        if not event.trace_context:
            return "—"
        return folded_json(event.trace_context, "ver o contexto (traceparent)")

    @admin.action(
        description="Republicar os eventos selecionados (como novos eventos pendentes)",
        permissions=["republish"],
    )
    def republish(self, request, queryset) -> None:
        # New rows, never the old ones back to pending: see services.republish.
        new_ids = services.republish(queryset.values_list("id", flat=True))
        self.message_user(
            request,
            f"{len(new_ids)} evento(s) de volta a pendente, como novo(s) evento(s) "
            f"{', '.join(f'#{pk}' for pk in new_ids)}: o relay vai publicá-los de novo "
            "(as réplicas ignoram o que já têm, pela revisão).",
            messages.SUCCESS,
        )

    def has_republish_permission(self, request) -> bool:
        """Republishing changes rows: the model's change permission (superusers have it)."""
        codename = get_permission_codename("change", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    def changelist_view(self, request, extra_context=None):
        backlog = outbox_backlog()
        last = backlog.last_published_at
        summary = {
            "count": backlog.count,
            "oldest_created_at": backlog.oldest_created_at,
            "oldest_age": format_age(backlog.oldest_age_seconds)
            if backlog.oldest_created_at
            else None,
            "last_published_at": last,
            "last_published_age": format_age((timezone.now() - last).total_seconds())
            if last
            else None,
        }
        return super().changelist_view(request, {**(extra_context or {}), "backlog": summary})


class OutboxSyncAdminMixin(CQRSAdminMasterSyncMixin):
    """django-cqrs's `CQRSAdminMasterSyncMixin` (the action that resyncs the selected rows of a
    master model), in Portuguese, for users who may change the model. With the outbox transport
    each sync is an outbox row first, and the relay publishes it."""

    @admin.action(
        description="Sincronizar %(verbose_name_plural)s selecionados via CQRS (pelo outbox)",
        permissions=["change"],
    )
    def sync_items(self, request, queryset) -> None:
        failed = [item for item in self._cqrs_sync_queryset(queryset) if not item.cqrs_sync()]
        total = len(queryset)
        level = messages.WARNING if failed else messages.SUCCESS
        text = f"{total - len(failed)} sincronização(ões) no outbox; o relay as publica."
        if failed:
            text += f" {len(failed)} falharam: {', '.join(map(str, failed))}"
        self.message_user(request, text, level)
