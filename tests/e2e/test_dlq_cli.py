"""`dtq dlq ...` against a real `dtq server`: commands run as subprocesses. Tasks
are dead-lettered by the test playing the worker (tests/support/stub_worker.py)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from typing import Any

import grpc
import pytest

from dtq.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc
from tests.conftest import Server
from tests.support.procs import dtq_args, free_port
from tests.support.stub_worker import TRACEBACK, completed, dead_letter, submit

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
State = task_pb2.Task.State


def dtq(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """The command with stdin at /dev/null: not a terminal."""
    return subprocess.run(
        dtq_args(*args),
        env={**server.env, "DTQ_SERVER_ADDRESS": server.address},
        stdin=subprocess.DEVNULL,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


def dtq_json(server: Server, *args: str) -> Any:
    result = dtq(server, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], prefix: str, code: int = 1) -> None:
    assert result.returncode == code, result
    assert result.stderr.startswith(f"error: {prefix}"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def get(channel: grpc.Channel, task_id: str) -> task_pb2.Task:
    stub = task_service_pb2_grpc.TaskServiceStub(channel)
    return stub.GetTask(task_service_pb2.GetTaskRequest(id=task_id), timeout=10).task


def states(channel: grpc.Channel) -> dict[str, int]:
    stub = task_service_pb2_grpc.TaskServiceStub(channel)
    reply = stub.ListTasks(task_service_pb2.ListTasksRequest(page_size=1000), timeout=10)
    return {t.id: t.state for t in reply.tasks}


# -- list and inspect ---------------------------------------------------------------------


def test_list_shows_dead_letters_with_their_last_error(
    server: Server, channel: grpc.Channel
) -> None:
    dead = dead_letter(channel, "report")
    other = completed(channel, "report")
    out = ok(dtq(server, "dlq", "list"))
    assert dead.id in out and other not in out
    assert "ValueError: boom" in out
    assert "1 dead-lettered task(s)" in out
    listed = dtq_json(server, "dlq", "list")["tasks"]
    assert [t["id"] for t in listed] == [dead.id]
    assert listed[0]["state"] == "STATE_DEAD_LETTERED"
    assert listed[0]["attempts"] == 1
    assert listed[0]["last_error"]["type"] == "ValueError"


def test_list_filters_by_queue_and_type_and_pages(server: Server, channel: grpc.Channel) -> None:
    a1, a2 = dead_letter(channel, "a", "q1"), dead_letter(channel, "a", "q1")
    b = dead_letter(channel, "b", "q1")
    other_queue = dead_letter(channel, "a", "q2")

    def ids(*args: str) -> list[str]:
        return [t["id"] for t in dtq_json(server, "dlq", "list", *args)["tasks"]]

    assert ids("--queue", "q1") == [b.id, a2.id, a1.id]  # newest first
    assert ids("--queue", "q1", "--type", "a") == [a2.id, a1.id]
    assert ids("--type", "a") == [other_queue.id, a2.id, a1.id]
    assert ids("--queue", "q1", "--size", "2", "--page", "2") == [a1.id]
    assert "next: --page 2" in ok(dtq(server, "dlq", "list", "--size", "2"))


def test_inspect_shows_payload_error_and_traceback(server: Server, channel: grpc.Channel) -> None:
    dead = dead_letter(channel, "report", invoice=42)
    out = ok(dtq(server, "dlq", "inspect", dead.id))
    assert "Dead-lettered task" in out
    assert '"invoice": 42' in out
    assert "ValueError: boom (permanent)" in out
    assert 'File "handler.py", line 7' in out
    reply = dtq_json(server, "dlq", "inspect", dead.id)
    assert reply["task"]["last_error"]["traceback"] == TRACEBACK
    assert reply["task"]["payload"] == {"invoice": 42}


def test_inspect_of_an_unknown_or_malformed_id_is_one_line(server: Server) -> None:
    missing = "01a22029-0000-7000-8000-000000000000"
    one_line_error(dtq(server, "dlq", "inspect", missing), "NOT_FOUND ")
    one_line_error(dtq(server, "dlq", "inspect", "nope"), "INVALID_ARGUMENT ")


# -- requeue --------------------------------------------------------------------------------


def test_requeue_one_gives_a_fresh_budget(server: Server, channel: grpc.Channel) -> None:
    dead = dead_letter(channel, "report")
    out = ok(dtq(server, "dlq", "requeue", dead.id))
    assert "Task queued again" in out
    again = get(channel, dead.id)
    assert again.state == State.STATE_PENDING
    assert again.max_retries - again.attempts == dead.max_retries


def test_requeue_one_refuses_a_task_that_is_not_dead(server: Server, channel: grpc.Channel) -> None:
    pending = submit(channel, "report")
    result = dtq(server, "dlq", "requeue", pending.id)
    one_line_error(result, f"task {pending.id} is pending, not dead-lettered")
    assert get(channel, pending.id).state == State.STATE_PENDING


def test_requeue_all_of_a_queue_and_type(server: Server, channel: grpc.Channel) -> None:
    a = [dead_letter(channel, "a", "q1") for _ in range(2)]
    b = dead_letter(channel, "b", "q1")
    other = dead_letter(channel, "a", "q2")
    assert dtq_json(server, "dlq", "requeue", "--all", "--queue", "q1", "--type", "a") == {
        "requeued_count": 2
    }
    now = states(channel)
    assert [now[t.id] for t in a] == [State.STATE_PENDING] * 2
    assert (now[b.id], now[other.id]) == (State.STATE_DEAD_LETTERED,) * 2


def test_requeue_all_of_every_queue(server: Server, channel: grpc.Channel) -> None:
    dead = [dead_letter(channel, "a", "q1"), dead_letter(channel, "b", "q2")]
    out = ok(dtq(server, "dlq", "requeue", "--all"))
    assert "requeued 1 dead-lettered task(s) from queue q1" in out
    assert "requeued 1 dead-lettered task(s) from queue q2" in out
    assert {states(channel)[t.id] for t in dead} == {State.STATE_PENDING}
    assert "no dead-lettered tasks to requeue" in ok(dtq(server, "dlq", "requeue", "--all"))


@pytest.mark.parametrize(
    "args",
    [(), ("01a22029-0000-7000-8000-000000000000", "--all"), ("x", "--queue", "q")],
)
def test_requeue_needs_an_id_or_all(server: Server, args: tuple[str, ...]) -> None:
    one_line_error(dtq(server, "dlq", "requeue", *args), "", code=2)


# -- purge ----------------------------------------------------------------------------------


def test_purge_refuses_without_yes_when_not_on_a_terminal(
    server: Server, channel: grpc.Channel
) -> None:
    dead = dead_letter(channel, "report")
    one_line_error(dtq(server, "dlq", "purge", "--queue", "default"), "refusing to purge")
    assert get(channel, dead.id).state == State.STATE_DEAD_LETTERED


def test_purge_with_yes_deletes_the_queue_s_dead_letters(
    server: Server, channel: grpc.Channel
) -> None:
    gone = [dead_letter(channel, "a", "q1"), dead_letter(channel, "a", "q1")]
    kept = [dead_letter(channel, "b", "q1"), dead_letter(channel, "a", "q2")]
    alive = completed(channel, "a", "q1")
    reply = dtq_json(server, "dlq", "purge", "--queue", "q1", "--type", "a", "--yes")
    assert reply == {"purged_count": 2}
    left = states(channel)
    assert not {t.id for t in gone} & set(left)
    assert {t.id for t in kept} | {alive} <= set(left)
    out = ok(dtq(server, "dlq", "purge", "--queue", "q1", "-y"))
    assert "purged 1 dead-lettered task(s) from queue q1" in out


def on_a_terminal(server: Server, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command with stdin on a pseudo-terminal that types `answer`."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer.encode())
        return subprocess.run(
            dtq_args(*args),
            env={**server.env, "DTQ_SERVER_ADDRESS": server.address},
            stdin=terminal,
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        os.close(terminal)
        os.close(controller)


@pytest.mark.parametrize(("answer", "purged"), [("n\n", False), ("\n", False), ("y\n", True)])
def test_purge_asks_on_a_terminal(
    server: Server, channel: grpc.Channel, answer: str, purged: bool
) -> None:
    dead = [dead_letter(channel, "report", "jobs") for _ in range(2)]
    result = on_a_terminal(server, answer, "dlq", "purge", "--queue", "jobs")
    assert "Purge 2 dead-lettered tasks from queue jobs? [y/N]" in result.stderr
    left = states(channel)
    if purged:
        assert result.returncode == 0, result.stderr
        assert "purged 2 dead-lettered task(s) from queue jobs" in result.stdout
        assert not {t.id for t in dead} & set(left)
    else:
        assert result.returncode == 1
        assert result.stderr.endswith("error: nothing purged\n")
        assert {t.id for t in dead} <= set(left)


def test_purge_needs_a_queue(server: Server) -> None:
    result = dtq(server, "dlq", "purge", "--yes")
    assert result.returncode == 2
    assert "--queue" in result.stderr


def test_unreachable_server_is_one_line(server: Server) -> None:
    address = f"127.0.0.1:{free_port()}"
    for args in (("list",), ("requeue", "--all"), ("purge", "--queue", "q", "--yes")):
        result = dtq(server, "dlq", *args, "--server", address)
        one_line_error(result, f"cannot reach the dtq server at {address}")
