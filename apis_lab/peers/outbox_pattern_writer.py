"""The bench's writer for django-outbox-pattern, run under `outbox_pattern_settings`:

    python -m apis_lab.peers.outbox_pattern_writer writer --pipeline P -n N [--rate R]
                                                   [--batch B] --out FILE

the arguments and output of `apis_lab.bench.workers writer`. The decorator publishes from
`save()` only (a `bulk_create` would write no outbox row), so a batch is B saves in one
transaction; each product is stamped when its transaction has committed, as the project's are.
"""

from __future__ import annotations

import argparse
import json
import time


def write(n: int, rate: float | None, batch: int, out: str) -> None:
    import django

    django.setup()
    from decimal import Decimal

    from django.db import transaction

    from produto.models import Produto

    committed: dict[int, float] = {}
    first = time.time()
    for start in range(0, n, batch):
        if rate:
            delay = first + start / rate - time.time()
            if delay > 0:
                time.sleep(delay)
        produtos = [
            Produto(sku=f"BENCH-{i}", nome=f"Produto {i}", preco=Decimal(i % 1000) / 4)
            for i in range(start, min(n, start + batch))
        ]
        with transaction.atomic():
            for produto in produtos:
                produto.save()
        now = time.time()  # the saves return after their commit
        committed.update((p.pk, now) for p in produtos)
    last = time.time()
    with open(out, "w") as fh:
        json.dump({"first": first, "last": last, "committed": committed}, fh)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m apis_lab.peers.outbox_pattern_writer")
    commands = parser.add_subparsers(dest="command", required=True)
    w = commands.add_parser("writer")
    w.add_argument("--pipeline", default="outbox-pattern")
    w.add_argument("-n", type=int, required=True)
    w.add_argument("--rate", type=float)
    w.add_argument("--batch", type=int, default=1)
    w.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    write(args.n, args.rate, args.batch, args.out)


if __name__ == "__main__":
    main()
