"""Queue manager faults: the manager killed (and started again) while retries,
scheduled tasks and expired leases wait for it; two managers at once."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest
from google.protobuf import timestamp_pb2

from tests.faults.checker import assert_contract
from tests.faults.harness import LEASE, Cluster, Worker, request
from tests.support.procs import wait_until

pytestmark = pytest.mark.faults


def workload(cluster: Cluster) -> tuple[list[str], list[str], list[str], float]:
    """Work that needs a manager: retries to promote, scheduled tasks coming
    due, and slow tasks whose worker will be killed (leases to reap)."""
    retrying = cluster.submit([request({"fail_times": 1, "sleep": 0.1}) for _ in range(30)])
    due = time.time() + 1.5
    at = timestamp_pb2.Timestamp()
    at.FromNanoseconds(int(due * 1e9))
    scheduled = cluster.submit([request({"sleep": 0.1}, scheduled_at=at) for _ in range(10)])
    slow = cluster.submit([request({"sleep": 1.5}) for _ in range(8)])
    return retrying, scheduled, slow, due


def kill_mid_task(cluster: Cluster, worker: Worker) -> int:
    wait_until(lambda: bool(cluster.in_flight(worker, "started")), 20, "a task on the victim")
    pid = worker.pid
    worker.proc.signal(signal.SIGKILL)
    return pid


def expired_leases(cluster: Cluster, ids: list[str]) -> set[str]:
    rows = cluster.backends.sql(
        "SELECT id::text FROM tasks WHERE id = ANY(%s::uuid[]) AND error_type = 'LeaseExpired'",
        (ids,),
    )
    return {r[0] for r in rows}


def check_schedule(cluster: Cluster, scheduled: list[str], due: float) -> None:
    starts = [at for _, _, _, phase, at in cluster.executions(scheduled) if phase == "started"]
    assert len(starts) == len(scheduled), "a scheduled task ran twice"
    assert min(starts) >= due - 0.01, "a scheduled task ran early"


def test_manager_killed_and_restarted(cluster: Cluster) -> None:
    cluster.start(workers=2, concurrency=4)
    retrying, scheduled, slow, due = workload(cluster)
    ids = retrying + scheduled + slow
    fault = cluster.fault()
    cluster.managers[0].signal(signal.SIGKILL)
    kill_mid_task(cluster, cluster.workers[0])
    time.sleep(LEASE + 1)  # nothing is promoted or reaped meanwhile
    cluster.start_manager()
    verdict = cluster.verify("queue manager kill -9, restarted", ids, timeout=40, fault=fault)
    assert_contract(verdict)
    check_schedule(cluster, scheduled, due)


def test_two_managers_at_once(cluster: Cluster) -> None:
    cluster.start(managers=2, workers=2, concurrency=4)
    retrying, scheduled, slow, due = workload(cluster)
    ids = retrying + scheduled + slow
    fault = cluster.fault()
    killed = kill_mid_task(cluster, cluster.workers[0])
    verdict = cluster.verify("two managers at once + worker kill", ids, timeout=40, fault=fault)
    assert_contract(verdict)
    check_schedule(cluster, scheduled, due)
    touched = {t for t, _, pid, _, _ in cluster.executions(ids) if pid == killed}
    # A lease the killed worker received but had not started yet (its handler
    # records the start) expires too: the task says so in its last error.
    touched |= expired_leases(cluster, ids)
    # Runs, not PostgreSQL's attempts: a lease pushed to the killed worker and
    # never confirmed is handed back without an error once the reconnect grace
    # passes (Dispatcher._take_back_unnamed), which counts an attempt but runs nothing.
    runs = Counter(t for t, _, _, phase, _ in cluster.executions(ids) if phase == "started")
    for task_id in set(retrying) - touched:
        assert runs[task_id] == 2, "a retry was promoted twice, or not at all"
    for task_id in set(scheduled + slow) - touched:
        assert runs[task_id] == 1, "a task ran twice"
