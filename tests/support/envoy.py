"""Envoy for tests: the config `dtq envoy` renders, on free loopback ports."""

from __future__ import annotations

import contextlib
import http.client
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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


def _answers(port: int, path: str) -> bool:
    """True once GET `path` on `port` answered 200 (REST: through Envoy to the
    backend and back; the admin port's /ready: Envoy alone)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        conn.close()


def start_envoy(
    backend: str, timeout: float = 30.0, backend_up: bool = True, **options: Any
) -> Envoy:
    """Start Envoy in front of the gRPC server at `backend` (host:port), with
    `render` `options`; `backend_up=False`: wait for Envoy only."""
    port, admin_port = free_port(), free_port()
    config = render(
        [backend], port, admin_port, str(DESCRIPTOR), listen_host="127.0.0.1", **options
    )
    LOGS.mkdir(parents=True, exist_ok=True)
    path = LOGS / f"envoy-{os.getpid()}-{time.monotonic_ns()}.yaml"
    path.write_text(config)
    args = ["envoy", "-c", str(path), "--disable-hot-restart", "--log-level", "warn"]
    proc = Proc("envoy", args, dict(os.environ))
    try:
        ready = (port, "/api/v1/health") if backend_up else (admin_port, "/ready")
        wait_until(lambda: _answers(*ready) or not proc.alive(), timeout, "Envoy")
    except TimeoutError:
        proc.kill()
        raise
    if not proc.alive():
        raise RuntimeError(f"envoy exited:\n{proc.output()}")
    return Envoy(port, admin_port, proc)


@contextlib.contextmanager
def running_envoy(backend: str, backend_up: bool = True, **options: Any) -> Iterator[Envoy]:
    """Envoy in front of `backend` for the duration of the block."""
    envoy = start_envoy(backend, backend_up=backend_up, **options)
    try:
        yield envoy
    finally:
        envoy.proc.stop()
