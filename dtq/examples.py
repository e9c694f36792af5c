"""Built-in example handlers: the seed's task types, as harmless simulations.

`dtq worker` loads this module when no `--module` is given, so that a new user
sees work flow at once:

    dtq task submit test_task '{"message": "Hello World", "sleep_duration": 2}' --priority=high
    dtq task submit image_processing '{"image_url": "https://example.com/a.jpg"}'
    dtq task submit email_sending '{"recipient": "user@example.com", "subject": "Hi"}'
    dtq task submit data_etl '{"source": "users.csv", "destination": "users_table"}'
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from typing import Any

from dtq.worker.app import App, PermanentError, TaskContext

app = App("examples")


def _pause(seconds: float, ctx: TaskContext) -> None:
    """Sleep, waking early when the task is cancelled."""
    ctx.cancelled.wait(max(0.0, seconds))


@app.task("test_task")
def test_task(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Sleeps `sleep_duration` seconds, then echoes `message`.

    `fail: true` makes every attempt fail; `fail_times: n` fails the first n
    attempts; `permanent: true` makes the failure permanent (dead letter at once).
    """
    _pause(float(payload.get("sleep_duration", 0)), ctx)
    if payload.get("fail") or ctx.attempt <= int(payload.get("fail_times", 0)):
        message = str(payload.get("error", "test_task was told to fail"))
        if payload.get("permanent"):
            raise PermanentError(message)
        raise RuntimeError(message)
    return {"message": payload.get("message", ""), "attempt": ctx.attempt}


@app.task("image_processing")
async def image_processing(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Pretends to fetch an image and apply `operations` (about 50 ms each)."""
    url = payload.get("image_url")
    if not isinstance(url, str) or not url:
        raise PermanentError("image_url is required")
    operations = [str(op) for op in payload.get("operations", [])]
    for _ in operations:
        if ctx.cancelled.is_set():
            break
        await asyncio.sleep(0.05)
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return {"image_url": url, "applied": operations, "output": f"processed/{digest}.jpg"}


@app.task("email_sending")
async def email_sending(payload: dict[str, Any]) -> dict[str, Any]:
    """Pretends to render `template` and send it to `recipient`."""
    recipient = payload.get("recipient")
    if not isinstance(recipient, str) or "@" not in recipient:
        raise PermanentError("recipient must be an email address")
    await asyncio.sleep(0.02)
    return {"recipient": recipient, "subject": payload.get("subject", ""), "status": "sent"}


@app.task("data_etl")
def data_etl(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Pretends to move rows from `source` to `destination` in batches."""
    batch = int(payload.get("batch_size", 1000))
    if batch <= 0:
        raise PermanentError("batch_size must be positive")
    rows = int(payload.get("rows", 10 * batch))
    rng = random.Random(str(payload.get("source")))
    moved = 0
    started = time.monotonic()
    while moved < rows and not ctx.cancelled.is_set():
        moved += min(batch, rows - moved)
        _pause(0.005, ctx)
    checksum = rng.getrandbits(32)
    return {
        "source": payload.get("source"),
        "destination": payload.get("destination"),
        "rows": moved,
        "checksum": checksum,
        "seconds": round(time.monotonic() - started, 3),
    }


@app.task("noop")
def noop(payload: dict[str, Any]) -> None:
    """Does nothing: for benchmarks."""
    return None
