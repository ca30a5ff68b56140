from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from django_tools.checksum import canonical, row_checksum

# No database in it (the checksum of values): CI runs it on SQLite only.
pytestmark = pytest.mark.any_database


def test_equal_values_in_other_forms_have_one_canonical_text():
    assert canonical(Decimal("19.90")) == canonical(Decimal("19.9")) == "19.9"
    assert canonical(Decimal("100")) == "100"
    moment = datetime(2026, 1, 1, 12, tzinfo=UTC)
    elsewhere = moment.astimezone(timezone(timedelta(hours=-3)))
    assert canonical(moment) == canonical(elsewhere) == "2026-01-01T12:00:00.000000"
    assert (canonical(True), canonical(False), canonical(None)) == ("1", "0", "\x00")


def test_the_checksum_changes_with_any_field():
    row = {"a": "x", "b": 1, "c": True}
    base = row_checksum(row, ["a", "b", "c"])
    assert base == row_checksum(dict(row), ["a", "b", "c"])
    for change in ({"a": "y"}, {"b": 2}, {"c": False}):
        assert row_checksum({**row, **change}, ["a", "b", "c"]) != base
    assert row_checksum({"a": "x|1", "b": ""}, ["a", "b"]) != row_checksum(
        {"a": "x", "b": "1|"}, ["a", "b"]
    )
