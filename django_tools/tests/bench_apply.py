"""Micro-benchmark (not collected by the test run; pass the file explicitly): the cost of one
one-change batch, `apply_changes` inside `transaction_for`, as a `cqrs_consume` worker applies it
at low load (one message per batch). Every change is a new revision of the same row, so each
batch reads the row's state, upserts it and records the replica's state.

    cd django_tools && uv run pytest tests/bench_apply.py -s -q
    # PostgreSQL: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test ...
"""

import statistics
import time

import pytest
from dj_cqrs.constants import SignalType
from django.db import connection

from django_tools.replica import apply
from django_tools.replica import messages as events

pytestmark = pytest.mark.django_db(transaction=True)

N = 2000


def test_one_change_batches(instance_data):
    changes = [
        apply.prepare(
            events.Event("book", SignalType.SAVE, 1, revision, instance_data(1, revision))
        )
        for revision in range(N + 200)
    ]
    wall, cpu = [], []
    for i, change in enumerate(changes):
        w0, c0 = time.perf_counter(), time.process_time()
        with apply.transaction_for([change]):
            outcome = apply.apply_changes([change])
        w1, c1 = time.perf_counter(), time.process_time()
        assert outcome == ["applied"]
        if i >= 200:  # warm-up: connection, caches
            wall.append(w1 - w0)
            cpu.append(c1 - c0)
    print(
        f"\n{connection.vendor}: one-change batch, {N} runs: wall median "
        f"{statistics.median(wall) * 1e6:.0f} µs, mean {statistics.fmean(wall) * 1e6:.0f} µs; "
        f"CPU mean {statistics.fmean(cpu) * 1e6:.0f} µs"
    )
