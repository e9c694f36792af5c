"""What an operator sees on /metrics of each process after real work: the
task counters by queue, type and priority, the wait and duration histograms,
worker slots, queue gauges by priority. Scraped over HTTP, parsed with the
Prometheus text parser."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dtq.v1 import task_service_pb2, task_service_pb2_grpc
from tests.conftest import Server, WorkerFactory
from tests.support.procs import Proc, dtq_args, free_port, wait_until
from tests.support.tasks import State, submit, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {
        "DTQ_WORKER_RETRY_BACKOFF_BASE": "2",
        "DTQ_WORKER_MAX_RETRY_BACKOFF": "0.2",
        "DTQ_OBSERVE_INTERVAL": "0.2",
    }


@pytest.fixture(scope="module")
def tasks(channel: grpc.Channel) -> task_service_pb2_grpc.TaskServiceStub:
    return task_service_pb2_grpc.TaskServiceStub(channel)


def ops_port(proc: Proc) -> int:
    """The /metrics port of a process, from its log."""
    wait_until(lambda: "ops_http_started" in proc.output(), 10, "ops server")
    for line in proc.output().splitlines():
        if "ops_http_started" in line:
            return int(json.loads(line)["port"])
    raise AssertionError("no ops_http_started line")


@pytest.fixture(scope="module")
def manager(server: Server) -> Iterator[Proc]:
    """A manager with its /metrics endpoint on (the shared fixture's is off)."""
    args = dtq_args("manager", "--metrics-port", str(free_port()))
    proc = Proc("manager", args, server.env)
    wait_until(lambda: "manager_started" in proc.output() or not proc.alive(), 30, "dtq manager")
    yield proc
    proc.stop()


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@pytest.fixture
def worker(start_worker: WorkerFactory) -> Iterator[Proc]:
    queues = ("-q", "m1", "-q", "m2", "-q", "m3")
    yield start_worker("--concurrency", "3", *queues, "--metrics-port", str(free_port()))


def test_server_counts_outcomes_retries_and_times_by_queue_type_priority(
    tasks, server: Server, worker: Proc, manager: Proc
) -> None:
    ok = submit(tasks, "noop", queue="m1", priority="PRIORITY_HIGH")
    flaky = submit(tasks, "test_task", queue="m1", payload={"fail_times": 1})
    dead = submit(tasks, "test_task", queue="m1", payload={"fail": True, "permanent": True})
    for task in (ok, flaky, dead):
        wait_for(tasks, task.id)
    assert wait_for(tasks, flaky.id).attempts == 2

    s = scrape(server.metrics_port)
    assert value(s, "dtq_tasks_submitted_total", queue="m1", type="noop", priority="high") == 1
    finished = "dtq_tasks_finished_total"
    assert value(s, finished, queue="m1", type="noop", priority="high", outcome="completed") == 1
    assert value(s, finished, queue="m1", type="test_task", outcome="completed") == 1
    assert value(s, finished, queue="m1", type="test_task", outcome="failed") == 1
    assert value(s, finished, queue="m1", type="test_task", outcome="dead_lettered") == 1
    retried = "dtq_tasks_retried_total"
    assert value(s, retried, queue="m1", type="test_task", reason="failure") == 1
    # Four attempts were leased and four outcomes recorded.
    assert value(s, "dtq_task_queue_wait_seconds_count", queue="m1") == 4
    assert value(s, "dtq_task_duration_seconds_count", queue="m1") == 4
    assert value(s, "dtq_task_duration_seconds_count", type="noop", outcome="completed") == 1
    submit_ok = {"method": "SubmitTask", "code": "OK"}
    assert value(s, "dtq_grpc_request_duration_seconds_count", **submit_ok) >= 3
    assert value(s, "dtq_stale_outcomes_total") == 0
    assert value(s, "dtq_worker_streams") == 1
    assert value(s, "dtq_worker_stream_slots", kind="capacity") == 3


def test_operator_retry_is_counted(tasks, server: Server, worker: Proc) -> None:
    task = submit(tasks, "test_task", queue="m2", payload={"fail": True, "permanent": True})
    assert wait_for(tasks, task.id).state == State.Value("STATE_DEAD_LETTERED")
    tasks.RetryTask(task_service_pb2.RetryTaskRequest(id=task.id), timeout=10)
    wait_for(tasks, task.id)
    s = scrape(server.metrics_port)
    assert value(s, "dtq_tasks_retried_total", queue="m2", reason="operator") == 1


def test_worker_exports_its_slots_and_outcomes(tasks, worker: Proc) -> None:
    wait_for(tasks, submit(tasks, "noop", queue="m3").id)
    s = scrape(ops_port(worker))
    assert value(s, "dtq_worker_slots") == 3
    assert value(s, "dtq_worker_connected") == 1
    assert value(s, "dtq_worker_tasks_total", type="noop", outcome="completed") >= 1


def test_manager_exports_depth_and_oldest_age_by_priority(tasks, manager: Proc) -> None:
    # No worker serves queue m4: the tasks wait and the manager reports them.
    for priority in ("PRIORITY_LOW", "PRIORITY_LOW", "PRIORITY_HIGH"):
        submit(tasks, "noop", queue="m4", priority=priority)
    port = ops_port(manager)

    def observed() -> bool:
        # Both figures: a tick between the submissions sees the low ones only.
        s = scrape(port)
        low = value(s, "dtq_queue_depth", queue="m4", priority="low")
        return low == 2 and value(s, "dtq_queue_depth", queue="m4", priority="high") == 1

    wait_until(observed, 10, "queue gauges")
    s = scrape(port)
    assert value(s, "dtq_queue_depth", queue="m4", priority="medium") == 0
    age = "dtq_queue_oldest_pending_age_seconds"
    assert value(s, age, queue="m4", priority="low") > 0
    assert value(s, age, queue="m4", priority="medium") == 0
