"""The replica's side of the admin: tombstones and the last applied state (read-only), and the
dead-letter page (`DeadLetterAdmin`, at `cqrs_replica/deadletter/`: "Mensagens mortas" in the
index and the sidebar, through the `DeadLetter` proxy model; the old address,
`replicastate/dead-letters/`, redirects there).

The dead-letter page reads the broker's dead-letter queue through
django_tools.replica.dead_letters, as `manage.py cqrs_dead_letters` does: viewing moves each
letter to the tail of the queue (nothing changes, no delivery is counted) under the readers'
lock, so a viewer holds nothing and an action confirmed meanwhile finds every letter the
operator saw; `retry` and `purge` act only on the letters chosen by their identity
(`dead_letters.letter_id`), after a confirmation step, and say what they did, also when they
stop halfway. Viewing needs staff and the view permission of "mensagem morta" (or, as before,
of "estado da réplica"); acting needs `has_dead_letter_action_permission` (superusers). A broker
that is down makes the page say so in one line, in Portuguese like the rest.

Generic: any replica with `django_tools.replica` installed gets these pages.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from pika.exceptions import ProbableAccessDeniedError, ProbableAuthenticationError

from django_tools.admin import ReadOnlyModelAdmin, folded_json, short_id, short_time
from django_tools.env import redact_url, scrub
from django_tools.replica import dead_letters
from django_tools.replica.failures import (
    DEAD_REASONS,
    EXHAUSTED,
    PERMANENT,
    REDELIVERED,
    REFUSED,
    UNAUTHENTICATED,
    UNDECODABLE,
)
from django_tools.replica.models import DeadLetter, ReplicaState, Tombstone
from django_tools.replica.topology import MigrationInProgress, QueueTypeMismatch, Topology

#: Letters shown on one page (every letter is read in each view, moved to the queue's tail).
PAGE_LIMIT = 100
#: Seconds the page waits for the broker before saying it is unreachable.
BROKER_TIMEOUT = 3.0
#: Characters of a body shown in its folded line.
PREVIEW_CHARS = 40
#: Each reason: (what the column and the filter say, what it means).
REASONS = {
    PERMANENT: ("permanente", "não pode ser aplicada como está"),
    EXHAUSTED: ("tentativas esgotadas", "falha transitória que não passou"),
    UNDECODABLE: ("ilegível", "propriedades AMQP que não se decodificam"),
    UNAUTHENTICATED: ("sem assinatura válida", "CQRS_SIGNING_KEY"),
    REDELIVERED: ("derrubou o worker", "a cada entrega; CQRS_MAX_DELIVERIES"),
    REFUSED: ("recusada pelo modelo", "should_retry_cqrs disse não"),
}
REASON_LABELS = {reason: f"{name} ({meaning})" for reason, (name, meaning) in REASONS.items()}
#: What each error class of the replica means, in the operator's words (the class and the
#: message as the consumer recorded them stay beside it).
ERROR_LABELS = {
    "InvalidMessage": "mensagem inválida",
    "InvalidData": "dados inválidos",
    "UnknownCqrsId": "CQRS_ID desconhecido",
    "ExpiredMessage": "mensagem expirada",
    "Unauthenticated": "sem assinatura válida",
    "UndecodableMessage": "propriedades ilegíveis",
    "CrashLooping": "derrubou o worker",
    "OperationalError": "erro do banco",
    "InterfaceError": "erro de conexão com o banco",
    "IntegrityError": "violação de integridade no banco",
    "DatabaseError": "erro do banco",
}
ACTION_LABELS = {
    dead_letters.RETRY: "Reenviar para a fila da réplica (tentativas zeradas)",
    dead_letters.PURGE: "Descartar (apagar da fila de mensagens mortas)",
}
SELECTED = "_selected_letter"


@admin.register(Tombstone)
class TombstoneAdmin(ReadOnlyModelAdmin):
    list_display = ("cqrs_id", "instance_pk", "cqrs_revision", "apagada_em")
    list_filter = ("cqrs_id",)
    search_fields = ("=instance_pk",)
    ordering = ("-deleted_at",)

    @admin.display(description="apagada em", ordering="deleted_at")
    def apagada_em(self, tombstone: Tombstone) -> str:
        return short_time(tombstone.deleted_at)


@admin.register(ReplicaState)
class ReplicaStateAdmin(ReadOnlyModelAdmin):
    list_display = (
        "cqrs_id",
        "instance_pk",
        "revision",
        "signal_type",
        "hora_no_master",
        "aplicado_em",
        "version",
        "correlacao",
    )
    ordering = ("cqrs_id",)

    @admin.display(description="hora no master", ordering="master_updated_at")
    def hora_no_master(self, state: ReplicaState) -> str:
        return short_time(state.master_updated_at)

    @admin.display(description="aplicado em", ordering="applied_at")
    def aplicado_em(self, state: ReplicaState) -> str:
        return short_time(state.applied_at)

    @admin.display(description="correlação")
    def correlacao(self, state: ReplicaState):
        return short_id(state.correlation_id)

    def get_urls(self):
        # The dead-letter page's first address, kept for bookmarks and older banners.
        name = f"{self.opts.app_label}_{self.opts.model_name}_dead_letters"
        view = self.admin_site.admin_view(self.old_dead_letters_address)
        return [path("dead-letters/", view, name=name), *super().get_urls()]

    def old_dead_letters_address(self, request):
        url = reverse(f"{self.admin_site.name}:{DEAD_LETTERS_URL_NAME}")
        query = request.META.get("QUERY_STRING")
        response = HttpResponseRedirect(f"{url}?{query}" if query else url)
        response.status_code = 307  # a POST stays a POST
        return response


DEAD_LETTERS_URL_NAME = f"{DeadLetter._meta.app_label}_{DeadLetter._meta.model_name}_changelist"


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyModelAdmin):
    """The dead-letter page as the list of "Mensagens mortas": in the index and the sidebar like
    any model, its rows read from the broker's dead-letter queue (the proxy model has none)."""

    def get_urls(self):
        view = self.admin_site.admin_view(self.changelist_view)  # staff only, CSRF-checked
        return [path("", view, name=DEAD_LETTERS_URL_NAME)]

    def has_view_permission(self, request, obj=None) -> bool:
        """Its own view permission, or (as before it had one) the replica state's."""
        user = request.user
        if super().has_view_permission(request, obj):
            return True
        state = ReplicaState._meta
        return user.is_active and user.has_perm(f"{state.app_label}.view_{state.model_name}")

    def has_module_permission(self, request) -> bool:
        return self.has_view_permission(request)

    def has_dead_letter_action_permission(self, request) -> bool:
        """Who may retry or purge dead letters: superusers (override to widen)."""
        return request.user.is_active and request.user.is_superuser

    def dead_letters_url(self, **query) -> str:
        url = reverse(f"{self.admin_site.name}:{DEAD_LETTERS_URL_NAME}")
        query = {key: value for key, value in query.items() if value}
        return f"{url}?{urlencode(query)}" if query else url

    def changelist_view(self, request, extra_context=None):
        return self.dead_letters_view(request)

    def dead_letters_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        topology = Topology.from_settings()
        reason = request.GET.get("reason")
        filters = {
            "cqrs_id": (request.GET.get("cqrs_id") or "").strip() or None,
            "reason": reason if reason in DEAD_REASONS else None,
        }
        if request.method == "POST":
            return self._dead_letters_post(request, topology, filters)
        context = {"filters": filters, "limit": PAGE_LIMIT}
        try:
            listing = dead_letters.browse(
                topology, **filters, limit=PAGE_LIMIT, timeout=BROKER_TIMEOUT
            )
        except READ_ERRORS as exc:
            context["broker_error"] = broker_problem(exc)
        else:
            context["listing"] = listing
            context["rows"] = [letter_row(letter) for letter in listing.letters]
            context["notes"] = listing_notes(listing, topology)
        return self._render(request, "dead_letters.html", "Mensagens mortas", context)

    def _dead_letters_post(self, request, topology: Topology, filters: dict):
        if not self.has_dead_letter_action_permission(request):
            raise PermissionDenied
        back = HttpResponseRedirect(self.dead_letters_url(**filters))
        action = request.POST.get("action")
        ids = request.POST.getlist(SELECTED)
        if action not in dead_letters.ACTIONS:
            messages.error(request, "Escolha uma ação: reenviar ou descartar.")
            return back
        if not ids:
            messages.warning(request, "Nenhuma mensagem selecionada: nada foi feito.")
            return back
        if request.POST.get("confirm") != "yes":
            # The confirmation step: the chosen letters read again (nothing changes yet).
            context = {"filters": filters, "action": action, "ids": ids}
            context["action_label"] = ACTION_LABELS[action]
            context["destructive"] = action == dead_letters.PURGE
            try:
                listing = dead_letters.browse(topology, ids=ids, timeout=BROKER_TIMEOUT)
            except READ_ERRORS as exc:
                context["broker_error"] = broker_problem(exc)
            else:
                context["rows"] = [letter_row(letter) for letter in listing.letters]
                context["missing"] = len(ids) - len(listing.letters)
            return self._render(request, "dead_letters_confirm.html", "Confirmar", context)
        try:
            outcome = dead_letters.act_on(topology, action, ids, timeout=BROKER_TIMEOUT)
        except READ_ERRORS as exc:
            messages.error(request, f"Nada foi feito: {broker_problem(exc)}")
            return back
        level, text = outcome_message(outcome, len(ids))
        messages.add_message(request, level, text)
        return back

    def _render(self, request, template: str, title: str, context: dict):
        opts = self.opts
        context = {
            **self.admin_site.each_context(request),
            "opts": opts,
            "app_label": opts.app_label,
            "title": title,
            "queue": Topology.from_settings().dead_letter_queue,
            "reasons": [(reason, REASON_LABELS[reason]) for reason in DEAD_REASONS],
            "replica_states_url": reverse(
                f"{self.admin_site.name}:{ReplicaState._meta.app_label}_"
                f"{ReplicaState._meta.model_name}_changelist"
            ),
            "actions": list(ACTION_LABELS.items()),
            "can_act": self.has_dead_letter_action_permission(request),
            "page_url": self.dead_letters_url(**context.get("filters", {})),
            "selected_name": SELECTED,
            **context,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, f"admin/{opts.app_label}/{template}", context)


