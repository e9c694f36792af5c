"""A short run of `dtq bench` against real processes: the benchmark itself works
(every task confirmed completed, figures sane). The real benchmark is
benchmarks/run_dtq.py, outside the test run."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests.conftest import Server, WorkerFactory
from tests.support.procs import dtq_args

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean", "manager")]

TASKS = 300


def test_bench_burst_and_latency_complete_every_task(
    server: Server, start_worker: WorkerFactory
) -> None:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    start_worker("--queue", queue, "--concurrency", "8")
    command = dtq_args(
        "bench", "--server", server.address, "--queue", queue, "--json",
        "--tasks", str(TASKS), "--workloads", "burst,latency",
        "--rate", "100", "--duration", "2", "--timeout", "20",
    )  # fmt: skip
    done = subprocess.run(
        command, env=server.env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["workers"] == 1
    for kind in ("single", "batch"):
        figures = results["burst"][kind]
        assert figures["accepted"] == figures["completed"] == TASKS
        assert figures["errors"] == {}
        assert figures["accepted_per_s"] > 0
        assert figures["e2e_tasks_per_s"] > 0
        assert figures["rpc_ms"]["n"] == (TASKS if kind == "single" else 1)
    latency = results["latency"]
    assert latency["accepted"] == latency["completed"] == 200
    start, end = latency["submit_to_start_ms"], latency["submit_to_completed_ms"]
    assert 0 <= start["p50"] <= start["p99"] < 5_000
    assert start["p50"] <= end["p50"]
    assert latency["rpc_ms"]["n"] == 200


def test_bench_refuses_a_queue_no_worker_takes(server: Server) -> None:
    command = dtq_args("bench", "--server", server.address, "--queue", "nobody-takes-this")
    done = subprocess.run(
        command, env=server.env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 1
    assert "no worker takes 'noop' tasks from queue 'nobody-takes-this'" in done.stderr


def test_bench_client_workloads_complete_every_task(
    server: Server, start_worker: WorkerFactory
) -> None:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    start_worker("--queue", queue, "--concurrency", "8")
    command = dtq_args(
        "bench", "--server", server.address, "--queue", queue, "--json",
        "--tasks", str(TASKS), "--workloads", "client,client-latency", "--threads", "16",
        "--rate", "100", "--duration", "1", "--timeout", "20",
    )  # fmt: skip
    done = subprocess.run(
        command, env=server.env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    threads, lone = results["client"], results["client-latency"]
    assert threads["accepted"] == threads["completed"] == TASKS
    assert (threads["threads"], threads["coalesce"], threads["errors"]) == (16, True, {})
    assert threads["tasks_per_call"] > 1  # 16 threads at once: submits were coalesced
    assert threads["submit_ms"]["n"] == TASKS
    assert lone["accepted"] == lone["completed"] == lone["submit_ms"]["n"] == 100
    assert 0 <= lone["submit_to_start_ms"]["p50"] <= lone["submit_to_start_ms"]["p99"]
