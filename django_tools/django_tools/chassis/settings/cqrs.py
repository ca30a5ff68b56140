"""django-cqrs: the exchange, which transport each role uses, the replica's retry policy and
the outbox relay's knobs. A service builds its `CQRS` dict (django-cqrs's own setting) from these.

The wire format stays django-cqrs's own (topic exchange `cqrs`, routing key = CQRS_ID, the
`TransportPayload.to_dict()` body as JSON, persistent messages), so a stock django-cqrs master or
replica can talk to these services.
"""

from __future__ import annotations

from django_tools import conf, limits

# The transports are the library's: here for the services' `CQRS` dicts (star-imported).
from django_tools.conf import OUTBOX_TRANSPORT, REPLICA_TRANSPORT, STOCK_TRANSPORT  # noqa: F401
from django_tools.env import env_bool, env_float, env_int, env_list, env_str, parse_queue_type
from django_tools.observability.correlation import cqrs_correlation_function
from django_tools.wire import DEFAULT_EXCHANGE

# The library's settings below take their defaults from the library (django_tools.conf); here
# each is read from its environment variable on top.

#: Overridable so that test runs and benchmarks get an exchange of their own and never
#: deliver into the queues of a lab running on the same broker.
CQRS_EXCHANGE = env_str("CQRS_EXCHANGE") or DEFAULT_EXCHANGE
#: Another django-cqrs transport instead of the role's own (the bench measures the stock one).
CQRS_TRANSPORT = env_str("CQRS_TRANSPORT") or None

# --- master -----------------------------------------------------------------------------

CQRS_MASTER_OPTIONS = {
    "CQRS_AUTO_UPDATE_FIELDS": False,
    # An event never expires on its way: a replica that was offline for days must still
    # converge instead of dead-lettering what it missed.
    "CQRS_MESSAGE_TTL": None,
    # The id of the request making a change travels with its event.
    "correlation_function": cqrs_correlation_function,
}

#: The relay (django_tools.outbox.relays).
OUTBOX_BATCH_SIZE = env_int("OUTBOX_BATCH_SIZE", conf.DEFAULTS["OUTBOX_BATCH_SIZE"])
#: ...and at most this many bytes of rows per batch (django_tools.limits).
OUTBOX_BATCH_BYTES = env_int("OUTBOX_BATCH_BYTES", conf.DEFAULTS["OUTBOX_BATCH_BYTES"])
OUTBOX_POLL_MAX = env_float("OUTBOX_POLL_MAX", conf.DEFAULTS["OUTBOX_POLL_MAX"])
#: PostgreSQL: the statements run for every event (the outbox write, the relay's read, the
#: replica's apply) are prepared, planned once per session; false behind a pooler in
#: transaction mode that does not keep them (PgBouncer before 1.21).
DB_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", conf.DEFAULTS["DB_PREPARED_STATEMENTS"])
#: Seconds a published batch may wait for the broker's confirms before the relay gives the
#: connection up and publishes again on a new one. Confirms come in milliseconds (a batch of
#: 500 in ~0.1 s under the bench's load); waiting while the broker says it is blocked (a
#: resource alarm) does not count.
OUTBOX_CONFIRM_TIMEOUT = env_float(
    "OUTBOX_CONFIRM_TIMEOUT", conf.DEFAULTS["OUTBOX_CONFIRM_TIMEOUT"]
)
#: PostgreSQL: seconds the active relay may go without showing it is alive before the server
#: ends its lock session (`idle_session_timeout`, PostgreSQL 14+), so a paused or frozen relay
#: hands the lock to a standby. The active relay shows it every third of this.
OUTBOX_LOCK_TIMEOUT = env_float("OUTBOX_LOCK_TIMEOUT", 15.0)
#: Published rows are kept this many seconds, then pruned by beat every OUTBOX_PRUNE_EVERY.
OUTBOX_RETENTION = env_int("OUTBOX_RETENTION", conf.DEFAULTS["OUTBOX_RETENTION"])
OUTBOX_PRUNE_EVERY = env_int("OUTBOX_PRUNE_EVERY", 60)

#: HMAC keys of the events (django_tools.signing), comma-separated: the relay signs with the
#: first, the replica accepts any. Unset: nothing signed nor checked (stock django-cqrs).
CQRS_SIGNING_KEYS = tuple(env_list("CQRS_SIGNING_KEY", []))

# --- replica ----------------------------------------------------------------------------

