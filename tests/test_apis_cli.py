"""The `apis` CLI's own parts, without starting anything: the fault kinds `apis chaos --help`
lists are the suite's."""

import pytest

from apis.cli import build_parser
from apis_lab.chaos.faults import FAULTS, Fault
from apis_lab.chaos.kinds import FAULT_KINDS

pytestmark = pytest.mark.any_database


def runs_of(fault: type[Fault]) -> str:
    """The runs a fault class is scheduled in, as `kinds.FAULT_KINDS` says them."""
    if fault.needs_cluster:
        return "with --cluster"
    if fault.needs_single_node:
        return "one node"
    if fault.needs_postgres:
        return "postgres"
    return ""


def test_the_light_list_of_kinds_is_the_suites():
    assert list(FAULT_KINDS) == list(FAULTS)
    assert {kind: runs_of(fault) for kind, fault in FAULTS.items()} == FAULT_KINDS


def test_chaos_help_lists_every_kind_and_the_runs_it_needs(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["chaos", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for kind in FAULTS:
        assert kind in text.replace("- ", "-")
    assert "pause-database (postgres)" in text.replace("- ", "-")
    assert "partition (with --cluster)" in text
