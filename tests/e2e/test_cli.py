"""The admin/user CLI against a real `dtq server`: commands run as subprocesses.

Tasks reach RUNNING, COMPLETED and DEAD_LETTERED through the WorkerService
protocol itself (register, open a lease stream, report an outcome), so these
tests do not depend on the worker runtime.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from dtq.v1 import (
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from tests.conftest import Server
from tests.support.procs import dtq_args, free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
State = task_pb2.Task.State
UNREACHABLE = (
    "error: cannot reach the dtq server at {} ({}): start one with "
    '"dtq dev" (everything on this machine) or "dtq server", '
    "or point --server/DTQ_SERVER_ADDRESS at a running one\n"
)


# -- helpers ------------------------------------------------------------------------


def cli_env(server: Server) -> dict[str, str]:
    return {**server.env, "DTQ_SERVER_ADDRESS": server.address}


def dtq(
    server: Server, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dtq_args(*args),
        env={**cli_env(server), **env},
        input=stdin,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


def dtq_json(server: Server, *args: str, stdin: str | None = None) -> Any:
    result = dtq(server, *args, "--json", stdin=stdin)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], prefix: str) -> None:
    assert result.returncode == 1, result
    assert result.stderr.startswith(f"error: {prefix}"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def plain(result: subprocess.CompletedProcess[str]) -> str:
    """Stdout of a successful command, which in a pipe has no colour codes."""
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout
    return result.stdout


def tasks_stub(channel: grpc.Channel) -> task_service_pb2_grpc.TaskServiceStub:
    return task_service_pb2_grpc.TaskServiceStub(channel)


def submit(channel: grpc.Channel, task_type: str = "report", **fields: Any) -> task_pb2.Task:
    payload = struct_pb2.Struct()
    payload.update(fields.pop("payload", {}))
    request = task_service_pb2.SubmitTaskRequest(type=task_type, payload=payload, **fields)
    return tasks_stub(channel).SubmitTask(request, timeout=10).task


def get(channel: grpc.Channel, task_id: str) -> task_pb2.Task:
    return tasks_stub(channel).GetTask(task_service_pb2.GetTaskRequest(id=task_id), timeout=10).task


def later(minutes: int = 60) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(datetime.now(UTC) + timedelta(minutes=minutes))
    return ts


def lease_one(channel: grpc.Channel, task_type: str) -> worker_service_pb2.Lease:
    """Act as a worker: register, open a lease stream, take one lease, hang up.
    The lease stays valid after the stream closes (until it expires)."""
    stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
    worker = stub.RegisterWorker(
        worker_service_pb2.RegisterWorkerRequest(
            hostname="cli-test", pid=1, task_types=[task_type], concurrency=1
        ),
        timeout=10,
    )
    stop = threading.Event()

    def requests() -> Iterator[worker_service_pb2.LeaseTasksRequest]:
        yield worker_service_pb2.LeaseTasksRequest(
            open=worker_service_pb2.StreamOpen(
                worker_id=worker.worker_id, task_types=[task_type], capacity=1
            )
        )
        stop.wait(20)

    stream = stub.LeaseTasks(requests(), timeout=20)
    try:
        for reply in stream:
            if reply.leases:
                return reply.leases[0]
    finally:
        stop.set()
        stream.cancel()
    raise AssertionError("the stream ended without a lease")


def complete(channel: grpc.Channel, lease: worker_service_pb2.Lease) -> None:
    stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
    result = struct_pb2.Value(string_value="done")
    request = worker_service_pb2.CompleteTaskRequest(
        task_id=lease.task.id, lease_token=lease.lease_token, result=result
    )
    stub.CompleteTask(request, timeout=10)


def dead_letter(channel: grpc.Channel, lease: worker_service_pb2.Lease) -> None:
    stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
    error = task_pb2.TaskError(message="boom", type="ValueError", permanent=True)
    request = worker_service_pb2.FailTaskRequest(
        task_id=lease.task.id, lease_token=lease.lease_token, error=error
    )
    stub.FailTask(request, timeout=10)


# -- task submit --------------------------------------------------------------------


def test_submit_prints_a_panel_and_stores_the_task(server: Server, channel: grpc.Channel) -> None:
    payload = '{"image_url": "https://example.com/i.jpg", "ops": ["resize"], "n": 2}'
    out = plain(dtq(server, "task", "submit", "image_processing", payload, "--priority=high"))
    assert "Task submitted" in out
    (listed,) = tasks_stub(channel).ListTasks(task_service_pb2.ListTasksRequest()).tasks
    assert listed.id in out
    task = get(channel, listed.id)
    assert (task.type, task.priority, task.state) == (
        "image_processing",
        task_pb2.PRIORITY_HIGH,
        State.STATE_PENDING,
    )
    assert task.payload["image_url"] == "https://example.com/i.jpg"
    assert '"n": 2' in out  # numbers shown as written, not as doubles


def test_submit_json_sets_every_option(server: Server, channel: grpc.Channel) -> None:
    reply = dtq_json(
        server,
        "task",
        "submit",
        "email_sending",
        '{"recipient": "user@example.com"}',
        "--priority=LOW",
        "--timeout=120",
        "--scheduled-at=2099-01-15T10:00:00Z",
        "--max-retries=5",
        "--queue=emails",
        "--idempotency-key=welcome-1",
        "--lease-duration=12.5",
    )
    assert reply["deduplicated"] is False
    task = get(channel, reply["task"]["id"])
    assert task.state == State.STATE_SCHEDULED
    assert task.priority == task_pb2.PRIORITY_LOW
    assert (task.queue, task.max_retries, task.idempotency_key) == ("emails", 5, "welcome-1")
    assert task.timeout.seconds == 120
    assert task.lease_duration.ToMilliseconds() == 12_500
    assert task.scheduled_at.ToDatetime(UTC) == datetime(2099, 1, 15, 10, tzinfo=UTC)
    assert reply["task"]["state"] == "STATE_SCHEDULED"


def test_submit_reads_payload_from_stdin_and_file(
    server: Server, channel: grpc.Channel, tmp_path: Path
) -> None:
    from_stdin = dtq_json(server, "task", "submit", "t", "-", stdin='{"src": "stdin"}')
    assert get(channel, from_stdin["task"]["id"]).payload["src"] == "stdin"
    file = tmp_path / "payload.json"
    file.write_text('{"src": "file"}')
    from_file = dtq_json(server, "task", "submit", "t", f"@{file}")
    assert get(channel, from_file["task"]["id"]).payload["src"] == "file"


def test_submit_with_the_same_idempotency_key_is_deduplicated(server: Server) -> None:
    args = ("task", "submit", "t", '{"a": 1}', "--idempotency-key=k1")
    first, second = dtq_json(server, *args), dtq_json(server, *args)
    assert second["deduplicated"] is True
    assert second["task"]["id"] == first["task"]["id"]
    other = dtq(server, "task", "submit", "t", '{"a": 2}', "--idempotency-key=k1")
    assert_one_line_error(other, "ALREADY_EXISTS IDEMPOTENCY_KEY_REUSED: ")


@pytest.mark.parametrize(
    "args",
    [
        ("{bad json",),
        ("[1, 2]",),
        ("@/nonexistent/payload.json",),
        ("{}", "--scheduled-at=next tuesday"),
    ],
)
def test_bad_local_input_exits_2(server: Server, channel: grpc.Channel, args: tuple[str]) -> None:
    result = dtq(server, "task", "submit", "t", *args)
    assert result.returncode == 2, result
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert not tasks_stub(channel).ListTasks(task_service_pb2.ListTasksRequest()).tasks


def test_submit_wait_follows_the_task_until_it_completes(
    server: Server, channel: grpc.Channel
) -> None:
    args = dtq_args("task", "submit", "waited", "{}", "--wait", "--json")
    with subprocess.Popen(
        args, env=cli_env(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        complete(channel, lease_one(channel, "waited"))
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    reply = json.loads(out)
    assert reply["task"]["state"] == "STATE_COMPLETED"
    assert reply["task"]["result"] == "done"


def test_submit_wait_exits_1_when_the_task_is_cancelled(
    server: Server, channel: grpc.Channel
) -> None:
    args = dtq_args("task", "submit", "waited", "{}", "--wait")
    with subprocess.Popen(
        args, env=cli_env(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        stub = tasks_stub(channel)
        listing = task_service_pb2.ListTasksRequest()
        wait_until(lambda: bool(stub.ListTasks(listing).tasks), 20, "the submitted task")
        (task,) = stub.ListTasks(listing).tasks
        stub.CancelTask(task_service_pb2.CancelTaskRequest(id=task.id), timeout=10)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "Task submitted" in out
    assert "cancelled" in out.splitlines()[-1]
    assert err == f"error: task {task.id} ended cancelled, not completed\n"


# -- task get / list / cancel / retry / watch ----------------------------------------


def test_get_shows_one_task(server: Server, channel: grpc.Channel) -> None:
    task = submit(channel, "report", payload={"day": "monday"}, queue="reports")
    out = plain(dtq(server, "task", "get", task.id))
    for text in (task.id, "report", "reports", "pending", '{"day": "monday"}'):
        assert text in out
    reply = dtq_json(server, "task", "get", task.id)
    assert reply["task"]["id"] == task.id
    assert reply["task"]["payload"] == {"day": "monday"}
    assert reply["task"]["worker_id"] == ""  # fields without presence are printed


def test_list_filters_by_status_and_walks_pages(server: Server, channel: grpc.Channel) -> None:
    pending = [submit(channel, "p").id for _ in range(5)]
    scheduled = [submit(channel, "s", scheduled_at=later()).id for _ in range(2)]
    newest_first = pending[::-1]
    pages = [
        dtq_json(server, "task", "list", "--status=pending", "--size=2", f"--page={n}")
        for n in (1, 2, 3, 4)
    ]
    ids = [[t["id"] for t in page["tasks"]] for page in pages]
    assert ids == [newest_first[0:2], newest_first[2:4], newest_first[4:], []]
    assert pages[0]["next_page_token"] and not pages[2]["next_page_token"]
    listed = dtq_json(server, "task", "list", "--status", "SCHEDULED")
    assert [t["id"] for t in listed["tasks"]] == scheduled[::-1]
    assert dtq_json(server, "task", "list", "--status=dead-lettered")["tasks"] == []
    assert len(dtq_json(server, "task", "list", "--type=s")["tasks"]) == 2
    out = plain(dtq(server, "task", "list", "--status=pending", "--size=2", "--page=2"))
    assert newest_first[2] in out and newest_first[0] not in out
    assert "page 2: 2 task(s); next: --page 3" in out


def test_list_rejects_an_unknown_status(server: Server) -> None:
    result = dtq(server, "task", "list", "--status=finished")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --status: unknown state 'finished'")


def test_list_shows_completed_and_dead_lettered_tasks(
    server: Server, channel: grpc.Channel
) -> None:
    done, dead = submit(channel, "ok").id, submit(channel, "bad").id
    complete(channel, lease_one(channel, "ok"))
    dead_letter(channel, lease_one(channel, "bad"))
    completed = dtq_json(server, "task", "list", "--status=completed", "--page=1", "--size=20")
    assert [t["id"] for t in completed["tasks"]] == [done]
    for spelling in ("dead_lettered", "dead-lettered", "Dead-Lettered"):
        listed = dtq_json(server, "task", "list", f"--status={spelling}")
        assert [t["id"] for t in listed["tasks"]] == [dead]
    out = plain(dtq(server, "task", "get", dead))
    assert "dead_lettered" in out and "ValueError: boom (permanent)" in out


def test_retry_requeues_a_dead_lettered_task(server: Server, channel: grpc.Channel) -> None:
    task = submit(channel, "bad")
    dead_letter(channel, lease_one(channel, "bad"))
    reply = dtq_json(server, "task", "retry", task.id)
    assert reply["task"]["state"] == "STATE_PENDING"
    assert get(channel, task.id).state == State.STATE_PENDING


def test_retry_of_a_pending_task_is_refused(server: Server, channel: grpc.Channel) -> None:
    task = submit(channel)
    result = dtq(server, "task", "retry", task.id)
    assert_one_line_error(result, "FAILED_PRECONDITION ")
    assert get(channel, task.id).state == State.STATE_PENDING


def test_cancel_then_cancel_again(server: Server, channel: grpc.Channel) -> None:
    task = submit(channel)
    out = plain(dtq(server, "task", "cancel", task.id))
    assert "Task cancelled" in out and "cancelled" in out
    assert get(channel, task.id).state == State.STATE_CANCELLED
    assert_one_line_error(dtq(server, "task", "cancel", task.id), "FAILED_PRECONDITION ")


def test_watch_prints_states_and_exits_by_outcome(server: Server, channel: grpc.Channel) -> None:
    cancelled = submit(channel)
    tasks_stub(channel).CancelTask(task_service_pb2.CancelTaskRequest(id=cancelled.id))
    result = dtq(server, "task", "watch", cancelled.id)
    assert result.returncode == 1
    assert cancelled.id in result.stdout and "cancelled" in result.stdout
    done = submit(channel, "ok")
    complete(channel, lease_one(channel, "ok"))
    result = dtq(server, "task", "watch", done.id, "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1]["task"]["state"] == "STATE_COMPLETED"


def test_unknown_id_is_not_found(server: Server) -> None:
    missing = "01900000-0000-7000-8000-000000000000"
    for command in ("get", "cancel", "retry", "watch"):
        result = dtq(server, "task", command, missing)
        assert_one_line_error(result, f"NOT_FOUND TASK_NOT_FOUND: no task with id {missing}")


def test_invalid_id_is_invalid_argument(server: Server) -> None:
    assert_one_line_error(dtq(server, "task", "get", "not-a-uuid"), "INVALID_ARGUMENT ")


def test_unreachable_server_gets_a_helpful_message(server: Server) -> None:
    address = f"127.0.0.1:{free_port()}"
    for args in (("task", "get", "x"), ("queue", "stats"), ("system", "health", "--json")):
        result = dtq(server, *args, "--server", address)
        assert result.returncode == 1
        assert result.stderr == UNREACHABLE.format(address, "from --server")
    result = dtq(server, "worker", "list", DTQ_SERVER_ADDRESS=address)
    expected = UNREACHABLE.format(address, "from DTQ_SERVER_ADDRESS")
    assert (result.returncode, result.stderr) == (1, expected)


# -- queues, workers, health ------------------------------------------------------------


def test_queue_stats_pause_and_resume(server: Server, channel: grpc.Channel) -> None:
    submit(channel, queue="emails", priority=task_pb2.PRIORITY_HIGH)
    submit(channel, queue="emails", scheduled_at=later())
    (stats,) = dtq_json(server, "queue", "stats", "--queue=emails")["queues"]
    assert (stats["queue"], stats["pending"], stats["scheduled"]) == ("emails", "1", "1")
    assert stats["pending_by_priority"]["high"] == "1"
    assert stats["paused"] is False
    paused = dtq_json(server, "queue", "pause", "emails")
    assert paused["stats"]["paused"] is True
    out = plain(dtq(server, "queue", "stats"))
    assert "emails" in out and "paused" in out
    out = plain(dtq(server, "queue", "resume", "emails"))
    assert "queue emails resumed" in out
    (stats,) = dtq_json(server, "queue", "stats", "--queue", "emails")["queues"]
    assert stats["paused"] is False


def test_queue_pause_of_a_bad_name_is_invalid_argument(server: Server) -> None:
    assert_one_line_error(dtq(server, "queue", "pause", "no spaces!"), "INVALID_ARGUMENT ")


def test_worker_list(server: Server, channel: grpc.Channel) -> None:
    assert dtq_json(server, "worker", "list")["workers"] == []
    stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
    request = worker_service_pb2.RegisterWorkerRequest(
        worker_id="cli-worker-1", hostname="h1", pid=42, task_types=["report"], concurrency=3
    )
    stub.RegisterWorker(request, timeout=10)
    (worker,) = dtq_json(server, "worker", "list")["workers"]
    assert (worker["id"], worker["hostname"], worker["concurrency"]) == ("cli-worker-1", "h1", 3)
    out = plain(dtq(server, "worker", "list"))
    assert "cli-worker-1" in out and "report" in out and "0/3" in out


def test_system_health(server: Server) -> None:
    health = dtq_json(server, "system", "health")
    assert health["status"] in ("HEALTH_STATUS_HEALTHY", "HEALTH_STATUS_DEGRADED")
    assert {c["name"] for c in health["components"]} == {"postgres", "redis", "workers"}
    assert health["version"]
    out = plain(dtq(server, "system", "health"))
    assert "postgres" in out and "redis" in out
