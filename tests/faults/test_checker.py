"""The shared checker is not vacuous: it reports a lost task, a task in the
wrong terminal state, a side effect done twice under one lease, and a
completion whose result no current lease produced."""

from __future__ import annotations

import pytest

from tests.faults.harness import Cluster, request

pytestmark = pytest.mark.faults


def test_the_checker_sees_what_it_must(cluster: Cluster) -> None:
    cluster.start(workers=1, concurrency=4)
    ids = cluster.submit([request() for _ in range(5)])
    assert cluster.wait_terminal(ids, 20)
    fine, wrong, twice, unfenced, lost = ids
    sql = cluster.backends.sql
    sql(
        "INSERT INTO fault_executions (task_id, attempt, worker_pid, phase) "
        "VALUES (%s, 1, 1, 'effect')",
        (twice,),
    )
    sql("DELETE FROM fault_executions WHERE task_id = %s AND phase = 'effect'", (unfenced,))
    sql("DELETE FROM tasks WHERE id = %s", (lost,))
    verdict = cluster.verify(
        "checker self-test", ids, timeout=0, expect={wrong: "dead_lettered"}, record=False
    )
    assert verdict.lost == [f"{lost}=MISSING"]
    assert verdict.wrong_state == [wrong]
    assert verdict.duplicates == verdict.unexplained == [twice]
    assert verdict.unfenced == [unfenced]
    assert fine not in str(verdict.problems())
