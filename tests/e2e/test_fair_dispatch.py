"""Fair dispatch end to end: a fairness key's flood does not hold another key
back (real server, manager and worker; the example handler `test_task`), and
the key goes through the client, the CLI and REST."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtq import Client
from dtq.client import Submission, TaskState
from tests.conftest import Server, WorkerFactory
from tests.e2e.test_cli import dtq
from tests.e2e.test_rest import Rest
from tests.support.envoy import running_envoy
from tests.support.procs import dtq_args

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean", "manager")]
FLOOD = 2000
FEW = 5


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Client]:
    with Client(server.address, timeout=30) as c:
        yield c


def test_a_few_tasks_of_one_key_start_long_before_anothers_flood_drains(
    client: Client, start_worker: WorkerFactory
) -> None:
    flood = Submission("test_task", {"sleep_duration": 0.005}, queue="fair", fairness_key="a")
    for _ in range(FLOOD // 1000):
        client.submit_many([flood] * 1000)
    start_worker("--queue", "fair", "--concurrency", "4")
    time.sleep(0.5)  # the flood is running
    few = [
        client.submit("test_task", {}, queue="fair", fairness_key="b", priority="medium")
        for _ in range(FEW)
    ]
    done = [h.result(timeout=60) for h in few]
    assert done == [{"message": "", "attempt": 1}] * FEW
    # When b is done, most of a's flood is still waiting.
    (stats,) = client.queue_stats("fair")
    waiting = stats.pending
    assert waiting > FLOOD // 2, waiting
    info = client.get(few[0].id)
    assert info.fairness_key == "b"
    assert info.state == TaskState.COMPLETED


def test_the_cli_submits_with_a_fairness_key(server: Server) -> None:
    out = subprocess.run(
        dtq_args("task", "submit", "noop", "{}", "--fairness-key", "cust-7", "--json"),
        env={**server.env, "DTQ_SERVER_ADDRESS": server.address},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(out.stdout)["task"]["fairness_key"] == "cust-7"


def test_rest_takes_fairness_key_in_camel_case(server: Server, clean: None) -> None:
    with running_envoy(server.address) as envoy:
        task = Rest(envoy.port).submit(fairnessKey="cust-9")
    assert task["fairness_key"] == "cust-9"


def test_a_too_long_fairness_key_is_refused(client: Client) -> None:
    from dtq.client import InvalidArgument

    with pytest.raises(InvalidArgument, match="fairness_key"):
        client.submit("noop", {}, fairness_key="k" * 129)


def most_at_once(lines: list[str]) -> dict[str, int]:
    """Per fairness key (and '*': all), the most tasks between start and end at once."""
    now: dict[str, int] = {}
    most: dict[str, int] = {}
    for line in lines:
        event, key, _ = line.split()
        for k in (key, "*"):
            now[k] = now.get(k, 0) + (1 if event == "start" else -1)
            most[k] = max(most.get(k, 0), now[k])
    return most


def test_a_key_capped_at_two_never_runs_more_than_two(
    server: Server, client: Client, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    log = tmp_path / "handlers.log"
    set_limits = ("tenant", "set-limits", "default", "--key-max-running", "2")
    assert dtq(server, *set_limits).returncode == 0
    try:
        payload = {"log": str(log), "sleep": 0.05}
        tasks = [
            Submission("logged_sleep", {**payload, "key": k}, queue="cap", fairness_key=k)
            for k in ("a", "b", "c")
            for _ in range(30)
        ]
        handles = client.submit_many(tasks)
        start_worker("-m", "tests.support.cap_handlers", "--queue", "cap", "--concurrency", "8")
        for handle in handles:
            handle.result(timeout=60)
    finally:
        assert dtq(server, "tenant", "set-limits", "default").returncode == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 2 * len(tasks)
    most = most_at_once(lines)
    assert most["a"] == most["b"] == most["c"] == 2, most
    assert most["*"] > 2, most  # the other keys ran beside a capped one