#: What reading the dead-letter queue may raise that the page says in a line (never a 500).
READ_ERRORS = (*dead_letters.BROKER_ERRORS, dead_letters.ReaderBusy, QueueTypeMismatch)
DONE_LABELS = {
    dead_letters.RETRY: "reenviada(s) para a fila da réplica, tentativas zeradas",
    dead_letters.PURGE: "descartada(s)",
}


def outcome_message(outcome: dead_letters.Outcome, asked: int) -> tuple[int, str]:
    """(message level, text): exactly what an action did, also when it stopped halfway."""
    done = len(outcome.done)
    text = f"{done} mensagem(ns) {DONE_LABELS[outcome.action]}"
    if outcome.error is None:
        if outcome.missing:
            text += f"; {len(outcome.missing)} já não estava(m) na fila"
        return messages.SUCCESS, text + "."
    text += (
        f"; depois parou: {broker_problem(outcome.error)}. As outras {asked - done} "
        "selecionada(s) continuam na fila de mensagens mortas"
    )
    if not isinstance(outcome.error, dead_letters.NotActed):
        text += (
            " (a que estava em curso quando a conexão caiu pode ter sido reenviada e também "
            "continuar lá: reaplicar é inofensivo)"
        )
    return messages.ERROR, text + ". Nada se perdeu: veja a página e tente de novo."


