"""`dtq server --processes N`: N server processes on one port (SO_REUSEPORT),
supervised: connections spread over them, a task submitted to one is run by a
worker connected to another, a killed process is restarted, SIGTERM stops all."""

from __future__ import annotations

import os
import re
import signal
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from dtq.process_tree import descendants
from dtq.v1 import task_service_pb2_grpc
from tests.conftest import process_env
from tests.support.procs import Proc, dtq_args, free_port, grpc_serving, wait_until
from tests.support.tasks import State, submit, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
SUBMITS = re.compile(r'^dtq_grpc_requests_total\{code="OK",method="SubmitTask"\} (\S+)$', re.M)


@dataclass
class Group:
    proc: Proc
    address: str
    metrics: int
    env: dict[str, str]

    def children(self) -> list[int]:
        return descendants(self.proc.pid)

    def submits(self, index: int) -> float:
        """SubmitTask calls process `index` answered OK (its /metrics port)."""
        url = f"http://127.0.0.1:{self.metrics + index}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            found = SUBMITS.search(reply.read().decode())
        return float(found.group(1)) if found else 0.0

    def healthy(self, index: int) -> bool:
        try:
            url = f"http://127.0.0.1:{self.metrics + index}/health"
            with urllib.request.urlopen(url, timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False


@pytest.fixture
def group(pg_url: str, redis_url: str) -> Iterator[Group]:
    port, metrics = free_port(), free_port()
    while metrics + 1 == port:
        metrics = free_port()
    env = process_env(pg_url, redis_url)
    args = ["server", "--processes", "2", "--port", str(port), "--metrics-port", str(metrics)]
    proc = Proc("server-group", dtq_args(*args), env)
    g = Group(proc, f"127.0.0.1:{port}", metrics, env)
    try:
        wait_until(lambda: (g.healthy(0) and g.healthy(1)) or not proc.alive(), 30, "two servers")
        assert proc.alive(), proc.output()
        wait_until(lambda: grpc_serving(g.address), 10, "gRPC")
        yield g
    finally:
        proc.stop()


def connection(address: str) -> grpc.Channel:
    # Its own TCP connection (no subchannel shared with other channels).
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def test_connections_spread_and_any_process_dispatches(group: Group) -> None:
    worker = Proc(
        "worker",
        dtq_args("worker", "--metrics-port", "0"),
        {**group.env, "DTQ_SERVER_ADDRESS": group.address},
    )
    try:
        wait_until(lambda: "worker_connected" in worker.output(), 30, "worker stream")
        ids = []
        # The kernel picks a process per connection: open connections until
        # both processes have answered (bounded).
        for _ in range(64):
            with connection(group.address) as channel:
                tasks = task_service_pb2_grpc.TaskServiceStub(channel)
                ids.append(submit(tasks, "test_task", payload={"sleep_duration": 0}).id)
            if group.submits(0) and group.submits(1):
                break
        assert group.submits(0) > 0 and group.submits(1) > 0, "one process took every connection"
        # The worker's stream is on one process; tasks sent to the other ran too.
        with connection(group.address) as channel:
            tasks = task_service_pb2_grpc.TaskServiceStub(channel)
            for task_id in ids:
                assert wait_for(tasks, task_id).state == State.Value("STATE_COMPLETED")
    finally:
        worker.stop()


def test_a_killed_process_is_restarted_and_sigterm_stops_all(group: Group) -> None:
    first = group.children()
    assert len(first) == 2
    victim = first[0]
    signal_kill(victim)
    wait_until(lambda: len(group.children()) == 2 and victim not in group.children(), 15, "restart")
    wait_until(lambda: group.healthy(0) and group.healthy(1), 30, "both healthy again")
    assert "server_process_exited" in group.proc.output()
    with connection(group.address) as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        assert submit(tasks, "test_task").id
    children = group.children()
    assert group.proc.stop() == 0
    for pid in children:
        assert not pid_alive(pid), f"server process {pid} outlived the group"


def test_a_second_group_on_a_taken_port_refuses_to_start(group: Group) -> None:
    port = group.address.rsplit(":", 1)[1]
    second = Proc(
        "server-group-2",
        dtq_args("server", "--processes", "2", "--port", port, "--metrics-port", "0"),
        group.env,
    )
    assert second.popen.wait(30) == 2
    assert second.output().splitlines() == [f"dtq server: gRPC port {port} (from --port) is in use"]


def signal_kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
