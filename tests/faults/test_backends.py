"""Faults of the data stores: Redis FLUSHALL and a Redis restart without
persistence (Redis is an index, rebuilt from PostgreSQL), and a PostgreSQL
restart (the truth goes away for a moment; nothing accepted may be lost)."""

from __future__ import annotations

import time

import grpc
import pytest
import redis

from tests.faults.checker import assert_contract
from tests.faults.harness import Cluster, request
from tests.support.procs import wait_until

pytestmark = pytest.mark.faults
FAST = 5.0  # seconds: an RPC while a store is down must answer within this


def completed(cluster: Cluster, ids: list[str]) -> int:
    return sum(1 for s in cluster.states(ids).values() if s == "completed")


def submit_while_down(cluster: Cluster, n: int) -> tuple[list[str], str]:
    """Submit during an outage: the accepted ids (they must not be lost) and
    how the server answered. Accepting or UNAVAILABLE are both fine; hanging is not."""
    started = time.monotonic()
    try:
        ids = cluster.submit([request({"sleep": 0.1}) for _ in range(n)], patience=0)
        answer = "accepted"
    except grpc.RpcError as error:
        ids, answer = [], error.code().name  # type: ignore[attr-defined]
    took = time.monotonic() - started
    assert took < FAST, f"a submit during the outage took {took:.1f}s ({answer})"
    return ids, f"submit while down: {answer} in {took:.2f}s"


def test_redis_flushall_mid_run(cluster: Cluster) -> None:
    cluster.start(workers=2, concurrency=4)
    ids = cluster.submit([request({"sleep": 0.3}) for _ in range(60)])
    wait_until(lambda: completed(cluster, ids) >= 8, 20, "some progress")
    fault = cluster.fault()
    client = redis.Redis.from_url(cluster.backends.redis.url)
    client.flushall()
    client.close()
    ids += cluster.submit([request({"sleep": 0.1}) for _ in range(10)])
    verdict = cluster.verify("Redis FLUSHALL mid-run", ids, timeout=45, fault=fault)
    assert_contract(verdict)


def test_redis_restart_without_persistence(cluster: Cluster) -> None:
    cluster.start(workers=2, concurrency=4)
    ids = cluster.submit([request({"sleep": 0.3}) for _ in range(60)])
    wait_until(lambda: completed(cluster, ids) >= 8, 20, "some progress")
    fault = cluster.fault()
    cluster.backends.redis.stop()
    time.sleep(1.0)
    during, answer = submit_while_down(cluster, 10)
    cluster.backends.redis.start()
    cluster.backends.redis.wait_ready(30)
    ids += during
    ids += cluster.submit([request({"sleep": 0.1}) for _ in range(10)])
    verdict = cluster.verify(
        "Redis restart (no persistence)", ids, timeout=45, fault=fault, notes=answer
    )
    assert_contract(verdict)


def test_postgres_restart_mid_run(cluster: Cluster) -> None:
    cluster.start(workers=2, concurrency=4)
    ids = cluster.submit([request({"sleep": 0.3}) for _ in range(60)])
    wait_until(lambda: completed(cluster, ids) >= 8, 20, "some progress")
    fault = cluster.fault()
    cluster.backends.pg.stop()
    time.sleep(1.0)
    during, answer = submit_while_down(cluster, 10)
    cluster.backends.pg.start()
    cluster.backends.pg.wait_ready(30)
    back = time.monotonic()
    ids += during
    ids += cluster.submit([request({"sleep": 0.1}) for _ in range(10)])
    answer += f"; accepting again {time.monotonic() - back:.2f}s after PostgreSQL was back"
    verdict = cluster.verify(
        "PostgreSQL restart mid-run", ids, timeout=45, fault=fault, notes=answer
    )
    assert_contract(verdict)
