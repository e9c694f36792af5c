"""Flow faults: chains of three steps running while a worker is killed with
SIGKILL, Redis is flushed and the API server restarts. Every step of every
chain completes, each in its chain's order, none before its parent ended."""

from __future__ import annotations

import itertools
import signal

import pytest
import redis

from tests.faults.checker import assert_contract
from tests.faults.harness import Cluster, request
from tests.support.procs import wait_until

pytestmark = pytest.mark.faults
CHAINS = 20


def chains(cluster: Cluster) -> list[list[str]]:
    """CHAINS chains of three steps (the steps after the first wait WAITING)."""
    first = cluster.submit([request({"sleep": 0.3}) for _ in range(CHAINS)])
    second = cluster.submit([request({"sleep": 0.3}, after=p) for p in first])
    third = cluster.submit([request({"sleep": 0.1}, after=p) for p in second])
    return [list(steps) for steps in zip(first, second, third, strict=True)]


def test_chains_survive_a_worker_kill_a_redis_flush_and_a_server_restart(
    cluster: Cluster,
) -> None:
    cluster.start(workers=2, concurrency=4)
    steps = chains(cluster)
    ids = [i for chain in steps for i in chain]
    victim = cluster.workers[0]
    wait_until(lambda: bool(cluster.in_flight(victim, "started")), 20, "a step on the victim")
    fault = cluster.fault()
    victim.proc.signal(signal.SIGKILL)
    client = redis.Redis.from_url(cluster.backends.redis.url)
    client.flushall()
    client.close()
    cluster.restart_server(cluster.servers[0], down_for=0.5)
    cluster.start_worker(concurrency=4)
    verdict = cluster.verify(
        "flows: worker -9, FLUSHALL, restart",
        ids,
        timeout=60,
        fault=fault,
        notes=f"{CHAINS} chains of 3",
    )
    assert_contract(verdict)
    rows = cluster.backends.sql(
        "SELECT id::text, state, extract(epoch FROM started_at)::float8,"
        " extract(epoch FROM finished_at)::float8 FROM tasks WHERE id = ANY(%s::uuid[])",
        (ids,),
    )
    got = {r[0]: r[1:] for r in rows}
    assert {state for state, _, _ in got.values()} == {"completed"}
    for chain in steps:
        for parent, child in itertools.pairwise(chain):
            assert got[child][1] >= got[parent][2], "a step started before its parent ended"