def listing_notes(listing: dead_letters.Listing, topology: Topology) -> list[str]:
    """What the operator must know about the queues beside the letters."""
    notes = []
    if not listing.exists:
        note = f"A fila {listing.queue} não existe agora"
        if listing.migrating is not None:
            note += (
                f": uma migração de tipo (cqrs_queues migrate) está em andamento ou parou no "
                f"meio, e {listing.queue}{dead_letters.MIGRATING_SUFFIX} guarda "
                f"{listing.migrating} mensagem(ns); rode a migração de novo para terminá-la"
            )
        notes.append(note + ".")
    if listing.mismatch:
        notes.append(
            f"A fila {listing.mismatch} existe com outro tipo (ou outros argumentos) que "
            f"CQRS_QUEUE_TYPE={topology.queue_type} pede: uma migração de tipo em andamento ou "
            f"não terminada. Pare os consumidores e rode `manage.py cqrs_queues migrate --to "
            f"{topology.queue_type}` (CQRS.md), ou ajuste CQRS_QUEUE_TYPE. As mensagens abaixo "
            "são lidas mesmo assim."
        )
    return notes


def broker_problem(exc: BaseException) -> str:
    """One line: which broker, and what went wrong (never its password)."""
    if isinstance(exc, MigrationInProgress):  # the broker answers; its queues are moving
        return f"Migração das filas em andamento: {migration_text(exc)}"
    if isinstance(exc, dead_letters.ReaderBusy):
        return (
            "outra leitura da fila de mensagens mortas (outro operador, um comando "
            "cqrs_dead_letters ou uma migração de fila) não terminou a tempo; tente de novo "
            "em instantes"
        )
    if isinstance(exc, dead_letters.NotActed):
        if exc.why == "missing":
            return f"a fila {exc.queue} não existe agora (migração de tipo em andamento?)"
        return f"a fila {exc.queue} recusou a mensagem (cheia?)"
    if isinstance(exc, QueueTypeMismatch):
        return f"filas com tipos diferentes do configurado: {mismatch_text(exc)}"
    url = redact_url(settings.CQRS["url"])
    # A page: no password, nor a piece of one a URL parser quoted (env.scrub).
    return scrub(f"RabbitMQ inacessível em {url}: {connection_text(exc)}", [settings.CQRS["url"]])


