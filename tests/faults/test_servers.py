"""API server faults: kill -9 the server while workers stream (and start it
again), and two servers with workers on each, one of them killed for good."""

from __future__ import annotations

import signal

import pytest

from tests.faults.checker import assert_contract
from tests.faults.harness import Cluster, request
from tests.support.procs import wait_until

pytestmark = pytest.mark.faults
# Seconds a worker may take to reconnect once the server serves again: its
# stream retry (at most 5 s, jittered x0.5-1.5) after gRPC's reconnect (<= 2 s).
RECONNECT = 15.0


def completed(cluster: Cluster, ids: list[str]) -> int:
    return sum(1 for s in cluster.states(ids).values() if s == "completed")


def test_server_killed_while_workers_stream(cluster: Cluster) -> None:
    cluster.start(workers=2, concurrency=4)
    ids = cluster.submit([request({"sleep": 0.5}) for _ in range(40)])
    wait_until(lambda: completed(cluster, ids) >= 8, 20, "some progress")
    server = cluster.servers[0]
    assert server.proc is not None
    fault = cluster.fault()
    server.proc.signal(signal.SIGKILL)
    cluster.restart_server(server, down_for=0.5)
    verdict = cluster.verify("API server kill -9, restarted", ids, timeout=40, fault=fault)
    assert_contract(verdict)
    # One worker may finish the remaining tasks before the other's retry comes
    # round (its stream backoff reaches 5 s during the outage): wait for it.
    wait_until(
        lambda: all(w.output().count("worker_connected") >= 2 for w in cluster.workers),
        RECONNECT,
        "every worker reconnected to the new server",
    )


def test_two_servers_one_killed(cluster: Cluster) -> None:
    cluster.start(servers=2, workers=0)
    first, second = cluster.servers
    both = f"{first.address},{second.address}"
    for address in (first.address, second.address, both):
        cluster.start_worker(concurrency=3, server=address, wait=False)
    cluster.wait_ready()
    ids = cluster.submit([request({"sleep": 0.4}) for _ in range(30)], via=first)
    ids += cluster.submit([request({"sleep": 0.4}) for _ in range(30)], via=second)
    wait_until(lambda: completed(cluster, ids) >= 10, 20, "some progress")
    assert first.proc is not None
    fault = cluster.fault()
    first.proc.signal(signal.SIGKILL)
    ids += cluster.submit([request({"sleep": 0.1}) for _ in range(10)], via=second)
    verdict = cluster.verify(
        "two API servers, one kill -9",
        ids,
        timeout=40,
        fault=fault,
        notes="the worker pinned to the dead server strands its leases until they expire",
    )
    assert_contract(verdict)
