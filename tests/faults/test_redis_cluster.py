"""A Redis Cluster master killed mid-run (SIGKILL): its replica is promoted
(cluster-node-timeout 1.5 s) and no accepted task is lost. PostgreSQL is the
truth: every accepted task ends completed. The cluster is this module's own
(3 masters, 3 replicas), so killing a node disturbs no other test."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtq.adapters import redis_keys as keys
from dtq.dev.cluster import RedisCluster
from tests.faults.backends import Backends
from tests.faults.checker import assert_contract
from tests.faults.harness import Cluster, request
from tests.support import env
from tests.support.procs import wait_until

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster(Path(tmp_path_factory.mktemp("faults-cluster"))) as started:
        yield started


@pytest.fixture
def cluster(
    backends: Backends, redis_cluster: RedisCluster, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """The scenario's dtq processes, on the Redis Cluster instead of one Redis."""
    backends.ensure_up()
    backends.reset()
    client = env.sync_redis(redis_cluster.url)
    client.flushdb()
    client.close()
    started = Cluster(backends, request.node.nodeid, redis_url=redis_cluster.url)
    try:
        yield started
    finally:
        started.close()


def completed(cluster: Cluster, ids: list[str]) -> int:
    return sum(1 for s in cluster.states(ids).values() if s == "completed")


# Whose master is killed: the default queue's (ready lists and leases of every
# task here), or the one the processes' pub/sub connection is on (the slot of
# the first channel subscribed: dtq:{*}:notify), which also holds no task.
VICTIMS = {
    "queue": keys.leases(keys.queue_tag("default", "default")),
    "pubsub": keys.NOTIFY_PATTERN,
}


@pytest.mark.parametrize("victim_of", list(VICTIMS))
def test_a_master_killed_mid_run_fails_over_and_loses_nothing(
    cluster: Cluster, redis_cluster: RedisCluster, victim_of: str
) -> None:
    cluster.start(workers=2, concurrency=4)
    ids = cluster.submit([request({"sleep": 0.2}) for _ in range(80)])
    wait_until(lambda: completed(cluster, ids) >= 8, 20, "some progress")
    victim = redis_cluster.master_of(VICTIMS[victim_of])
    assert victim is not redis_cluster.master_of(
        VICTIMS["queue" if victim_of == "pubsub" else "pubsub"]
    )
    fault = cluster.fault()
    killed = time.monotonic()
    assert victim.popen is not None
    victim.popen.send_signal(signal.SIGKILL)
    victim.popen.wait(10)
    # Producers keep submitting through the failover (UNAVAILABLE is retried).
    ids += cluster.submit([request({"sleep": 0.1}) for _ in range(20)], patience=30)
    accepted = time.monotonic() - killed
    redis_cluster.wait_moved(VICTIMS[victim_of], victim)
    promoted = time.monotonic() - killed
    ids += cluster.submit([request({"sleep": 0.1}) for _ in range(20)], patience=30)
    verdict = cluster.verify(f"Redis Cluster {victim_of} master SIGKILL", ids, 60, fault=fault)
    stall = longest_pause(cluster, ids, fault.at)
    verdict.notes = (
        f"replica promoted {promoted:.2f}s after the kill; first submit after it "
        f"accepted at {accepted:.2f}s; longest pause between task starts {stall:.2f}s"
    )
    victim.start()  # rejoins as a replica of its promoted one
    victim.wait_ready(30)
    redis_cluster.wait_ok(30)
    assert_contract(verdict)


def longest_pause(cluster: Cluster, ids: list[str], since: float) -> float:
    """The longest time between two task starts after `since` (dispatch stalled)."""
    starts = sorted(e[4] for e in cluster.executions(ids) if e[3] == "started" and e[4] >= since)
    marks = [since, *starts]
    return max((b - a for a, b in itertools.pairwise(marks)), default=0.0)
