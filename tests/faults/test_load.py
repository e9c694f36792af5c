"""Load faults: a retry storm (1,000 tasks failing at once, spread out by the
backoff's jitter) and a flood of high-priority work that low priority survives."""

from __future__ import annotations

import threading
import time

import pytest

from dtq.v1 import task_pb2
from tests.faults.checker import assert_contract
from tests.faults.harness import Cluster, request
from tests.support.procs import wait_until

pytestmark = pytest.mark.faults
STORM = 1000
MAX_BACKOFF = 2.0  # the first retry waits uniform(0, min(2, base=2 ** 1)) seconds


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_retry_storm(cluster: Cluster) -> None:
    cluster.env["DTQ_WORKER_MAX_RETRY_BACKOFF"] = str(MAX_BACKOFF)
    cluster.start(workers=2, concurrency=8)
    fault = cluster.fault()
    ids = cluster.submit([request({"fail_times": 1}) for _ in range(STORM)])
    fault.open_ids = ids
    verdict = cluster.verify("retry storm: 1,000 tasks fail once", ids, timeout=150, fault=fault)
    rows = cluster.backends.sql(
        "SELECT id::text, attempts, extract(epoch FROM scheduled_at)::float8 FROM tasks "
        "WHERE id = ANY(%s::uuid[])",
        (ids,),
    )
    due = {task_id: at for task_id, _, at in rows}
    failed: dict[str, float] = {}
    retried: dict[str, float] = {}
    for task_id, attempt, _, phase, at in cluster.executions(ids):
        if (attempt, phase) == (1, "failed"):
            failed[task_id] = at
        elif (attempt, phase) == (2, "started"):
            retried[task_id] = min(at, retried.get(task_id, at))
    backoff = [due[t] - failed[t] for t in ids if due.get(t) and t in failed]
    early = [t for t in retried if retried[t] < due[t] - 0.01]
    busiest = max(sum(1 for at in retried.values() if s <= at < s + 0.1) for s in retried.values())
    verdict.notes = (
        f"backoff p10/p50/p90 {quantile(backoff, 0.1):.2f}/{quantile(backoff, 0.5):.2f}/"
        f"{quantile(backoff, 0.9):.2f} s; busiest 100 ms: {busiest} retries"
    )
    assert_contract(verdict)
    assert [a for _, a, _ in rows] == [2] * STORM, "each task: one failure, one retry"
    assert len(backoff) == STORM
    assert not early, f"{len(early)} retries ran before they were due"
    # Full jitter: uniform over [0, 2 s]. Without it every retry would wait 2 s.
    below_one = sum(1 for b in backoff if b < 1.0) / STORM
    assert 0.25 <= below_one <= 0.75, f"{below_one:.0%} of backoffs under 1 s"
    assert quantile(backoff, 0.9) - quantile(backoff, 0.1) > 1.0, "backoffs are not spread"
    # Without jitter all 1,000 would start within one 100 ms window; with it
    # about 50 do on average, more where dispatch rounds group their starts.
    assert busiest < STORM / 5, "the retries came back all at once"


def test_priority_flood_low_still_progresses(cluster: Cluster) -> None:
    cluster.env["DTQ_PRIORITY_AGING_SECONDS"] = "1"
    cluster.start(workers=1, concurrency=2)
    high = task_pb2.PRIORITY_HIGH
    ids = cluster.submit([request({"sleep": 0.05}, priority=high) for _ in range(40)])
    low = cluster.submit(
        [request({"sleep": 0.05}, priority=task_pb2.PRIORITY_LOW) for _ in range(5)]
    )
    stop = threading.Event()

    def flood() -> None:  # keep at least 30 high-priority tasks waiting
        while not stop.is_set():
            waiting = cluster.backends.sql(
                "SELECT count(*) FROM tasks WHERE state = 'pending' AND priority = 3"
            )[0][0]
            if waiting < 30:
                ids.extend(
                    cluster.submit([request({"sleep": 0.05}, priority=high) for _ in range(20)])
                )
            time.sleep(0.1)

    feeder = threading.Thread(target=flood, daemon=True)
    feeder.start()
    fault = cluster.fault()
    try:
        wait_until(lambda: cluster.terminal(low), 30, "the low-priority tasks")
    finally:
        stop.set()
        feeder.join(10)
    flooded = cluster.backends.sql(
        """
        SELECT min(waiting) FROM (
            SELECT (SELECT count(*) FROM tasks h WHERE h.priority = 3
                      AND h.created_at < l.started_at
                      AND (h.started_at IS NULL OR h.started_at > l.started_at)) AS waiting
            FROM tasks l WHERE l.id = ANY(%s::uuid[])) AS x
        """,
        (low,),
    )[0][0]
    fault.open_ids = low
    verdict = cluster.verify(
        "priority flood: low still runs",
        ids + low,
        timeout=40,
        fault=fault,
        notes=f"high tasks: {len(ids)}; waiting high when each low started: >= {flooded}",
    )
    assert_contract(verdict)
    assert flooded > 0, "a low task only ran once the flood had stopped"