def migration_text(exc: MigrationInProgress) -> str:
    target = getattr(exc, "queue_type", None)
    if target is None:
        return str(exc)
    return (
        f"a fila {exc.queue} está sendo migrada para {target} (fila marcadora {exc.marker}); "
        f"nada a declara nem consome até `manage.py cqrs_queues migrate --to {target}` "
        "terminar (rode de novo se foi interrompida)"
    )


def mismatch_text(exc: QueueTypeMismatch) -> str:
    wanted = getattr(exc, "queue_type", None)
    if wanted is None:
        return str(exc)
    return (
        f"a fila {exc.queue} existe como {exc.actual}, mas CQRS_QUEUE_TYPE={wanted}. O RabbitMQ "
        f"não muda o tipo de uma fila: pare os consumidores e rode `manage.py cqrs_queues "
        f"migrate --to {wanted}`, ou ponha CQRS_QUEUE_TYPE={exc.actual}"
    )


def connection_text(exc: BaseException) -> str:
    """Why the broker could not be reached, in the page's words (pika's own text, English,
    stays in parentheses when it is not one of the usual causes)."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = repr(exc) + " " + detail
    if isinstance(exc, ProbableAuthenticationError) or "ACCESS_REFUSED" in text:
        return "usuário ou senha recusados pelo broker"
    if isinstance(exc, ProbableAccessDeniedError) or "NOT_ALLOWED" in text:
        return "o usuário não tem acesso a esse vhost"
    if "ConnectionRefused" in text or "Connection refused" in text:
        return "conexão recusada (nada escuta nesse endereço?)"
    if "gaierror" in text or "Name or service not known" in text:
        return "nome do host desconhecido"
    if isinstance(exc, TimeoutError) or "timed out" in text.lower() or "Timeout" in text:
        return f"sem resposta em {BROKER_TIMEOUT:.0f} s"
    return f"erro de conexão ({detail})"


def letter_row(letter: dead_letters.DeadLetter) -> dict:
    """What a line of the page shows of a letter."""
    report = letter.report
    payload = report.payload if isinstance(report.payload, dict) else {}
    body = letter.body.decode("utf-8", errors="replace")
    error_class = report.error_class or ""
    error_name = error_class.rsplit(".", 1)[-1]
    reason = report.dead_reason or ""
    name, meaning = REASONS.get(reason, (reason, ""))
    preview = " ".join(body[:PREVIEW_CHARS].split())
    return {
        "id": letter.id,
        "cqrs_id": payload.get("cqrs_id") or "",
        "signal_type": payload.get("signal_type") or "",
        "instance_pk": payload.get("instance_pk", ""),
        "reason": reason,
        "reason_label": name,
        "reason_meaning": meaning,
        "error_class": error_class,
        "error_name": error_name,
        "error_label": ERROR_LABELS.get(error_name, error_name),
        "error": report.error or "",
        "retries": report.retries,
        "first_failure": report.first_failure or "",
        "first_failure_short": short_failure_time(report.first_failure),
        "last_failure": report.last_failure or "",
        "last_failure_short": short_failure_time(report.last_failure),
        "body": folded_json(
            letter.body, preview + ("…" if len(body) > PREVIEW_CHARS else "") or "(vazio)"
        ),
    }


def short_failure_time(text: str | None) -> str:
    """An ISO 8601 failure time as `2026-01-01 10:01:02` (the full text stays in a tooltip);
    anything else as it is."""
    if not text:
        return ""
    try:
        return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return text
