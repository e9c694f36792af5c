"""Envoy for tests: the config `dtq envoy` renders, on free loopback ports."""

from __future__ import annotations

import contextlib
import http.client
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from dtq.envoy import render
from tests.support.procs import LOGS, ROOT, Proc, free_port, wait_until

DESCRIPTOR = ROOT / "gen" / "dtq" / "v1" / "descriptor.binpb"


@dataclass
class Envoy:
    port: int
    admin_port: int
    proc: Proc

    @property
    def address(self) -> str:
        """host:port for REST and native gRPC."""
        return f"127.0.0.1:{self.port}"


def _rest_answers(port: int) -> bool:
    """True once a REST call went through Envoy to the backend and back."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/api/v1/health")
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        conn.close()


def start_envoy(backend: str, timeout: float = 30.0) -> Envoy:
    """Start Envoy in front of the gRPC server at `backend` (host:port)."""
    port, admin_port = free_port(), free_port()
    config = render([backend], port, admin_port, str(DESCRIPTOR), listen_host="127.0.0.1")
    LOGS.mkdir(parents=True, exist_ok=True)
    path = LOGS / f"envoy-{os.getpid()}-{time.monotonic_ns()}.yaml"
    path.write_text(config)
    args = ["envoy", "-c", str(path), "--disable-hot-restart", "--log-level", "warn"]
    proc = Proc("envoy", args, dict(os.environ))
    try:
        wait_until(lambda: _rest_answers(port) or not proc.alive(), timeout, "Envoy REST")
    except TimeoutError:
        proc.kill()
        raise
    if not proc.alive():
        raise RuntimeError(f"envoy exited:\n{proc.output()}")
    return Envoy(port, admin_port, proc)


@contextlib.contextmanager
def running_envoy(backend: str) -> Iterator[Envoy]:
    """Envoy in front of `backend` for the duration of the block."""
    envoy = start_envoy(backend)
    try:
        yield envoy
    finally:
        envoy.proc.stop()
