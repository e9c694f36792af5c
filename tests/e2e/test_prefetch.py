"""Prefetch: a worker holds leases beyond its concurrency, runs no more than its
concurrency at once, starts a prefetched task's timeout only when a slot takes
it, and hands prefetched leases back at once on SIGTERM."""

from __future__ import annotations

import signal

import grpc
import pytest

from dtq.v1 import task_service_pb2_grpc
from tests.conftest import WorkerFactory
from tests.support.procs import free_port, wait_until
from tests.support.scrape import metric
from tests.support.tasks import State, get, submit, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean", "manager")]

COMPLETED = State.Value("STATE_COMPLETED")
RUNNING = State.Value("STATE_RUNNING")
PENDING = State.Value("STATE_PENDING")


@pytest.fixture(scope="module")
def tasks(channel: grpc.Channel) -> task_service_pb2_grpc.TaskServiceStub:
    return task_service_pb2_grpc.TaskServiceStub(channel)


def seconds(ts: object) -> float:
    return ts.ToNanoseconds() / 1e9  # type: ignore[attr-defined]


def test_prefetched_tasks_wait_for_a_slot_and_keep_their_timeout(
    tasks, start_worker: WorkerFactory
) -> None:
    start_worker("--concurrency", "1", "--prefetch", "2")
    # Each runs 0.6 s with a 1 s timeout: run one after another they take
    # 1.8 s, so a timeout started at lease time would kill the third.
    ids = [
        submit(tasks, "test_task", payload={"sleep_duration": 0.6}, timeout={"seconds": 1}).id
        for _ in range(3)
    ]
    done = [wait_for(tasks, i, timeout=20) for i in ids]
    assert [t.state for t in done] == [COMPLETED] * 3
    assert all(t.attempts == 1 for t in done)
    # Leased together (prefetch)...
    leased = sorted(seconds(t.started_at) for t in done)
    assert leased[-1] - leased[0] < 0.5
    # ...but run one at a time (concurrency 1).
    ends = sorted(seconds(t.finished_at) for t in done)
    assert ends[1] - ends[0] >= 0.5 and ends[2] - ends[1] >= 0.5


def test_sigterm_hands_prefetched_leases_back_at_once(tasks, start_worker: WorkerFactory) -> None:
    port = free_port()
    worker = start_worker("--concurrency", "1", "--prefetch", "2", "--metrics-port", str(port))
    ids = [submit(tasks, "test_task", payload={"sleep_duration": 1.5}).id for _ in range(3)]
    # RUNNING in PostgreSQL is not yet held by the worker: wait until it has all three.
    wait_until(lambda: metric(port, "dtq_worker_leases_held") == 3, 10, "three leases")
    worker.signal(signal.SIGTERM)
    # The two waiting ones are PENDING again long before the running one ends.
    wait_until(
        lambda: sum(get(tasks, i).state == PENDING for i in ids) == 2, 1.0, "prefetched released"
    )
    states = [get(tasks, i).state for i in ids]
    assert states.count(RUNNING) == 1
    running = ids[states.index(RUNNING)]
    assert wait_for(tasks, running, timeout=10).state == COMPLETED
    released = [get(tasks, i) for i in ids if i != running]
    assert all(t.max_retries == 3 + 1 for t in released)  # a hand-back uses no retry
