"""django-cqrs transport of an outbox master: `produce()` writes to the outbox.

Normal writes never reach it (OutboxSignals writes in the transaction); django-cqrs's other
producers do — `cqrs_sync` and `Model.cqrs_sync()` — and their events then take the same road
through the relay.
"""

from dj_cqrs.transport import BaseTransport


class OutboxTransport(BaseTransport):
    @staticmethod
    def produce(payload) -> None:
        from django_tools.outbox.writer import enqueue

        enqueue([payload])

    @staticmethod
    def consume(*args, **kwargs):
        raise NotImplementedError("an outbox master does not consume; run the relay instead")

    @staticmethod
    def clean_connection(*args, **kwargs) -> None:
        pass
