"""The byte limits of the pipeline, named once with their defaults (the settings read their
environment variables on top of these): what bounds the memory a relay batch and a consumer's
prefetch hold, whatever the rows hold.

Counts alone did not: with a 2.5 MB row (a `descricao` without a maximum, a request body at
Django's upload limit), a relay batch of 500 rows and a consumer prefetch of 500 messages each
held over a gigabyte.
"""

from __future__ import annotations

#: The largest message body a replica applies (`CQRS_MAX_MESSAGE_BYTES`); a larger one is
#: dead-lettered as `permanent` before it is decoded. Twice the event of a row with 10,264
#: characters of text, each escaped as JSON can at worst (`\uXXXX\uXXXX` for a character outside
#: the BMP: ~124 KB); a project whose rows hold more raises it.
MAX_MESSAGE_BYTES = 256 * 1024

#: What a consumer's prefetched messages may hold at most (`CQRS_PREFETCH_BYTES`): the prefetch
#: count is cut to `PREFETCH_BYTES // MAX_MESSAGE_BYTES` when that is smaller (512 with the
#: defaults: the default prefetch of 500 stands). RabbitMQ ignores a prefetch in bytes
#: (`prefetch_size`) and a consumer's prefetch count is fixed when it starts consuming, so the
#: bound is the count times the largest message accepted.
PREFETCH_BYTES = 128 * 1024 * 1024

#: What one relay batch may read from the outbox (`OUTBOX_BATCH_BYTES`): a batch stops before the
#: row that would pass it (a row larger than it still goes, alone). Events of a few hundred bytes
#: never meet it (500 rows are ~0.3 MB); 8 MiB holds over 60 of the ~124 KB ones above.
OUTBOX_BATCH_BYTES = 8 * 1024 * 1024


def prefetch_within(
    prefetch: int, batch_size: int, *, prefetch_bytes: int, max_message_bytes: int
) -> tuple[int, int]:
    """(prefetch count, batch size) of a consumer, cut so that `prefetch` messages of at most
    `max_message_bytes` hold at most `prefetch_bytes`; never below 1."""
    prefetch = max(1, min(prefetch, prefetch_bytes // max(1, max_message_bytes)))
    return prefetch, max(1, min(batch_size, prefetch))
