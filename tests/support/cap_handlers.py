"""Handlers of the running cap test (`dtq worker -m tests.support.cap_handlers`)."""

from __future__ import annotations

import os
import time
from typing import Any

from dtq.worker.app import App, TaskContext

app = App("caps")


def _line(path: str, text: str) -> None:
    """One line appended in one write (O_APPEND: threads do not interleave)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


@app.task("logged_sleep")
def logged_sleep(payload: dict[str, Any], ctx: TaskContext) -> None:
    """Sleeps `sleep` seconds between a `start` and an `end` line in `log`,
    each naming the task's fairness key (`key`)."""
    _line(payload["log"], f"start {payload['key']} {ctx.task_id}\n")
    time.sleep(float(payload["sleep"]))
    _line(payload["log"], f"end {payload['key']} {ctx.task_id}\n")
