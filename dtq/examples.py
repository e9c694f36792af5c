"""Built-in example handlers: the seed's task types, as harmless simulations.

`dtq worker` loads this module when no `--module` is given, so that a new user
sees work flow at once:

    dtq task submit test_task '{"message": "Hello World", "sleep_duration": 2}' --priority=high
    dtq task submit image_processing '{"image_url": "https://example.com/a.jpg"}'
    dtq task submit email_sending '{"recipient": "user@example.com", "subject": "Hi"}'
    dtq task submit data_etl '{"source": "users.csv", "destination": "users_table"}'

examples/submit_test_tasks.sh submits one task of every kind the seed's script did.
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


def _strings(payload: dict[str, Any], one: str, many: str) -> list[str]:
    """`payload[one]` (a string) or `payload[many]` (a list of them), as a list."""
    values = payload.get(many, [payload[one]] if one in payload else [])
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise PermanentError(f"{many} must be a list of non-empty strings")
    return values


@app.task("image_processing")
async def image_processing(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Pretends to fetch `image_url` (or each of `images`) and apply `operations`
    (about 50 ms each; a `resize` object counts as one)."""
    urls = _strings(payload, "image_url", "images")
    if not urls:
        raise PermanentError("image_url (or images) is required")
    operations = [str(op) for op in payload.get("operations", [])]
    if "resize" in payload:
        operations.append("resize")
    outputs = []
    for url in urls:
        for _ in operations:
            if ctx.cancelled.is_set():
                break
            await asyncio.sleep(0.05)
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        outputs.append(f"processed/{digest}.{payload.get('output_format', 'jpg')}")
    if "image_url" in payload and "images" not in payload:
        return {"image_url": urls[0], "applied": operations, "output": outputs[0]}
    return {"images": urls, "applied": operations, "outputs": outputs}


@app.task("email_sending")
async def email_sending(payload: dict[str, Any]) -> dict[str, Any]:
    """Pretends to render `template` and send it to `recipient` (or each of
    `recipients`, for a campaign)."""
    recipients = _strings(payload, "recipient", "recipients")
    if not recipients or any("@" not in r for r in recipients):
        raise PermanentError("recipient must be an email address")
    await asyncio.sleep(0.02 * len(recipients))
    sent: dict[str, Any] = {"subject": payload.get("subject", ""), "status": "sent"}
    if "recipients" in payload:
        return {"recipients": recipients, "sent": len(recipients), **sent}
    return {"recipient": recipients[0], **sent}


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
