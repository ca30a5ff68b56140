"""Property: whatever the delivery order, duplicates, batching or number of workers, the replica
ends equal to the master's last state (hypothesis)."""

import itertools
from dataclasses import dataclass

import pytest
from dj_cqrs.constants import SignalType
from dj_replica.models import BookReplica
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_tools.replica import apply
from django_tools.replica import messages as events
from django_tools.testing import wait_until

NAMES = st.text(alphabet="abcdefghij ", min_size=1, max_size=12).filter(str.strip)
VERSION = st.fixed_dictionaries(
    {
        "title": NAMES,
        "price": st.decimals(min_value=0, max_value=9999, places=2).map(str),
        "copies": st.integers(min_value=0, max_value=10**6),
        "in_print": st.booleans(),
    }
)


@dataclass
class History:
    """What a master did to one row: saves at revisions 0..n-1, maybe a delete at n."""

    pk: int
    versions: list[dict]
    deleted: bool

    def events(self, instance_data) -> list[tuple[str, dict]]:
        out = [
            (SignalType.SAVE, instance_data(self.pk, rev, **v))
            for rev, v in enumerate(self.versions)
        ]
        if self.deleted:
            rev = len(self.versions)
            out.append(
                (SignalType.DELETE, {"id": self.pk, "cqrs_revision": rev, "cqrs_updated": "x"})
            )
        return out

    def expected(self):
        if self.deleted:
            return None
        last = self.versions[-1]
        return (
            len(self.versions) - 1,
            last["title"],
            last["price"],
            last["copies"],
            last["in_print"],
        )


histories = st.lists(
    st.tuples(st.lists(VERSION, min_size=1, max_size=5), st.booleans()), min_size=1, max_size=4
)


@st.composite
def deliveries(draw, offset: int = 0):
    """Histories and a delivery of their events: shuffled, with duplicates, in batches."""
    drawn = draw(histories)
    hs = [History(offset + i + 1, versions, deleted) for i, (versions, deleted) in enumerate(drawn)]
    order = draw(st.permutations(range(sum(len(h.versions) + h.deleted for h in hs))))
    duplicates = draw(st.lists(st.sampled_from(order), max_size=len(order)))
    sequence = list(order) + duplicates
    sequence = draw(st.permutations(sequence))
    cuts = sorted(draw(st.lists(st.integers(0, len(sequence)), max_size=4)))
    return hs, sequence, cuts


def observed(pks):
    rows = {
        pk: (rev, title, f"{price:.2f}", copies, in_print)
        for pk, rev, title, price, copies, in_print in BookReplica.objects.filter(
            pk__in=pks
        ).values_list("pk", "cqrs_revision", "title", "price", "copies", "in_print")
    }
    return {pk: rows.get(pk) for pk in pks}


def expected_state(hs):
    out = {}
    for h in hs:
        exp = h.expected()
        out[h.pk] = None if exp is None else (exp[0], exp[1], f"{float(exp[2]):.2f}", *exp[3:])
    return out


@pytest.mark.django_db
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=deliveries())
def test_apply_converges_whatever_the_order_duplicates_and_batches(case, instance_data):
    hs, sequence, cuts = case
    all_events = list(itertools.chain.from_iterable(h.events(instance_data) for h in hs))
    with transaction.atomic():
        bounds = [0, *cuts, len(sequence)]
        for start, end in itertools.pairwise(bounds):
            batch = [all_events[i] for i in sequence[start:end]]
            if batch:
                with transaction.atomic():
                    apply.apply_changes(
                        [
                            apply.prepare(events.Event("book", s, d["id"], d["cqrs_revision"], d))
                            for s, d in batch
                        ]
                    )
        assert observed([h.pk for h in hs]) == expected_state(hs)
        transaction.set_rollback(True)


_offsets = itertools.count(1000, 100)


@pytest.mark.django_db(transaction=True)
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_through_the_broker_two_workers_converge(
    data, consumers, publish, event_payload, instance_data
):
    """The same property end to end: published shuffled and duplicated on the real broker,
    consumed by two workers at once."""
    if not consumers.consumers:
        consumers.start(workers=2, batch_size=5)
    hs, sequence, _ = data.draw(deliveries(offset=next(_offsets)))
    all_events = list(itertools.chain.from_iterable(h.events(instance_data) for h in hs))
    before = sum(sum(c.stats.values()) for c in consumers.consumers)
    for index in sequence:
        signal_type, instance = all_events[index]
        publish(event_payload(signal_type, instance))

    def processed():
        counted = sum(
            c.stats[k]
            for c in consumers.consumers
            for k in ("applied", "duplicate", "stale", "deleted_before")
        )
        return counted - before >= len(sequence) or None

    # Stats count per worker; other keys (retries) would mean a failure, which the test rejects.
    wait_until(processed, timeout=20, what="every published message to be handled")
    assert consumers.stats("retried") == 0 and consumers.stats("dead_lettered") == 0
    assert observed([h.pk for h in hs]) == expected_state(hs)
