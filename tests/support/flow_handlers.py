"""Handlers of the flow tests (`dtq worker -m tests.support.flow_handlers`)."""

from __future__ import annotations

from typing import Any

from dtq.client import DtqClientError, Submission
from dtq.worker.app import App, PermanentError, TaskContext

app = App("flows")


@app.task("flow_add")
def flow_add(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Adds `n` to the parent's `total` (or to `start`), and says what it saw."""
    before = ctx.parent_result["total"] if ctx.parent_result else payload.get("start", 0)
    return {"total": before + payload["n"], "parent_id": ctx.parent_id}


@app.task("flow_fail")
def flow_fail(payload: dict[str, Any]) -> None:
    raise PermanentError(str(payload.get("error", "flow_fail was told to fail")))


@app.task("flow_square")
def flow_square(payload: dict[str, Any]) -> int:
    """x squared; fails for good when `x` is in `fail`."""
    x = int(payload["x"])
    if x in payload.get("fail", []):
        raise PermanentError(f"no square for {x}")
    return x * x


@app.task("flow_collect")
def flow_collect(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """A group's callback: sums what completed, counts states, keeps the errors."""
    outcomes = ctx.parent_result or []
    states: dict[str, int] = {}
    for o in outcomes:
        states[o["state"]] = states.get(o["state"], 0) + 1
    return {
        "count": len(outcomes),
        "sum": sum(o["result"] for o in outcomes if o["state"] == "completed"),
        "states": states,
        "errors": sorted(o["error"] for o in outcomes if o["error"]),
        "ids": [o["id"] for o in outcomes],
        "group_id": ctx.group_id,
    }


@app.task("flow_spawn")
def flow_spawn(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Submits `n` children: `flow_spawn` again while `depth` > 1, else
    `flow_square`; with `fail_first`, the first attempt fails after its
    children were submitted (the retry must get them back, not new ones)."""
    depth, n = int(payload.get("depth", 1)), int(payload["n"])
    if depth > 1:
        made = [ctx.submit("flow_spawn", {"n": n, "depth": depth - 1}) for _ in range(n)]
    else:
        made = ctx.submit_many([Submission("flow_square", {"x": x}) for x in range(n)])
    if payload.get("fail_first") and ctx.attempt == 1:
        raise RuntimeError("the first attempt fails after submitting its children")
    return {"children": [c.id for c in made], "deduplicated": [c.deduplicated for c in made]}


@app.task("flow_spawn_async")
async def flow_spawn_async(payload: dict[str, Any], ctx: TaskContext) -> list[str]:
    children = [await ctx.asubmit("flow_square", {"x": x}) for x in range(int(payload["n"]))]
    return [c.id for c in children]


@app.task("flow_sleep")
def flow_sleep(payload: dict[str, Any], ctx: TaskContext) -> None:
    """Runs until cancelled (or 60 s)."""
    ctx.cancelled.wait(60)


@app.task("flow_spawn_sleepers")
def flow_spawn_sleepers(payload: dict[str, Any], ctx: TaskContext) -> None:
    """Two children that run until cancelled, one due in an hour, one that
    spawns a sleeper of its own; then runs until cancelled."""
    ctx.submit("flow_sleep", {})
    ctx.submit("flow_sleep", {})
    ctx.submit("flow_sleep", {}, delay=3600)
    ctx.submit("flow_spawn_sleepers_once", {})
    ctx.cancelled.wait(60)


@app.task("flow_spawn_sleepers_once")
def flow_spawn_sleepers_once(payload: dict[str, Any], ctx: TaskContext) -> None:
    ctx.submit("flow_sleep", {})
    ctx.cancelled.wait(60)


@app.task("flow_spawn_bad")
def flow_spawn_bad(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Submits a child the server refuses, and says how it was refused."""
    try:
        ctx.submit("9-not-a-type", {})
    except DtqClientError as error:
        fields = [v.field for v in error.violations]
        return {"error": type(error).__name__, "reason": error.reason, "fields": fields}
    return {"error": ""}
