"""Bounds a caller cannot push the server past: open watches per caller, the
message size tied to the payload limit, the number of queues and of the
queue names /metrics shows."""

from __future__ import annotations

import time
import urllib.request

import grpc
import pytest
from google.protobuf import struct_pb2

from dtq.v1 import task_pb2, task_service_pb2_grpc
from dtq.v1 import task_service_pb2 as pb
from tests.conftest import Server

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    # 64 KiB payloads: messages of 4 MiB at most (the floor of the limit).
    return {
        "DTQ_MAX_WATCHES_PER_CALLER": "2",
        "DTQ_MAX_PAYLOAD_BYTES": "65536",
        "DTQ_MAX_QUEUES": "6",
        "DTQ_METRICS_MAX_QUEUES": "3",
        "DTQ_MAX_WORKERS": "3",
    }


def test_a_caller_holds_at_most_its_share_of_watches(server: Server) -> None:
    with server.channel() as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        task = tasks.SubmitTask(pb.SubmitTaskRequest(type="nobody-runs-this")).task
        first = tasks.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=30)
        second = tasks.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=30)
        assert next(first).task.id == next(second).task.id == task.id
        third = tasks.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=30)
        with pytest.raises(grpc.RpcError) as refused:
            next(third)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        first.cancel()
        fourth = tasks.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=30)
        for _ in range(50):  # the server sees the cancel a moment later
            try:
                assert next(fourth).task.id == task.id
                break
            except grpc.RpcError:
                time.sleep(0.1)
                fourth = tasks.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=30)
        else:
            pytest.fail("a freed watch slot was never given back")
        second.cancel()
        fourth.cancel()


