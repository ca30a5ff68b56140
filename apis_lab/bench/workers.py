"""The bench's own processes, each run inside a service's Django settings:

    python -m apis_lab.bench.workers writer --pipeline stock|project|saves -n N [--rate R]
                                     [--batch B] --out FILE
    python -m apis_lab.bench.workers stock-consumer

`stock` undoes, in that process only, what this project adds to django-cqrs (the outbox on the
master, the convergent apply on the replica), so that the stock column measures django-cqrs 3.1
as it ships: publish on commit from the ORM save, `RabbitMQTransport.consume()` applying with
`ReplicaManager`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types


def _django() -> None:
    import django

    django.setup()


def writer(pipeline: str, n: int, rate: float | None, batch: int, out: str) -> None:
    _django()
    from decimal import Decimal

    from django.db import transaction

    from produto.models import Produto

    committed: dict[int, float] = {}
    if pipeline == "stock":
        from dj_cqrs.transport.rabbit_mq import RabbitMQTransport

        from django_tools.outbox.signals import OutboxSignals

        OutboxSignals.uninstall()
        produce = RabbitMQTransport.produce.__func__

        def timed_produce(cls, payload):
            # django-cqrs produces in on_commit: now is the commit.
            committed[payload.pk] = time.time()
            produce(cls, payload)

        RabbitMQTransport.produce = classmethod(timed_produce)

    first = time.time()
    # The CPU this process spent before its first write (Python, Django, imports): the bench
    # counts the writer's CPU per change from here.
    cpu_at_first = time.process_time()
    for start in range(0, n, batch):
        if rate:
            delay = first + start / rate - time.time()
            if delay > 0:
                time.sleep(delay)
        produtos = [
            Produto(sku=f"BENCH-{i}", nome=f"Produto {i}", preco=Decimal(i % 1000) / 4)
            for i in range(start, min(n, start + batch))
        ]
        if batch == 1:
            produtos[0].save()  # one transaction, as a REST create
        elif pipeline == "saves":
            # A library that publishes from `save()` only (django-outbox-pattern's decorator: a
            # `bulk_create` would write no outbox row): `batch` saves in one transaction.
            with transaction.atomic():
                for produto in produtos:
                    produto.save()
        else:
            Produto.cqrs.bulk_create(produtos)  # one transaction of `batch` creates
        if pipeline in ("project", "saves"):
            now = time.time()  # the writes return after their commit
            committed.update((p.pk, now) for p in produtos)
    last = time.time()
    with open(out, "w") as fh:
        json.dump(
            {"first": first, "last": last, "committed": committed, "cpu_at_first_s": cpu_at_first},
            fh,
        )


def stock_consumer() -> None:
    _django()
    from dj_cqrs.managers import ReplicaManager
    from dj_cqrs.transport.rabbit_mq import RabbitMQTransport

    from feed.models import ProdutoMirror

    manager = ProdutoMirror.cqrs
    manager.save_instance = types.MethodType(ReplicaManager.save_instance, manager)
    manager.delete_instance = types.MethodType(ReplicaManager.delete_instance, manager)
    RabbitMQTransport.consume()  # what each `cqrs_consume` worker runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m apis_lab.bench.workers")
    commands = parser.add_subparsers(dest="command", required=True)
    w = commands.add_parser("writer")
    w.add_argument("--pipeline", choices=["stock", "project", "saves"], required=True)
    w.add_argument("-n", type=int, required=True)
    w.add_argument("--rate", type=float)
    w.add_argument("--batch", type=int, default=1)
    w.add_argument("--out", required=True)
    commands.add_parser("stock-consumer")
    args = parser.parse_args(argv)
    if args.command == "writer":
        writer(args.pipeline, args.n, args.rate, args.batch, args.out)
    else:
        try:
            stock_consumer()
        except KeyboardInterrupt:
            sys.exit(0)


if __name__ == "__main__":
    main()
