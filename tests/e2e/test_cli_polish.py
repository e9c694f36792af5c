"""The CLI for people, run as the installed `dtq` program against real processes:
`--json` everywhere, `submit-batch`, `queue stats --watch`, live following on a
terminal, helpful errors, shell completion, and the seed's example script."""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from dtq.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc
from tests.conftest import Server, WorkerFactory
from tests.support.procs import ROOT, Proc, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
State = task_pb2.Task.State
BIN = Path(sys.executable).with_name("dtq")
DTQ = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "dtq.cli.main"]
COLOUR = re.compile(r"\x1b\[[0-9;]*3[0-7][0-9;]*m")  # an SGR sequence setting a colour
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


def env_of(server: Server, **extra: str) -> dict[str, str]:
    return {**server.env, "DTQ_SERVER_ADDRESS": server.address, **extra}


def dtq(
    server: Server, *args: str, stdin: str | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DTQ, *args],
        env=env_of(server, **extra),
        input=stdin,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def dtq_json(server: Server, *args: str, stdin: str | None = None) -> Any:
    result = dtq(server, *args, "--json", stdin=stdin)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def on_a_terminal(server: Server, *args: str, **extra: str) -> tuple[int, str]:
    """The command with stdin, stdout and stderr on a pseudo-terminal; its exit
    code and everything it wrote there."""
    controller, terminal = pty.openpty()
    environ = {k: v for k, v in env_of(server).items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    environ.update(TERM="xterm-256color", COLUMNS="120", LINES="40", **extra)
    proc = subprocess.Popen(
        [*DTQ, *args], env=environ, stdin=terminal, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=60)
        reader.join(10)
    finally:
        proc.kill()
        os.close(controller)
    return code, b"".join(chunks).decode(errors="replace")


def tasks_stub(channel: grpc.Channel) -> task_service_pb2_grpc.TaskServiceStub:
    return task_service_pb2_grpc.TaskServiceStub(channel)


def all_tasks(channel: grpc.Channel) -> list[task_pb2.Task]:
    request = task_service_pb2.ListTasksRequest(page_size=1000, view=task_pb2.TASK_VIEW_FULL)
    return list(tasks_stub(channel).ListTasks(request, timeout=10).tasks)


def get(channel: grpc.Channel, task_id: str) -> task_pb2.Task:
    return tasks_stub(channel).GetTask(task_service_pb2.GetTaskRequest(id=task_id), timeout=10).task


# -- --json everywhere --------------------------------------------------------------


def test_every_data_command_prints_json(server: Server, channel: grpc.Channel) -> None:
    submitted = dtq_json(server, "task", "submit", "report", '{"day": 1}', "--queue=jobs")
    task_id = submitted["task"]["id"]
    assert dtq_json(server, "task", "get", task_id)["task"]["payload"] == {"day": 1}
    assert [t["id"] for t in dtq_json(server, "task", "list")["tasks"]] == [task_id]
    assert dtq_json(server, "queue", "stats")["queues"][0]["queue"] == "jobs"
    assert dtq_json(server, "queue", "pause", "jobs")["stats"]["paused"] is True
    assert dtq_json(server, "queue", "resume", "jobs")["stats"]["paused"] is False
    assert dtq_json(server, "worker", "list")["workers"] == []
    assert dtq_json(server, "system", "health")["components"]
    assert dtq_json(server, "dlq", "list")["tasks"] == []
    assert dtq_json(server, "task", "cancel", task_id)["task"]["state"] == "STATE_CANCELLED"
    watched = dtq(server, "task", "watch", task_id, "--json")
    assert watched.returncode == 1
    assert json.loads(watched.stdout.splitlines()[-1])["task"]["state"] == "STATE_CANCELLED"
    batch = dtq(server, "task", "submit-batch", "-", "--json", stdin='{"type": "t"}\n')
    assert batch.returncode == 0, batch.stderr
    assert json.loads(batch.stdout)["accepted"] == 1
    revisions = dtq_json(server, "db", "current")
    assert revisions["current"] == revisions["latest"] is not None


def test_ctrl_c_stops_following_not_the_task(server: Server, channel: grpc.Channel) -> None:
    task_id = dtq_json(server, "task", "submit", "nobody_runs_this")["task"]["id"]
    for args, code in (
        (("task", "watch", task_id), 130),
        (("queue", "stats", "--watch", "--interval=0.2"), 0),
    ):
        proc = subprocess.Popen(
            [*DTQ, *args], env=env_of(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # following
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == code, err
        assert b"Traceback" not in err
        if code == 130:
            assert err.decode() == (
                f"stopped following; task {task_id} goes on (dtq task watch {task_id})\n"
            )
    assert get(channel, task_id).state == State.STATE_PENDING


def test_quiet_prints_only_the_id_and_the_end_state(server: Server, channel: grpc.Channel) -> None:
    result = dtq(server, "task", "submit", "report", "{}", "-q")
    assert result.returncode == 0, result.stderr
    task_id = result.stdout.strip()
    assert get(channel, task_id).type == "report"
    tasks_stub(channel).CancelTask(task_service_pb2.CancelTaskRequest(id=task_id), timeout=10)
    watched = dtq(server, "task", "watch", task_id, "--quiet")
    assert (watched.returncode, watched.stdout) == (1, "cancelled\n")


# -- submit-batch ---------------------------------------------------------------------


BATCH = [
    '{"type": "ok_a", "payload": {"n": 1}, "priority": "high", "queue": "batch"}',  # 1
    "{not json",  # 2
    '{"type": "ok_b", "max_retries": 0, "timeout": 60, "delay": 3600}',  # 3
    '{"type": "ok_c", "idempotency_key": "k1", "payload": {"v": 1}}',  # 4
    "",  # 5: blank, skipped
    '{"type": "ok_c", "idempotency_key": "k1", "payload": {"v": 1}}',  # 6: deduplicated
    '{"payload": {}}',  # 7: no type
    '{"type": "ok_d", "colour": "red"}',  # 8: unknown field
    '{"type": "ok_d", "priority": "urgent"}',  # 9: bad priority
    '{"type": "ok_d", "queue": "no spaces!"}',  # 10: the server rejects the queue name
    '{"type": "ok_d", "timeout": 999999}',  # 11: the server rejects the timeout
    '{"type": "ok_e", "scheduled_at": "2099-01-01T00:00:00Z", "lease_duration": 12}',  # 12
    '{"type": "ok_c", "idempotency_key": "k1", "payload": {"v": 2}}',  # 13: key reused
    "[1, 2]",  # 14
    '{"type": "ok_f"}',  # 15
]


def test_submit_batch_with_good_and_bad_lines(
    server: Server, channel: grpc.Channel, tmp_path: Path
) -> None:
    file = tmp_path / "tasks.jsonl"
    file.write_text("\n".join(BATCH) + "\n")
    result = dtq(server, "task", "submit-batch", str(file), "--chunk-size=3", "--json")
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["accepted"], summary["created"], summary["deduplicated"]) == (6, 5, 1)
    rejected = {r["line"]: r["error"] for r in summary["rejected"]}
    assert sorted(rejected) == [2, 7, 8, 9, 10, 11, 13, 14]
    assert rejected[2].startswith("not valid JSON")
    assert rejected[7] == "type: required"
    assert rejected[8].startswith("unknown field 'colour'")
    assert rejected[9].startswith("priority: one of low, medium, high")
    assert rejected[10].startswith("INVALID_ARGUMENT ") and "queue" in rejected[10]
    assert rejected[11].startswith("INVALID_ARGUMENT ") and "timeout" in rejected[11]
    assert rejected[13].startswith("ALREADY_EXISTS IDEMPOTENCY_KEY_REUSED")
    assert rejected[14] == "must be a JSON object, not list"
    by_line = {t["line"]: t for t in summary["tasks"]}
    assert sorted(by_line) == [1, 3, 4, 6, 12, 15]
    assert by_line[4]["id"] == by_line[6]["id"] and by_line[6]["deduplicated"] is True
    stored = {t.id: t for t in all_tasks(channel)}
    assert len(stored) == 5
    first, third, twelfth = (stored[by_line[n]["id"]] for n in (1, 3, 12))
    assert (first.priority, first.queue, first.payload["n"]) == (task_pb2.PRIORITY_HIGH, "batch", 1)
    assert (third.state, third.max_retries, third.timeout.seconds) == (State.STATE_SCHEDULED, 0, 60)
    assert twelfth.state == State.STATE_SCHEDULED and twelfth.lease_duration.seconds == 12


def test_submit_batch_prints_a_summary_and_reads_stdin(
    server: Server, channel: grpc.Channel
) -> None:
    lines = "\n".join(['{"type": "a"}', '{"type": "b"}', "oops", '{"type": "a"}'])
    result = dtq(server, "task", "submit-batch", "-", "--queue=from-stdin", stdin=lines)
    assert result.returncode == 1
    assert result.stdout == "4 line(s): 3 accepted (3 new, 0 deduplicated), 1 rejected\n"
    assert result.stderr.startswith("line 3: not valid JSON")
    assert {t.queue for t in all_tasks(channel)} == {"from-stdin"}


def test_submit_batch_of_the_example_file_and_a_missing_file(server: Server) -> None:
    example = ROOT / "examples" / "tasks.jsonl"
    summary = dtq_json(server, "task", "submit-batch", str(example))
    assert summary["accepted"] == len(example.read_text().splitlines())
    assert summary["rejected"] == []
    missing = dtq(server, "task", "submit-batch", "/nonexistent/tasks.jsonl")
    assert missing.returncode == 2
    assert (
        missing.stderr == "error: cannot read /nonexistent/tasks.jsonl: No such file or directory\n"
    )


def test_submit_batch_shows_a_progress_bar_on_a_terminal(
    server: Server, channel: grpc.Channel, tmp_path: Path
) -> None:
    file = tmp_path / "many.jsonl"
    lines = [f'{{"type": "bulk", "payload": {{"i": {i}}}}}\n' for i in range(1200)]
    lines.insert(700, '{"type": "bulk", "queue": "bad queue!"}\n')  # line 701
    file.write_text("".join(lines))
    code, out = on_a_terminal(server, "task", "submit-batch", str(file))
    assert code == 1, out
    text = ANSI.sub("", out)
    assert "1201/1201" in text and "1 rejected" in text
    assert "line 701: INVALID_ARGUMENT " in text
    assert "1201 line(s): 1200 accepted (1200 new, 0 deduplicated), 1 rejected" in text
    (stats,) = dtq_json(server, "queue", "stats")["queues"]
    assert stats["pending"] == "1200"


# -- queue stats --watch ------------------------------------------------------------------


def test_queue_stats_watch_refreshes_count_times(server: Server, channel: grpc.Channel) -> None:
    dtq(server, "task", "submit", "t", "{}", "--queue=watched")
    started = dtq(server, "queue", "stats", "--watch", "--count", "2", "--interval", "0.2")
    assert started.returncode == 0, started.stderr
    assert started.stdout.count("queue stats at ") == 2
    assert started.stdout.count("watched") == 2
    assert "\x1b[" not in started.stdout
    lines = dtq(server, "queue", "stats", "--count=3", "--interval=0.1", "--json").stdout
    replies = [json.loads(line) for line in lines.splitlines()]
    assert len(replies) == 3
    assert all(r["queues"][0]["queue"] == "watched" for r in replies)


def test_queue_stats_watch_in_place_on_a_terminal(server: Server) -> None:
    dtq(server, "task", "submit", "t", "{}", "--queue=live")
    code, out = on_a_terminal(server, "queue", "stats", "-w", "--count=2", "--interval=0.2")
    assert code == 0, out
    assert "\x1b[" in out  # cursor movement: the table is redrawn where it stands
    assert "live" in out and "queue stats at" in out


# -- following a task to its end --------------------------------------------------------


def test_submit_wait_shows_a_live_status_on_a_terminal(
    server: Server, start_worker: WorkerFactory
) -> None:
    start_worker()
    payload = '{"message": "hi", "sleep_duration": 1.5}'
    code, out = on_a_terminal(server, "task", "submit", "test_task", payload, "--wait")
    assert code == 0, out
    text = ANSI.sub("", out)
    assert "Task submitted" in text
    assert "running, attempt 1" in text  # the status line, with the elapsed time
    assert "completed" in text
    assert COLOUR.search(out)  # states are coloured on a terminal


def test_no_color_on_a_terminal_and_failure_exit_code(
    server: Server, start_worker: WorkerFactory
) -> None:
    start_worker()
    payload = '{"fail": true, "permanent": true, "error": "nope"}'
    code, out = on_a_terminal(
        server, "task", "submit", "test_task", payload, "--wait", NO_COLOR="1"
    )
    assert code == 1, out
    assert not COLOUR.search(out)
    assert re.search(r"error: task \S+ ended dead_lettered, not completed", out)
    assert "PermanentError: nope" in out


# -- helpful errors ---------------------------------------------------------------------


def test_unreachable_server_names_the_address_and_how_to_start_one(server: Server) -> None:
    address = f"127.0.0.1:{free_port()}"
    how = (
        'start one with "dtq dev" (everything on this machine) or "dtq server", '
        "or point --server/DTQ_SERVER_ADDRESS at a running one\n"
    )
    commands = [
        ("task", "submit", "t", "{}", "--wait"),
        ("task", "submit-batch", "-"),
        ("queue", "stats", "--watch", "--count=2"),
        ("task", "list", "--json"),
    ]
    for args in commands:
        flag = dtq(server, *args, "--server", address, stdin='{"type": "t"}\n')
        assert flag.returncode == 1
        assert (
            flag.stderr == f"error: cannot reach the dtq server at {address} (from --server): {how}"
        )
        assert flag.stdout == ""
    env = dtq(server, "worker", "list", DTQ_SERVER_ADDRESS=address)
    assert env.returncode == 1
    source = "(from DTQ_SERVER_ADDRESS)"
    assert env.stderr == f"error: cannot reach the dtq server at {address} {source}: {how}"


def test_bad_settings_and_usage_exit_2(server: Server) -> None:
    result = dtq(server, "task", "list", DTQ_SERVER_PORT="not-a-port")
    assert (result.returncode, result.stderr.startswith("error: DTQ_SERVER_PORT: ")) == (2, True)
    assert dtq(server, "queue", "stats", "--interval=0").returncode == 2
    assert dtq(server, "task", "frobnicate").returncode == 2


# -- shell completion -------------------------------------------------------------------


@pytest.mark.skipif(not BIN.exists(), reason="the dtq script is not installed")
@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(server: Server, shell: str) -> None:
    """`--show-completion` prints the script for the shell it runs in; the
    `_DTQ_COMPLETE=source_<shell>` variable, for any shell."""
    # Run from a bash, as a user would: Typer finds the shell among the parent
    # processes, and the test runner's parents need not include one.
    line = shlex.join([*DTQ, "--show-completion"])
    shown = subprocess.run(
        ["bash", "-c", f"{line}; exit $?"],
        env=env_of(server),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "_DTQ_COMPLETE=complete_" in shown.stdout
    script = dtq(server, _DTQ_COMPLETE=f"source_{shell}")
    assert script.returncode == 0, script.stderr
    assert f"_DTQ_COMPLETE=complete_{shell}" in script.stdout


@pytest.mark.skipif(not BIN.exists(), reason="the dtq script is not installed")
def test_completion_completes_commands_and_states(server: Server) -> None:
    def complete(words: str) -> list[str]:
        extra = {"_DTQ_COMPLETE": "complete_bash", "COMP_WORDS": words}
        extra["COMP_CWORD"] = str(len(words.split()) - 1)
        return dtq(server, **extra).stdout.split()

    assert complete("dtq ta") == ["task"]
    assert complete("dtq task sub") == ["submit", "submit-batch"]
    assert complete("dtq task list --status dead") == ["dead_lettered", "dead"]


# -- the seed's example script ----------------------------------------------------------


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_example_script_reaches_the_expected_end_states(
    server: Server, channel: grpc.Channel, manager: Proc, start_worker: WorkerFactory
) -> None:
    start_worker("--concurrency", "8")
    script = ROOT / "examples" / "submit_test_tasks.sh"
    result = subprocess.run(
        ["bash", str(script), "--wait"],
        env=env_of(server, DTQ=" ".join(DTQ), SCHEDULE_IN="2"),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "UNEXPECTED" not in result.stdout
    tasks = all_tasks(channel)
    ends = Counter(task_pb2.Task.State.Name(t.state) for t in tasks)
    assert ends == {"STATE_COMPLETED": 12, "STATE_DEAD_LETTERED": 3, "STATE_CANCELLED": 1}
    assert {t.type for t in tasks} == {
        "test_task",
        "image_processing",
        "email_sending",
        "data_etl",
        "unknown_task_type",
    }
    assert {t.priority for t in tasks} >= {
        task_pb2.PRIORITY_LOW,
        task_pb2.PRIORITY_MEDIUM,
        task_pb2.PRIORITY_HIGH,
    }

    def by_message(message: str) -> task_pb2.Task:
        return next(t for t in tasks if "message" in t.payload and t.payload["message"] == message)

    flaky = by_message("flaky")
    assert (flaky.state, flaky.attempts) == (State.STATE_COMPLETED, 2)
    slow = by_message("too slow")
    assert "timeout" in slow.last_error.message
    scheduled = by_message("Scheduled task")
    assert scheduled.started_at.ToDatetime() >= scheduled.scheduled_at.ToDatetime()
    batch = next(t for t in tasks if "images" in t.payload)
    assert len(json_format.MessageToDict(batch.result)["outputs"]) == 3
