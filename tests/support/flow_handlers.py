"""Handlers of the flow tests (`dtq worker -m tests.support.flow_handlers`)."""

from __future__ import annotations

from typing import Any

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
