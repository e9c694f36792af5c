"""Ports of dtq processes: plain `dtq worker`s share a host (a taken default
metrics port gives way to the next free one, reported in ListWorkers), and a
port given explicitly that is taken is one line on stderr and exit code 2."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Callable

import grpc
import pytest

from dtq.v1 import admin_service_pb2, admin_service_pb2_grpc, task_service_pb2_grpc, worker_pb2
from tests.conftest import Server, process_env
from tests.support.procs import Proc, dtq_args, wait_until
from tests.support.tasks import State, get, submit

pytestmark = [pytest.mark.e2e]
LEASE = 3  # seconds: the killed worker's leases come back this fast
TASKS = 60


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"DTQ_LEASE_DURATION": str(LEASE)}


def list_workers(channel: grpc.Channel) -> list[worker_pb2.Worker]:
    stub = admin_service_pb2_grpc.AdminServiceStub(channel)
    reply = stub.ListWorkers(admin_service_pb2.ListWorkersRequest(page_size=100), timeout=10)
    return list(reply.workers)


def answers_metrics(address: str) -> bool:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        return reply.status == 200 and b"dtq_worker_connected" in reply.read()


def plain_worker(server: Server) -> Proc:
    """`dtq worker` with no port flag and no DTQ_METRICS_PORT: the default port."""
    env = {k: v for k, v in server.env.items() if k != "DTQ_METRICS_PORT"}
    env["DTQ_SERVER_ADDRESS"] = server.address
    return Proc("worker", dtq_args("worker"), env)


def connected_or_gone(proc: Proc) -> Callable[[], bool]:
    return lambda: "worker_connected" in proc.output() or not proc.alive()


@pytest.mark.usefixtures("clean", "manager")
def test_three_plain_workers_on_one_host_share_it_and_survive_a_kill(
    server: Server, channel: grpc.Channel
) -> None:
    workers = [plain_worker(server) for _ in range(3)]
    try:
        for w in workers:
            wait_until(connected_or_gone(w), 30, "worker stream")
            assert w.alive(), w.output()
        # All three wanted 9091: at least two took another port, and said so.
        assert sum("port_taken" in w.output() for w in workers) >= 2
        wait_until(lambda: len(list_workers(channel)) == 3, 10, "three registrations")
        listed = {w.pid: w.metrics_address for w in list_workers(channel)}
        assert sorted(listed) == sorted(w.pid for w in workers)
        assert len(set(listed.values())) == 3, listed
        for address in listed.values():
            assert answers_metrics(address), address
        table = run_dtq(["worker", "list"], {**server.env, "DTQ_SERVER_ADDRESS": server.address})
        assert "METRICS" in table.stdout and next(iter(listed.values())) in table.stdout

        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        ids = [submit(tasks, "test_task", payload={"sleep_duration": 0.5}).id for _ in range(TASKS)]
        victim = workers[0]
        wait_until(
            lambda: any(w.pid == victim.pid and w.active_tasks for w in list_workers(channel)),
            20,
            "the victim running tasks",
        )
        victim.kill()  # SIGKILL, mid-run: its leases expire and run elsewhere

        def all_done() -> bool:
            return all(get(tasks, i).state == State.Value("STATE_COMPLETED") for i in ids)

        wait_until(all_done, 90, f"all {TASKS} tasks COMPLETED", every=0.5)
    finally:
        for w in workers:
            w.stop()


def run_dtq(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dtq_args(*args), env=env, capture_output=True, text=True, timeout=60, check=False
    )


# (command line, a variable set to the port or "", the message) with {p} for the taken port.
EXPLICIT = [
    ("worker --metrics-port {p}", "", "worker: metrics port {p} (from --metrics-port)"),
    ("worker", "DTQ_METRICS_PORT", "worker: metrics port {p} (from DTQ_METRICS_PORT)"),
    ("manager --metrics-port {p}", "", "manager: metrics port {p} (from --metrics-port)"),
    ("manager", "DTQ_METRICS_PORT", "manager: metrics port {p} (from DTQ_METRICS_PORT)"),
    ("server --port 0 --metrics-port {p}", "", "server: metrics port {p} (from --metrics-port)"),
    ("server --port {p} --metrics-port 0", "", "server: gRPC port {p} (from --port)"),
    ("server --metrics-port 0", "DTQ_SERVER_PORT", "server: gRPC port {p} (from DTQ_SERVER_PORT)"),
    ("server --processes 2 --port {p}", "", "server: gRPC port {p} (from --port)"),
    ("envoy --port {p}", "", "envoy: listener port {p} (from --port)"),
    ("envoy --admin-port {p}", "", "envoy: admin port {p} (from --admin-port)"),
]


@pytest.mark.parametrize(("command", "variable", "message"), EXPLICIT)
def test_a_taken_explicit_port_is_one_line_and_exit_2(
    pg_url: str, redis_url: str, taken: int, command: str, variable: str, message: str
) -> None:
    env = process_env(pg_url, redis_url, DTQ_SERVER_ADDRESS="127.0.0.1:1")
    env.pop("DTQ_METRICS_PORT", None)
    if variable:
        env[variable] = str(taken)
    result = run_dtq(command.format(p=taken).split(), env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"dtq {message.format(p=taken)} is in use"]
    assert "Traceback" not in result.stdout + result.stderr