def test_a_message_over_the_limit_is_refused_and_stores_nothing(server: Server) -> None:
    blob = struct_pb2.Struct()
    blob.update({"blob": "x" * 60_000})
    big = pb.BatchSubmitTasksRequest(
        requests=[pb.SubmitTaskRequest(type="big", payload=blob) for _ in range(80)]
    )
    assert big.ByteSize() > 4 * 1024 * 1024
    with server.channel() as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            tasks.BatchSubmitTasks(big, timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert not tasks.ListTasks(pb.ListTasksRequest(type="big")).tasks


def queue_labels(server: Server) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as reply:
        text = reply.read().decode()
    return {
        sample.labels["queue"]
        for family in text_string_to_metric_families(text)
        if family.name == "dtq_tasks_submitted"
        for sample in family.samples
    }


def test_queues_past_the_cap_are_refused_and_metrics_stay_bounded(server: Server) -> None:
    with server.channel() as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        # The other tests here use `default`: it is one of the six.
        for name in ["default", *(f"q{n}" for n in range(5))]:
            tasks.SubmitTask(pb.SubmitTaskRequest(type="t", queue=name), timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            tasks.SubmitTask(pb.SubmitTaskRequest(type="t", queue="one-too-many"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert "DTQ_MAX_QUEUES" in refused.value.details()  # type: ignore[attr-defined]
        assert not tasks.ListTasks(pb.ListTasksRequest(queue="one-too-many")).tasks
        tasks.SubmitTask(pb.SubmitTaskRequest(type="t", queue="q0"), timeout=10)  # known: fine
    labels = queue_labels(server)
    assert len(labels - {"_other"}) <= 3 and "_other" in labels, labels


def test_only_an_empty_queue_is_deleted_and_it_frees_its_place(server: Server) -> None:
    from dtq.v1 import admin_service_pb2 as admin_pb
    from dtq.v1 import admin_service_pb2_grpc

    with server.channel() as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        names = ["default", *(f"full{n}" for n in range(5))]
        for name in names:  # every place taken, each queue holds a task nobody runs
            tasks.SubmitTask(pb.SubmitTaskRequest(type="t", queue=name), timeout=10)
        with pytest.raises(grpc.RpcError) as busy:
            admin.DeleteQueue(admin_pb.DeleteQueueRequest(queue="full0"), timeout=10)
        assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
        assert "1 pending" in busy.value.details()  # type: ignore[attr-defined]

        (task,) = tasks.ListTasks(pb.ListTasksRequest(queue="full0"), timeout=10).tasks
        tasks.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10)
        admin.PauseQueue(admin_pb.PauseQueueRequest(queue="full0"), timeout=10)
        admin.DeleteQueue(admin_pb.DeleteQueueRequest(queue="full0"), timeout=10)
        listed = admin.GetQueueStats(admin_pb.GetQueueStatsRequest(), timeout=10).queues
        assert "full0" not in {q.queue for q in listed}
        # Its place is free for a new queue; the cancelled task keeps its queue.
        tasks.SubmitTask(pb.SubmitTaskRequest(type="t", queue="newcomer"), timeout=10)
        assert tasks.GetTask(pb.GetTaskRequest(id=task.id), timeout=10).task.queue == "full0"
        # Every place is taken again: the deleted name is new now, and refused.
        with pytest.raises(grpc.RpcError) as full:
            tasks.SubmitTask(pb.SubmitTaskRequest(type="t", queue="full0"), timeout=10)
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]


def test_a_full_listing_stops_at_its_byte_budget_and_pages_on(server: Server) -> None:
    blob = struct_pb2.Struct()
    blob.update({"blob": "x" * 60_000})
    with server.channel() as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        submitted: list[str] = []
        for _ in range(2):
            batch = pb.BatchSubmitTasksRequest(
                requests=[pb.SubmitTaskRequest(type="big-page", payload=blob) for _ in range(30)]
            )
            reply = tasks.BatchSubmitTasks(batch, timeout=30)
            submitted += [r.task.id for r in reply.results]
        # 64 KiB payloads: 4 MiB messages, pages of 2 MiB of payloads at most.
        request = pb.ListTasksRequest(type="big-page", page_size=1000, view=task_pb2.TASK_VIEW_FULL)
        pages: list[list[str]] = []
        while True:
            page = tasks.ListTasks(request, timeout=30)
            assert page.ByteSize() <= 2 * 1024 * 1024 + 70_000
            pages.append([t.id for t in page.tasks])
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
    assert len(pages) >= 2 and all(pages)
    listed = [task_id for page in pages for task_id in page]
    assert sorted(listed) == sorted(submitted) and len(set(listed)) == 60


def test_registrations_past_the_worker_cap_are_refused_and_lists_page(server: Server) -> None:
    from dtq.v1 import admin_service_pb2 as admin_pb
    from dtq.v1 import admin_service_pb2_grpc, worker_service_pb2_grpc
    from dtq.v1 import worker_service_pb2 as worker_pb

    def register(worker_id: str) -> None:
        request = worker_pb.RegisterWorkerRequest(
            worker_id=worker_id, queues=["default"], task_types=["t"], concurrency=1
        )
        workers.RegisterWorker(request, timeout=10)

    with server.channel() as channel:
        workers = worker_service_pb2_grpc.WorkerServiceStub(channel)
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        for n in range(3):
            register(f"fake-{n}")
        with pytest.raises(grpc.RpcError) as refused:
            register("fake-3")
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert "DTQ_MAX_WORKERS" in refused.value.details()  # type: ignore[attr-defined]
        register("fake-1")  # registering again is no new worker
        # A stream opened without RegisterWorker counts the same.
        opened = worker_pb.StreamOpen(
            worker_id="stream-only", queues=["default"], task_types=["t"], capacity=1
        )
        opening = worker_pb.LeaseTasksRequest(open=opened)
        with pytest.raises(grpc.RpcError) as streamed:
            for _ in workers.LeaseTasks(iter([opening]), timeout=10):
                pass
        assert streamed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        health = admin.GetSystemHealth(admin_pb.GetSystemHealthRequest(), timeout=10)
        assert health.active_workers == 3
        listed: list[str] = []
        request = admin_pb.ListWorkersRequest(page_size=2)
        while True:
            page = admin.ListWorkers(request, timeout=10)
            assert len(page.workers) <= 2
            listed += [w.id for w in page.workers]
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        assert sorted(listed) == ["fake-0", "fake-1", "fake-2"]
