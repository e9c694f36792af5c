"""The README's screenshots of the console (`make console-screenshots`): the
package's stack filled with sample tasks (done, retrying, dead), then a PNG of
each page under DTQ_CONSOLE_SCREENSHOTS. Skipped unless that is set, so the
default run starts no stack for it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import Server
from tests.e2e.test_rest import Rest
from tests.support import env
from tests.support.envoy import Envoy
from tests.support.procs import Proc, dtq_args, wait_until

OUT = os.environ.get("DTQ_CONSOLE_SCREENSHOTS", "")
QUEUES = ("default", "emails", "reports")
pytestmark = [
    pytest.mark.console,
    pytest.mark.skipif(not OUT, reason="set DTQ_CONSOLE_SCREENSHOTS=docs/console to write them"),
]


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    """Retries a few seconds apart: the overview shows some waiting."""
    return {"DTQ_WORKER_RETRY_BACKOFF_BASE": "2", "DTQ_WORKER_MAX_RETRY_BACKOFF": "30"}


@pytest.fixture(scope="module")
def worker(server: Server, pg_url: str, redis_url: str) -> Iterator[Proc]:
    env.reset(pg_url, redis_url)
    environ = {**server.env, "DTQ_SERVER_ADDRESS": server.address}
    queues = [arg for q in QUEUES for arg in ("-q", q)]
    args = dtq_args("worker", "--metrics-port", "0", "--id", "worker-a", "-c", "4", *queues)
    proc = Proc("worker", args, environ)
    wait_until(lambda: "worker_connected" in proc.output() or not proc.alive(), 30, "worker")
    yield proc
    proc.stop()


def submit(rest: Rest, queue: str, payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {"type": "test_task", "queue": queue, "payload": payload, **extra}
    task: dict[str, Any] = rest.ok("POST", "/api/v1/tasks", body)["task"]
    return task


def fill(rest: Rest) -> str:
    """Sample tasks; returns the id of one that failed twice, then completed."""
    story = submit(rest, "emails", {"fail_times": 2, "error": "SMTP 421: try again later"})
    for n in range(24):
        submit(rest, QUEUES[n % 3], {"message": f"hello {n}", "sleep_duration": 0.05 * (n % 4)})
    for n in range(3):
        submit(rest, "reports", {"fail": True, "permanent": True, "error": "template missing"})
        submit(rest, "emails", {"fail": True, "error": f"mailbox {n} full"}, max_retries=0)
    submit(rest, "default", {"fail_times": 1}, max_retries=3)
    submit(rest, "reports", {"sleep_duration": 600}, idempotency_key="monthly-2026-11")
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    for n in range(4):
        submit(rest, "emails", {"message": f"digest {n}"}, scheduled_at=later)
    return str(story["id"])


def settle(rest: Rest, story: str) -> None:
    deadline = time.monotonic() + 60
    while rest.ok("GET", f"/api/v1/tasks/{story}")["task"]["state"] != "STATE_COMPLETED":
        assert time.monotonic() < deadline, "the sample task did not complete"
        time.sleep(0.3)


def shoot(page: Page, ui: str, route: str, name: str, full_page: bool = True) -> None:
    page.goto(f"{ui}#/{route}")
    expect(page.locator("main h1")).to_be_visible()
    page.wait_for_timeout(300)
    page.screenshot(path=str(Path(OUT) / f"{name}.png"), full_page=full_page)


def test_screenshots(browser: Browser, ui: str, envoy: Envoy) -> None:
    Path(OUT).mkdir(parents=True, exist_ok=True)
    rest = Rest(envoy.port)
    story = fill(rest)
    settle(rest, story)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{ui}#/overview")
    for _ in range(12):  # a few refreshes: the sparklines have a history
        page.wait_for_timeout(2000)
        submit(rest, "default", {"message": "tick"})
    page.screenshot(path=str(Path(OUT) / "overview.png"), full_page=True)
    shoot(page, ui, "tasks", "tasks", full_page=False)  # the first rows are enough
    shoot(page, ui, f"task/{story}", "task")
    shoot(page, ui, "dead", "dead-letters")
    shoot(page, ui, "workers", "workers")
    context.close()
    phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    shoot(phone.new_page(), ui, f"task/{story}", "task-phone")
    phone.close()