#: The replica's queue (its service's name when unset).
CQRS_QUEUE = env_str("CQRS_QUEUE") or None
#: quorum or classic; unset: the existing queue's type, else quorum where the broker supports
#: it (django_tools.replica.topology).
CQRS_QUEUE_TYPE = parse_queue_type(env_str("CQRS_QUEUE_TYPE"))
#: Retry n waits min(CAP, BASE * FACTOR**(n-1)), shortened by up to JITTER of itself;
#: after MAX_RETRIES retries, the dead-letter queue (django_tools.replica.policy). django-cqrs's
#: own CQRS_RETRY_DELAY and delay_queue_max_size are honoured too (replica.stock_retry).
CQRS_REPLICA_OPTIONS = {
    "CQRS_MAX_RETRIES": env_int("CQRS_MAX_RETRIES", 12),
    "retry_base": env_float("CQRS_RETRY_BASE", 1.0),
    "retry_factor": env_float("CQRS_RETRY_FACTOR", 2.0),
    "retry_cap": env_float("CQRS_RETRY_CAP", 300.0),
    "retry_jitter": env_float("CQRS_RETRY_JITTER", 0.2),
    "prefetch": env_int("CQRS_PREFETCH", 500),
    "batch_size": env_int("CQRS_BATCH_SIZE", 250),
    # Bytes, not only counts (django_tools.limits): a larger body is dead-lettered unread, and
    # the prefetch is cut so that prefetch x max_message_bytes stays within prefetch_bytes.
    "max_message_bytes": env_int("CQRS_MAX_MESSAGE_BYTES", limits.MAX_MESSAGE_BYTES),
    "prefetch_bytes": env_int("CQRS_PREFETCH_BYTES", limits.PREFETCH_BYTES),
    "queue_type": CQRS_QUEUE_TYPE,
    # Dead letters stay until someone reads them (`cqrs_dead_letters`).
    "dead_message_ttl": None,
    # A message delivered again is tried alone (django_tools.replica.probation); after this
    # many deliveries that each ended with its worker dead, it is set aside to the dead-letter
    # queue (reason `redelivered`) unread. 3: one death may be anything, three in a row with
    # the message alone is the message; each costs a worker restart, the queue waiting.
    "max_deliveries": env_int("CQRS_MAX_DELIVERIES", 3),
    # Where the probation markers are (unset: a folder of HEARTBEAT_DIR, this host's).
    "probation_dir": env_str("CQRS_PROBATION_DIR") or None,
    # `x-delivery-limit` of the replica's quorum queues, which dead-letter to the dead-letter
    # queue past it: the broker's backstop, if the set-aside above ever misses (markers lost,
    # a crash before they are written). RabbitMQ 4's own default; well above
    # CQRS_MAX_DELIVERIES, since every consumer restart or lost connection also counts a
    # delivery of each message a worker held.
    "delivery_limit": env_int("CQRS_DELIVERY_LIMIT", 20),
}
# django-cqrs's own constant wait before every retry, in place of the backoff above; only when
# set, since django-cqrs fills in its default (2 s) otherwise (django_tools.replica.stock_retry).
if env_str("CQRS_RETRY_DELAY").strip():
    CQRS_REPLICA_OPTIONS["CQRS_RETRY_DELAY"] = env_int("CQRS_RETRY_DELAY", 0)

# --- links to the broker (django_tools.broker) -------------------------------------------

#: Seconds of the AMQP heartbeat every connection of the relay, the consumer, Celery and the
#: probes negotiates. The broker then sends something at least every half of it, so a link
#: that has carried nothing for twice this long is dead (a black hole: no FIN, no RST) and is
#: given up: relay and consumer notice within 2 × this + 1 s. Lower finds dead links sooner,
#: but the broker also drops a client it has not heard from for 2–3 × this (a process frozen
#: by its host, or too starved to run its event loop).
CQRS_AMQP_HEARTBEAT = env_int("CQRS_AMQP_HEARTBEAT", 4)
#: Seconds one node of RABBITMQ_URL gets to accept a connection (TCP, then the AMQP handshake)
#: before the next node is tried: a black-holed node is skipped this quickly.
CQRS_AMQP_CONNECT_TIMEOUT = env_float("CQRS_AMQP_CONNECT_TIMEOUT", 3.0)

# --- stalls: work waiting and nothing moving ----------------------------------------------

#: Seconds with work waiting (outbox rows, messages ready in the replica's queue) and nothing
#: confirmed or applied before health and status call the relay or the consumer stalled.
CQRS_STALL_AFTER = env_float("CQRS_STALL_AFTER", 20.0)
#: Seconds after which the heartbeat file of the relay or of a consumer worker is stale: that
#: process is stuck or paused. `cqrs_consume` kills (-9) a worker silent this long and starts
#: another; the health commands report it. Workers and relay beat at least every few seconds,
#: whatever they wait for (the database, the broker, a reconnect).
HEARTBEAT_STALE_AFTER = env_float("HEARTBEAT_STALE_AFTER", 15.0)

# --- reconciliation (master) --------------------------------------------------------------

#: How often beat reconciles the master with its replica, and rows compared per page (the
#: replica's URL, RECONCILE_REPLICA_URL, is the master service's own setting).
RECONCILE_INTERVAL = env_float("RECONCILE_INTERVAL", 300.0)
RECONCILE_CHUNK = env_int("RECONCILE_CHUNK", conf.DEFAULTS["RECONCILE_CHUNK"])
