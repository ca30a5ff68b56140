"""A real 3-node RabbitMQ cluster on this machine (apis_lab.rabbit_nodes.RabbitCluster: own node
names, ports, data folders and cookie, `cluster_partition_handling = pause_minority`; the
machine's own node untouched), quorum queues, scaled-out workers (two cqrs_consume processes of
two workers each, two relays), a steady REST workload and the fault suite's schedule with node
loss (the node leading the replica's queue halted, then back) and a partition (that node cut off
from the others while it keeps running, then reconnected). Run by CI in a step of its own
(`-m cluster`, on PostgreSQL, where both relays take turns on an advisory lock)."""

import json
import os

import pytest
from e2e_lab import run_apis

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

DATABASE = "postgres" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"


@pytest.mark.timeout(600)
def test_node_loss_partition_and_every_fault_on_a_cluster_with_scaled_out_workers():
    result = run_apis(
        "chaos", "--json", "--database", DATABASE, "--cluster", "3", "--rounds", "1",
        "--seed", "20261128", "--duration", "600", "--consumers", "2",
        "--consumer-processes", "2", "--relays", "2", "--quick",
        # Node loss and partition, and the faults that hit the scaled-out processes and their
        # connections; the others are tested on one node by test_chaos.py.
        "--faults", "node-loss,partition,connections-closed,kill-relay,kill-consumer,"
        "kill-consumer-worker,pause-relay",
        timeout=540,
    )  # fmt: skip
    print("\n" + result.stderr[-4000:])
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["faults"]["node-loss"] == 1 and report["faults"]["partition"] == 1
    assert report["faults_total"] == 7
    assert report["lost"] == 0 and report["invariants_held"] is True
    (node_loss,) = [f for f in report["schedule"] if f["fault"] == "node-loss"]
    # How long writes stayed unreplicated while the leader was gone: bounded by the reconnect
    # backoff and the quorum queue's election, not by the node's absence.
    assert node_loss["replication_gap_s"] is not None and node_loss["replication_gap_s"] < 15
    (partition,) = [f for f in report["schedule"] if f["fault"] == "partition"]
    # The majority saw the node go while it kept running, and it came back into the cluster.
    assert partition["evidence"]["majority_lost_it"] and partition["evidence"]["rejoined"]
    assert report["max_stall_s"]["partition"] < 30 and report["max_stall_s"]["node-loss"] < 30
    # The active one of two relays paused, holding the relay lock: nothing stuck after it.
    assert report["max_stall_s"]["pause-relay"] < 30
    assert report["schedule"][-1]["fault"] == "final"
