"""The web console in Debian's Chromium, against a real server, worker and
Envoy: every page loads without browser errors, a task is followed to
completed, a dead letter is requeued, a queue purged after a typed
confirmation, and a table of 1,000 tasks pages quickly."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import grpc
import pytest
from playwright.sync_api import ConsoleMessage, Error, Page, expect

from tests.e2e.test_rest import Rest
from tests.support.envoy import Envoy
from tests.support.stub_worker import dead_letter

pytestmark = [pytest.mark.e2e, pytest.mark.console]

PAGES = ("overview", "tasks", "dead", "workers")
FOCUSED = "document.activeElement.id || document.activeElement.textContent"


@pytest.fixture
def errors(page: Page) -> Iterator[list[str]]:
    """Every console error and uncaught exception of the page; none at the end."""
    found: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            found.append(message.text)

    def on_error(error: Error) -> None:
        found.append(str(error))

    page.on("console", on_console)
    page.on("pageerror", on_error)
    yield found


@pytest.fixture
def rest(envoy: Envoy) -> Rest:
    return Rest(envoy.port)


def test_static_files_have_types_and_a_content_security_policy(rest: Rest, ui: str) -> None:
    for path, kind in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/console.css", "text/css"),
        ("/ui/config.json", "application/json"),
    ]:
        conn = rest.connect()
        conn.request("GET", path)
        reply = conn.getresponse()
        body = reply.read()
        assert reply.status == 200, path
        assert reply.getheader("content-type", "").startswith(kind), path
        assert "script-src 'self'" in reply.getheader("content-security-policy", "")
        conn.close()
        if path.endswith(".json"):
            assert b"jaeger.test" in body
    assert rest.get("/ui/missing.js").status == 404


def test_every_page_loads_without_browser_errors(page: Page, ui: str, errors: list[str]) -> None:
    for name in PAGES:
        page.goto(f"{ui}#/{name}")
        expect(page.locator("main h1")).to_be_visible()
        expect(page.locator(f'nav a[data-page="{name}"]')).to_have_attribute("aria-current", "page")
    expect(page.locator("main")).to_contain_text("Workers")
    expect(page.locator("main tbody tr")).to_have_count(1)  # the module's worker
    page.set_viewport_size({"width": 390, "height": 800})  # a phone
    page.goto(f"{ui}#/overview")
    expect(page.locator("main h1")).to_have_text("Queues")
    assert errors == []


def test_submitted_task_reaches_completed(page: Page, ui: str, errors: list[str]) -> None:
    page.goto(f"{ui}#/tasks")
    page.get_by_text("Submit a task").click()
    page.fill("#submit-type", "test_task")
    page.fill("#submit-payload", '{"message": "from the console"}')
    page.keyboard.press("Tab")
    page.get_by_role("button", name="Submit").press("Enter")  # keyboard reachable
    expect(page.locator("#task-state")).to_have_text("completed", timeout=15_000)
    expect(page.locator("main")).to_contain_text('"message": "from the console"')
    expect(page.locator("#retry")).to_be_disabled()
    page.goto(f"{ui}#/overview")
    expect(page.locator("main tbody")).to_contain_text("default")
    assert errors == []


def test_api_errors_are_shown_with_their_message(page: Page, ui: str, errors: list[str]) -> None:
    page.goto(f"{ui}#/task/01a22029-0000-7000-8000-000000000000")
    expect(page.locator("#error")).to_contain_text("no task with id 01a22029")
    page.goto(f"{ui}#/tasks?queue=bad%20name")
    expect(page.locator("#error")).to_contain_text("queue")
    # The browser logs each failed fetch itself; nothing else went wrong.
    assert [e for e in errors if "Failed to load resource" not in e] == []


def test_dead_letter_is_requeued_from_the_ui(
    page: Page, ui: str, rest: Rest, errors: list[str]
) -> None:
    payload = {"fail_times": 1, "permanent": True, "error": "first try fails"}
    task = rest.ok("POST", "/api/v1/tasks", {"type": "test_task", "payload": payload})["task"]
    page.goto(f"{ui}#/dead?queue=default")
    row = page.locator(f'[data-requeue="{task["id"]}"]')
    for _ in range(30):  # the worker dead-letters it within moments
        if row.count():
            break
        time.sleep(0.3)
        page.reload()
    expect(page.locator("main")).to_contain_text("first try fails")
    expect(page.locator("main")).to_contain_text("PermanentError")
    page.goto(f"{ui}#/task/{task['id']}")
    expect(page.locator("#task-error")).to_contain_text("Traceback")
    page.goto(f"{ui}#/dead?queue=default")
    page.locator(f'[data-requeue="{task["id"]}"]').click()
    page.goto(f"{ui}#/task/{task['id']}")
    expect(page.locator("#task-state")).to_have_text("completed", timeout=15_000)
    assert errors == []


def test_purge_needs_the_queue_name_typed(
    page: Page, ui: str, rest: Rest, channel: grpc.Channel, errors: list[str]
) -> None:
    for _ in range(3):
        dead_letter(channel, "report", "trash")
    page.goto(f"{ui}#/dead?queue=trash")
    page.get_by_text("Purge…").click()
    button = page.locator("#purge-trash")
    expect(button).to_be_disabled()
    page.fill("#purge-confirm-trash", "tras")
    expect(button).to_be_disabled()
    page.fill("#purge-confirm-trash", "trash")
    expect(button).to_be_enabled()
    button.click()
    expect(page.locator("main")).to_contain_text("No dead-lettered tasks.")
    left = rest.ok("GET", "/api/v1/tasks", state="STATE_DEAD_LETTERED", queue="trash")
    assert left["tasks"] == []
    assert errors == []


def test_a_thousand_tasks_page_quickly(page: Page, ui: str, rest: Rest, errors: list[str]) -> None:
    requests = [{"type": "noop", "queue": "bulk", "payload": {"n": n}} for n in range(1000)]
    rest.ok("POST", "/api/v1/tasks:batchSubmit", {"requests": requests})
    page.goto(f"{ui}#/tasks?queue=bulk")
    expect(page.locator("main tbody tr")).to_have_count(50)
    first = page.locator("main tbody tr").first.inner_text()
    for number in range(2, 6):
        start = time.monotonic()
        page.locator("#next").click()
        expect(page.locator("#page-no")).to_have_text(f"Page {number}")
        expect(page.locator("main tbody tr")).to_have_count(50)
        assert time.monotonic() - start < 1.0, f"page {number} took too long"
    page.locator("#prev").click()
    expect(page.locator("#page-no")).to_have_text("Page 4")
    page.goto(f"{ui}#/tasks?queue=bulk")
    expect(page.locator("#page-no")).to_have_text("Page 1")
    assert page.locator("main tbody tr").first.inner_text() == first  # newest first, stable
    assert errors == []


def test_task_page_shows_every_attempt(page: Page, ui: str, rest: Rest, errors: list[str]) -> None:
    body = {"type": "test_task", "payload": {"fail_times": 2}, "idempotency_key": "order-77"}
    task = rest.ok("POST", "/api/v1/tasks", body)["task"]
    page.goto(f"{ui}#/task/{task['id']}")
    expect(page.locator("#task-state")).to_have_text("completed", timeout=15_000)
    rows = page.locator("#attempts tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("completed")  # newest first
    for n in (1, 2):
        expect(rows.nth(n)).to_contain_text("RuntimeError")
        expect(rows.nth(n).locator("td").first).to_have_text(str(3 - n))
    rows.nth(1).locator("summary").click()
    expect(rows.nth(1).locator("pre")).to_contain_text("Traceback")
    worker = rest.ok("GET", f"/api/v1/tasks/{task['id']}")["task"]["worker_id"]
    expect(rows.nth(2)).to_contain_text(worker)
    assert errors == []


def test_tasks_are_found_by_key_id_and_time(
    page: Page, ui: str, rest: Rest, errors: list[str]
) -> None:
    body = {"type": "noop", "queue": "search", "idempotency_key": "invoice-9"}
    task = rest.ok("POST", "/api/v1/tasks", body)["task"]
    rest.ok("POST", "/api/v1/tasks", {"type": "noop", "queue": "search"})
    page.goto(f"{ui}#/tasks?queue=search")
    expect(page.locator("main tbody tr")).to_have_count(2)
    page.fill("#filter-key", "invoice-9")
    page.keyboard.press("Enter")
    expect(page.locator("main tbody tr")).to_have_count(1)
    expect(page.locator("main tbody")).to_contain_text(task["id"])
    # Created after a minute from now (the browser's local time): none.
    later = page.evaluate(
        "() => { const d = new Date(Date.now() + 60000 - new Date().getTimezoneOffset() * 60000);"
        " return d.toISOString().slice(0, 19); }"
    )
    page.fill("#filter-key", "")
    page.fill("#filter-after", later)
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("main")).to_contain_text("No tasks match.")
    page.fill("#filter-after", "")
    page.fill("#filter-before", later)
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("main tbody tr")).to_have_count(2)
    page.fill("#filter-key", task["id"].upper())  # an id opens the task's page
    page.keyboard.press("Enter")
    expect(page.locator("main h1")).to_contain_text(task["id"])
    assert errors == []


def test_overview_draws_a_throughput_line_per_queue(
    page: Page, ui: str, rest: Rest, errors: list[str]
) -> None:
    rest.ok("POST", "/api/v1/tasks", {"type": "noop", "queue": "default"})
    page.goto(f"{ui}#/overview")
    row = page.locator("main tbody tr", has_text="default").first
    spark = row.locator("svg.spark")
    expect(spark.locator("polyline")).to_have_count(1)
    span = re.compile(r"done per minute over the last (\d+) s")

    def seconds() -> int:
        found = span.search(spark.get_attribute("aria-label") or "")
        assert found, spark.get_attribute("aria-label")
        return int(found.group(1))

    first = seconds()
    page.wait_for_timeout(2500)  # one refresh: one more sample
    assert seconds() > first
    assert len((spark.locator("polyline").get_attribute("points") or "").split()) >= 2
    assert errors == []


@pytest.mark.parametrize("name", [*PAGES, "task"])
def test_phone_width_does_not_scroll_sideways(
    page: Page, ui: str, rest: Rest, name: str, errors: list[str]
) -> None:
    page.set_viewport_size({"width": 390, "height": 800})
    if name == "task":
        task = rest.ok("POST", "/api/v1/tasks", {"type": "noop", "queue": "phone"})["task"]
        name = f"task/{task['id']}"
    page.goto(f"{ui}#/{name}")
    expect(page.locator("main h1")).to_be_visible()
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= 390, f"{name} is {wide} px wide"
    assert errors == []


def test_every_control_is_reachable_by_keyboard(page: Page, ui: str, errors: list[str]) -> None:
    page.goto(f"{ui}#/tasks")
    expect(page.locator("main h1")).to_have_text("Tasks")
    wanted = {"filter-state", "filter-queue", "filter-type", "filter-after", "filter-key"}
    reached: set[str] = set()
    for _ in range(60):
        page.keyboard.press("Tab")
        reached.add(page.evaluate(FOCUSED))
    assert wanted <= reached, wanted - reached
    assert {"Submit a task", "Filter"} <= reached
    page.locator("main").focus()
    for _ in range(5):  # the navigation is before the page
        page.keyboard.press("Shift+Tab")
        reached.add(page.evaluate(FOCUSED))
    assert {"Overview", "Tasks", "Dead letters", "Workers"} <= reached
    assert errors == []
