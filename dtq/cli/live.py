"""Output that moves: a task's live status line and a refreshing queue table.

Both refresh in place only on a terminal (rich `Live`, at the terminal's own
width so the cursor arithmetic holds); in a pipe they print plain lines, one
per change or per refresh, so logs and scripts read them as they come.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from dtq.cli import output
from dtq.v1 import admin_service_pb2, task_pb2

REFRESH_PER_SECOND = 8


def on_terminal() -> bool:
    return output.console().is_terminal


def terminal_console() -> Console:
    """A console at the terminal's real width: in-place refresh needs it."""
    return Console(markup=False, highlight=False, emoji=False)


class StatusLine:
    """`⠋ <id> running, attempt 1 on w-1, 3.2s`: redrawn by Live, so the time moves."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.state = "submitted"
        self.detail = ""
        self.since = time.monotonic()
        self.spinner = Spinner("dots")

    def update(self, task: task_pb2.Task) -> None:
        state = output.state_name(task.state)
        if state != self.state:
            self.state, self.since = state, time.monotonic()
        worker = f" on {task.worker_id}" if task.worker_id else ""
        self.detail = f", attempt {task.attempts}{worker}" if task.attempts else ""

    def __rich__(self) -> RenderableType:
        elapsed = output.seconds_text(time.monotonic() - self.since)
        self.spinner.text = Text.assemble(
            self.task_id,
            " ",
            output.styled(self.state, output.STATE_STYLE),
            f"{self.detail}, {elapsed}",
        )
        return self.spinner


def follow_with_status(
    task_id: str, changes: Iterator[task_pb2.Task], on_change: Callable[[task_pb2.Task], None]
) -> task_pb2.Task | None:
    """Consume `changes` until they end; on a terminal, a status line shows
    the current state and for how long. Returns the last task seen."""
    last: task_pb2.Task | None = None
    if not on_terminal():
        for last in changes:
            on_change(last)
        return last
    line = StatusLine(task_id)
    with Live(
        line, console=terminal_console(), transient=True, refresh_per_second=REFRESH_PER_SECOND
    ):
        for last in changes:
            on_change(last)
            line.update(last)
    return last


def stats_view(
    reply: admin_service_pb2.GetQueueStatsResponse, interval: float, endless: bool
) -> Group:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    stop = " (Ctrl-C to stop)" if endless else ""
    head = Text(f"queue stats at {now}, every {interval:g}s{stop}", style="bold")
    return Group(head, output.queue_stats_table(reply.queues))


def watch_stats(
    fetch: Callable[[], admin_service_pb2.GetQueueStatsResponse],
    interval: float,
    count: int | None,
    json_out: bool,
) -> None:
    """Fetch and show the stats every `interval` seconds, `count` times (None:
    until Ctrl-C, which ends the watch normally)."""
    try:
        if json_out or not on_terminal():
            for reply in _every(fetch, interval, count):
                if json_out:
                    output.emit_json(reply, line=True)
                else:
                    output.console().print(stats_view(reply, interval, count is None))
            return
        with Live(console=terminal_console(), auto_refresh=False) as live:
            for reply in _every(fetch, interval, count):
                live.update(stats_view(reply, interval, count is None), refresh=True)
    except KeyboardInterrupt:
        return


def _every(
    fetch: Callable[[], admin_service_pb2.GetQueueStatsResponse],
    interval: float,
    count: int | None,
) -> Iterator[admin_service_pb2.GetQueueStatsResponse]:
    n = 0
    while True:
        started = time.monotonic()
        yield fetch()
        n += 1
        if count is not None and n >= count:
            return
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
