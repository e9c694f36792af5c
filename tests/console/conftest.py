"""The web console's stack: one real server, manager (it promotes retries when
due), worker and Envoy per module, and Debian's Chromium (not a downloaded
browser) driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import Server
from tests.support import env
from tests.support.envoy import Envoy, running_envoy
from tests.support.procs import Proc, dtq_args, wait_until

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One Chromium for the package. Playwright's sync API keeps an event loop
    running in this thread while it is open: it must close before the other
    packages' tests call asyncio.run (a session-wide browser broke them all)."""
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (empty session storage) and page per test."""
    context = browser.new_context()
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    """Fast retries: a task failing twice is done within a second or so."""
    return {"DTQ_WORKER_RETRY_BACKOFF_BASE": "2", "DTQ_WORKER_MAX_RETRY_BACKOFF": "0.2"}


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
def ui(envoy: Envoy, worker: Proc, manager: Proc) -> str:
    """The console's address."""
    return f"http://127.0.0.1:{envoy.port}/ui/"
