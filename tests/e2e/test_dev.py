"""`dtq dev` as a user runs it: from an empty data folder to tasks completed via
gRPC and REST; a crashed child comes back; the data survives a restart; and
neither SIGTERM nor SIGKILL of the supervisor leaves any process behind."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from dtq.process_tree import descendants
from dtq.v1 import task_service_pb2_grpc
from tests.support.procs import Proc, dtq_args, free_port, wait_until
from tests.support.tasks import State, get, submit, wait_for

pytestmark = pytest.mark.e2e

COMPLETED = State.Value("STATE_COMPLETED")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A clean folder PostgreSQL can reach when it runs as nobody."""
    path = Path(tempfile.mkdtemp(prefix="dtq-dev-e2e-"))
    path.chmod(0o755)
    yield path / ".dtq"
    shutil.rmtree(path, ignore_errors=True)


class Dev:
    """One `dtq dev` process on free ports, and what it announced."""

    def __init__(self, data_dir: Path, *extra: str, **env: str) -> None:
        self.grpc, self.rest = free_port(), free_port()
        ports = {
            "--port": self.grpc,
            "--rest-port": self.rest,
            "--envoy-admin-port": free_port(),
            "--server-metrics-port": free_port(),
            "--worker-metrics-port": free_port(),
            "--manager-metrics-port": free_port(),
        }
        args = [str(a) for pair in ports.items() for a in pair] + list(extra)
        self.data_dir = data_dir
        self.proc = Proc(
            "dev", dtq_args("dev", "--data-dir", str(data_dir), *args), {**os.environ, **env}
        )
        self.endpoints = self._wait_ready()

    def _wait_ready(self) -> dict[str, Any]:
        path = self.data_dir / "endpoints.json"
        try:
            wait_until(lambda: path.exists() or not self.proc.alive(), 60, "dtq dev ready")
        except TimeoutError:
            self.proc.kill()
            raise
        assert self.proc.alive(), self.proc.output()
        return dict(json.loads(path.read_text()))

    def family(self) -> list[int]:
        """Every process under the supervisor: servers, their backends, dtq children."""
        return descendants(self.proc.pid)


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def assert_all_gone(pids: list[int], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while (left := [p for p in pids if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    names = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in left if running(p)}
    assert not left, f"left running: {names}"


def loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def rest(port: int, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data, method=method)
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def rest_completes(port: int) -> str:
    task = rest(port, "POST", "/api/v1/tasks", {"type": "noop", "payload": {"via": "rest"}})["task"]
    for _ in range(200):
        state = rest(port, "GET", f"/api/v1/tasks/{task['id']}")["task"]["state"]
        if state == "STATE_COMPLETED":
            return str(task["id"])
        time.sleep(0.05)
    raise AssertionError(f"REST task {task['id']} still {state}")


def test_dev_serves_grpc_and_rest_restarts_children_and_leaves_no_process(data_dir: Path) -> None:
    dev = Dev(data_dir)
    assert set(dev.endpoints["pids"]) >= {"postgres", "redis", "server", "manager", "worker"}
    with grpc.insecure_channel(f"127.0.0.1:{dev.grpc}") as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        first = submit(tasks, "test_task", payload={"message": "hi"})
        assert wait_for(tasks, first.id).state == COMPLETED
        if dev.endpoints["rest"]:  # Envoy is installed with the dev extras
            rest_completes(dev.rest)
            # The web console, with no extra step.
            assert dev.endpoints["console"] == f"http://127.0.0.1:{dev.rest}/ui/"
            with urllib.request.urlopen(dev.endpoints["console"], timeout=10) as page:
                assert page.headers["content-type"].startswith("text/html")
                assert b"dtq console" in page.read()

        # A worker that dies is restarted, and work goes on.
        os.kill(dev.endpoints["pids"]["worker"], signal.SIGKILL)
        second = submit(tasks, "noop")
        assert wait_for(tasks, second.id, timeout=30).state == COMPLETED

    family = dev.family()
    dev.proc.signal(signal.SIGTERM)
    assert dev.proc.popen.wait(30) == 0
    assert_all_gone(family)
    assert not (data_dir / "endpoints.json").exists()

    # Warm start on the same data: the tasks are still there; then SIGKILL.
    dev = Dev(data_dir)
    with grpc.insecure_channel(f"127.0.0.1:{dev.grpc}") as channel:
        assert get(task_service_pb2_grpc.TaskServiceStub(channel), first.id).state == COMPLETED
    family = dev.family()
    assert len(family) >= 5
    dev.proc.signal(signal.SIGKILL)
    dev.proc.popen.wait(10)
    assert_all_gone(family)


def test_second_dev_on_the_same_data_refuses_to_start(data_dir: Path) -> None:
    dev = Dev(data_dir)
    try:
        again = Proc("dev2", dtq_args("dev", "--data-dir", str(data_dir)), dict(os.environ))
        assert again.popen.wait(30) == 1
        assert dev.proc.alive()
    finally:
        family = dev.family()
        dev.proc.stop()
        assert_all_gone(family)


def test_dev_runs_auth_off_on_loopback_only_and_says_so(data_dir: Path) -> None:
    # Whatever the environment says: no set-up, no key, and nothing off loopback.
    dev = Dev(data_dir, DTQ_AUTH="on", DTQ_API_KEY="dtq_000000000000_not-a-real-key")
    try:
        assert dev.endpoints["auth"] == "off"
        wait_until(lambda: "Ctrl-C stops everything" in dev.proc.output(), 10, "the banner")
        assert "Auth         off: every caller is an admin" in dev.proc.output()
        keyless = {k: v for k, v in os.environ.items() if k != "DTQ_API_KEY"}
        done = subprocess.run(
            dtq_args(
                "task", "submit", "test_task", "{}", "--wait", "-q", "-s", dev.endpoints["grpc"]
            ),
            env=keyless,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        family = set(dev.family())
        listening = {
            c.laddr.ip
            for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.pid in family
        }
        assert listening and all(loopback(ip) for ip in listening), listening
    finally:
        family = dev.family()
        dev.proc.stop()
        assert_all_gone(family)
