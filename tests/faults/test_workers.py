"""Worker faults: kill -9 before and after the side effect, SIGSTOP past the
lease, a poison task that kills its worker every time, SIGTERM hand-back."""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.checker import assert_contract
from tests.faults.harness import LEASE, Cluster, request
from tests.support.procs import wait_until

pytestmark = pytest.mark.faults


def effects_by(cluster: Cluster, ids: list[str]) -> dict[str, list[tuple[int, int]]]:
    """task id -> [(attempt, worker pid)] of its side effects."""
    found: dict[str, list[tuple[int, int]]] = {i: [] for i in ids}
    for task_id, attempt, pid, phase, _ in cluster.executions(ids):
        if phase == "effect":
            found[task_id].append((attempt, pid))
    return found


def started_by(cluster: Cluster, ids: list[str], pid: int) -> set[str]:
    return {t for t, _, p, phase, _ in cluster.executions(ids) if p == pid and phase == "started"}


def test_worker_killed_before_its_side_effect(cluster: Cluster) -> None:
    cluster.start(workers=2, concurrency=2)
    ids = cluster.submit([request({"sleep": 1.0}) for _ in range(8)])
    victim = cluster.workers[0]
    wait_until(lambda: bool(cluster.in_flight(victim, "started")), 20, "a task on the victim")
    pid = victim.pid
    fault = cluster.fault()
    victim.proc.signal(signal.SIGKILL)
    verdict = cluster.verify("worker kill -9 before effect", ids, timeout=30, fault=fault)
    assert_contract(verdict)
    effects = effects_by(cluster, ids)
    killed = [t for t in started_by(cluster, ids, pid) if all(p != pid for _, p in effects[t])]
    assert killed, "no task was killed before its side effect"
    for task_id in killed:
        assert len(effects[task_id]) == 1, "a task killed before its effect ran it twice"
    assert not verdict.duplicates


def test_worker_killed_after_its_side_effect(cluster: Cluster) -> None:
    cluster.start(workers=2, concurrency=2)
    ids = cluster.submit([request({"effect_then_sleep": 1.0}) for _ in range(8)])
    victim = cluster.workers[0]
    wait_until(lambda: bool(cluster.in_flight(victim, "effect")), 20, "an effect on the victim")
    pid = victim.pid
    fault = cluster.fault()
    victim.proc.signal(signal.SIGKILL)
    verdict = cluster.verify(
        "worker kill -9 after effect",
        ids,
        timeout=30,
        fault=fault,
        notes="duplicates: effect done, lease expired, run again (at-least-once)",
    )
    assert_contract(verdict)
    effects = effects_by(cluster, ids)
    rerun = [t for t, e in effects.items() if any(p == pid for _, p in e) and len(e) > 1]
    assert rerun, "no task was killed after its side effect"


def test_stopped_worker_past_its_lease_is_refused(cluster: Cluster) -> None:
    cluster.start(workers=2, concurrency=2)
    ids = cluster.submit([request({"effect_then_sleep": 1.0}) for _ in range(6)])
    victim = cluster.workers[0]
    wait_until(lambda: bool(cluster.in_flight(victim, "effect")), 20, "an effect on the victim")
    fault = cluster.fault()
    victim.proc.signal(signal.SIGSTOP)
    time.sleep(LEASE + 3)  # the lease expires, the reaper hands the task to the other worker
    victim.proc.signal(signal.SIGCONT)
    server = cluster.servers[0]

    def refused() -> float:
        return server.metric("dtq_stale_outcomes_total") + victim.output().count("outcome_refused")

    def revoked() -> int:
        return victim.output().count("REASON_LEASE_LOST")

    verdict = cluster.verify("worker SIGSTOP past lease, SIGCONT", ids, timeout=30, fault=fault)
    # On SIGCONT the worker either reports its stale outcome first (refused:
    # the token is no longer current) or reads the server's revocation first
    # (it then drops the outcome). Which comes first is a race of two
    # messages; either way nothing it did after its lease expired is recorded.
    wait_until(lambda: refused() + revoked() > 0, 10, "the late work to be refused or revoked")
    verdict.notes = (
        f"late work not recorded: {refused():g} outcomes refused, {revoked()} leases revoked"
    )
    assert_contract(verdict)


def test_poison_task_is_dead_lettered_after_its_retries(cluster: Cluster) -> None:
    cluster.start(workers=2, concurrency=1)
    fault = cluster.fault()
    poison = cluster.submit([request({"crash": True}, max_retries=2)])
    normal = cluster.submit([request({"sleep": 0.2}) for _ in range(10)])
    fault.open_ids = poison
    verdict = cluster.verify(
        "poison task (crashes its worker)",
        poison + normal,
        timeout=60,
        expect={poison[0]: "dead_lettered"},
        fault=fault,
        notes="recovery: submit -> dead-lettered",
    )
    assert_contract(verdict)
    runs = cluster.executions(poison)
    assert [r[3] for r in runs] == ["started"] * 3, "max_retries=2 means exactly three attempts"
    restarts = sum(len(w.incarnations) for w in cluster.workers)
    assert restarts >= 3, "each attempt should have killed a worker"


def test_sigterm_hands_unfinished_tasks_back_at_once(cluster: Cluster) -> None:
    lease = 10.0  # long, so that a hand-back is told apart from a lease expiry
    cluster.env["DTQ_LEASE_DURATION"] = str(lease)
    cluster.start(workers=0)
    leaving = cluster.start_worker(concurrency=2, supervised=False, DTQ_WORKER_SHUTDOWN_GRACE="0.5")
    ids = cluster.submit([request({"sleep": 3.0}) for _ in range(2)])
    wait_until(lambda: len(cluster.in_flight(leaving, "started")) == 2, 20, "two tasks running")
    cluster.start_worker(concurrency=2)  # idle: takes what is handed back
    fault = cluster.fault()
    gone = leaving.pid
    leaving.proc.signal(signal.SIGTERM)
    verdict = cluster.verify("worker SIGTERM hand-back", ids, timeout=40, fault=fault)
    exited = leaving.proc.popen.wait(30)
    rerun_at = [
        at for _, _, pid, phase, at in cluster.executions(ids) if phase == "started" and pid != gone
    ]
    delays = sorted(at - fault.at for at in rerun_at)
    verdict.notes = f"re-run after {', '.join(f'{d:.1f}' for d in delays)} s (lease {lease:g} s)"
    assert_contract(verdict)
    assert exited == 0
    assert len(delays) == 2 and max(delays) < 0.5 + 3, (
        f"unfinished tasks came back after {delays} s, not at once (lease {lease} s)"
    )
