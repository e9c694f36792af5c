"""Flow faults: chains of three steps, and parents submitting children
(`ctx.submit`), running while a worker is killed with SIGKILL, Redis is
flushed and the API server restarts. Every step of every chain completes, each
in its chain's order, none before its parent ended; every parent ends with
exactly its children, none lost, none doubled."""

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


PARENTS, CHILDREN = 12, 5


def test_children_survive_a_worker_kill_and_a_redis_flush(cluster: Cluster) -> None:
    """Parents submit children one by one while the worker running some of
    them is killed -9, Redis is flushed and the API server restarts: the
    retried parents get their first children back, so every parent ends with
    exactly its CHILDREN children, each run once, none lost."""
    cluster.start(workers=2, concurrency=4)
    spawn = {"children": CHILDREN, "gap": 0.3, "child_sleep": 0.2}
    parents = cluster.submit([request(spawn, type="fault_spawn") for _ in range(PARENTS)])
    victim = cluster.workers[0]
    # Killed in the middle: a parent on the victim has submitted some children.
    wait_until(
        lambda: bool(children_of(cluster, cluster.in_flight(victim, "started"))),
        20,
        "a child of a parent running on the victim",
    )
    fault = cluster.fault()
    victim.proc.signal(signal.SIGKILL)
    client = redis.Redis.from_url(cluster.backends.redis.url)
    client.flushall()
    client.close()
    cluster.restart_server(cluster.servers[0], down_for=0.5)
    cluster.start_worker(concurrency=4)
    assert cluster.wait_terminal(parents, 60), "the parents did not finish"
    kids = children_of(cluster, parents)
    verdict = cluster.verify(
        "children: worker -9, FLUSHALL, restart",
        parents + [k for k, _, _ in kids],
        timeout=60,
        fault=fault,
        notes=f"{PARENTS} parents x {CHILDREN} children",
    )
    assert_contract(verdict)
    per_parent: dict[str, list[str]] = {p: [] for p in parents}
    for _, parent, key in kids:
        per_parent[parent].append(key)
    for parent, keys in per_parent.items():
        assert sorted(keys) == sorted(f"{parent}/#{i}" for i in range(CHILDREN)), parent
    # The retried parents submitted children again: they got the first ones back.
    early = cluster.backends.sql(
        "SELECT count(*) FROM tasks c JOIN tasks p ON p.id = c.parent_id"
        " WHERE p.id = ANY(%s::uuid[]) AND p.attempts > 1 AND c.created_at < to_timestamp(%s)",
        (parents, fault.at),
    )
    assert early[0][0] > 0, "no retried parent had children from its first attempt"


def children_of(cluster: Cluster, parents: list[str]) -> list[tuple[str, str, str]]:
    """(id, parent id, idempotency key) of every child of `parents`."""
    rows = cluster.backends.sql(
        "SELECT id::text, parent_id::text, idempotency_key FROM tasks"
        " WHERE parent_id = ANY(%s::uuid[])",
        (parents,),
    )
    return [(r[0], r[1], r[2]) for r in rows]
