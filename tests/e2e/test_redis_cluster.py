"""The whole path on a Redis Cluster (3 masters, 3 replicas): dtq server,
manager and worker processes, submit -> lease -> complete, pause and stats."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from dtq.dev.cluster import RedisCluster
from dtq.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
)
from tests.conftest import WorkerFactory
from tests.support.procs import Proc
from tests.support.tasks import State, result_of, submit, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean", "manager")]

COMPLETED = State.Value("STATE_COMPLETED")


@pytest.fixture(scope="module")
def redis_url(redis_cluster: RedisCluster) -> str:
    return redis_cluster.url


@pytest.fixture(scope="module")
def tasks(channel: grpc.Channel) -> task_service_pb2_grpc.TaskServiceStub:
    return task_service_pb2_grpc.TaskServiceStub(channel)


@pytest.fixture
def worker(start_worker: WorkerFactory) -> Iterator[Proc]:
    yield start_worker("--concurrency", "4")


def test_a_task_runs_to_completion(tasks, worker) -> None:
    task = submit(tasks, "test_task", payload={"message": "hi", "sleep_duration": 0.05})
    done = wait_for(tasks, task.id)
    assert done.state == COMPLETED
    assert result_of(done) == {"message": "hi", "attempt": 1.0}


def test_tasks_of_many_queues_all_complete(tasks, start_worker) -> None:
    """Queues hash to different masters: each is served where its slot lives."""
    queues = [f"q{i}" for i in range(8)]
    start_worker("--concurrency", "8", *(a for q in queues for a in ("--queue", q)))
    requests = [
        task_service_pb2.SubmitTaskRequest(type="noop", queue=queues[i % len(queues)])
        for i in range(200)
    ]
    reply = tasks.BatchSubmitTasks(task_service_pb2.BatchSubmitTasksRequest(requests=requests))
    for result in reply.results:
        assert wait_for(tasks, result.task.id, timeout=30).state == COMPLETED


def test_stats_count_what_ran(tasks, start_worker, channel) -> None:
    start_worker("--queue", "stats")
    ids = [submit(tasks, "noop", queue="stats").id for _ in range(5)]
    admin = admin_service_pb2_grpc.AdminServiceStub(channel)
    for task_id in ids:
        assert wait_for(tasks, task_id).state == COMPLETED
    reply = admin.GetQueueStats(admin_service_pb2.GetQueueStatsRequest(queue="stats"), timeout=10)
    (stats,) = reply.queues
    assert (stats.pending, stats.completed_last_minute) == (0, 5)
