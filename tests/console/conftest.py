"""The web console's stack: one real server, worker and Envoy per module, and
Debian's Chromium (not a downloaded browser) for pytest-playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Server
from tests.support import env
from tests.support.envoy import Envoy, running_envoy
from tests.support.procs import Proc, dtq_args, wait_until

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "headless": True}


@pytest.fixture(scope="module")
def envoy(server: Server) -> Iterator[Envoy]:
    with running_envoy(
        server.address, console_trace_url="http://jaeger.test/trace/{trace_id}"
    ) as e:
        yield e


@pytest.fixture(scope="module")
def worker(server: Server, pg_url: str, redis_url: str) -> Iterator[Proc]:
    """A `dtq worker` with the built-in examples on the default queue, started
    on empty tables (the tests share the module's state: each uses its queues)."""
    env.reset(pg_url, redis_url)
    environ = {**server.env, "DTQ_SERVER_ADDRESS": server.address}
    proc = Proc("worker", dtq_args("worker", "--metrics-port", "0", "-q", "default"), environ)
    wait_until(lambda: "worker_connected" in proc.output() or not proc.alive(), 30, "worker")
    if not proc.alive():
        raise RuntimeError(f"dtq worker exited:\n{proc.output()}")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def ui(envoy: Envoy, worker: Proc) -> str:
    """The console's address."""
    return f"http://127.0.0.1:{envoy.port}/ui/"
