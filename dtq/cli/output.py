"""What the CLI prints: rich tables for people, JSON for scripts.

Colours appear only on a terminal (rich decides, and honours NO_COLOR); in a
pipe the same tables come out as plain text. User data is never read as rich
markup, so a payload holding `[red]` prints as it is.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from google.protobuf import duration_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message
from rich import box
from rich.console import Console, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dtq.v1 import admin_service_pb2, queue_pb2, task_pb2, task_service_pb2, worker_pb2

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON (proto field names) for scripts.")
]

STATE_STYLE = {
    "pending": "yellow",
    "scheduled": "cyan",
    "running": "blue",
    "completed": "green",
    "failed": "magenta",
    "cancelled": "dim",
    "dead_lettered": "bold red",
    "waiting": "cyan",
}
HEALTH_STYLE = {"healthy": "green", "degraded": "yellow", "unhealthy": "bold red"}
WORKER_STYLE = {"active": "green", "draining": "yellow", "lost": "red"}


WIDE = 160  # tables are never squeezed below this: ids stay whole, a terminal wraps lines


@functools.cache
def console() -> Console:
    out = Console(markup=False, highlight=False, emoji=False)
    out.width = max(out.width, WIDE)
    return out


def panel_width() -> int | None:
    """Panels fold their values inside the terminal's own width."""
    return Console().width if console().is_terminal else None


# -- JSON -----------------------------------------------------------------------


def as_dict(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def emit_json(msg: Message, line: bool = False) -> None:
    """One JSON document; `line=True` prints it on one line (a stream of them)."""
    typer.echo(json.dumps(as_dict(msg), indent=None if line else 2))


# -- values ---------------------------------------------------------------------


def state_name(state: int) -> str:
    return task_pb2.Task.State.Name(state).removeprefix("STATE_").lower()  # type: ignore[arg-type]


def styled(name: str, styles: dict[str, str]) -> Text:
    return Text(name, style=styles.get(name, ""))


def _enum(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def when(ts: timestamp_pb2.Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds_text(seconds: float) -> str:
    """300 -> 5m, 30 -> 30s, 0.25 -> 250ms, 4000 -> 1h06m."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms" if seconds else "0s"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def span(d: duration_pb2.Duration) -> str:
    return seconds_text(d.seconds + d.nanos / 1e9)


def ago(ts: timestamp_pb2.Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return seconds_text(max(0.0, time.time() - (ts.seconds + ts.nanos / 1e9))) + " ago"


def _plain(value: Any) -> Any:
    """JSON as people wrote it: Struct keeps numbers as doubles, show 2 not 2.0."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def json_text(msg: Message) -> str:
    return json.dumps(_plain(json_format.MessageToDict(msg)), ensure_ascii=False)


def _table() -> Table:
    """A list: header, rule, rows; no frame (it reads well in a pipe too)."""
    return Table(box=box.SIMPLE_HEAD, show_edge=False, caption_justify="left")


def rows_table(headers: Iterable[str], rows: Iterable[Iterable[str]], what: str) -> None:
    """A list of plain text rows, with a count of `what` as caption."""
    table = _table()
    for name in headers:
        table.add_column(name, no_wrap=name == "ID")
    for row in rows:
        table.add_row(*row)
    table.caption = f"{len(table.rows)} {what}"
    console().print(table)


# -- tasks ----------------------------------------------------------------------


def _optional_rows(t: task_pb2.Task) -> list[tuple[str, str]]:
    """Text rows shown only when set."""
    return [
        ("worker", t.worker_id),
        ("idempotency key", t.idempotency_key),
        ("fairness key", t.fairness_key),
        ("parent", t.parent_id),
        ("root", getattr(t, "root_id", "")),
        ("group", t.group_id),
        ("callback of group", t.callback_of),
    ]


def _counts(counts: Iterable[task_pb2.StateCount]) -> str:
    return ", ".join(f"{c.count} {state_name(c.state)}" for c in counts)


def _family_rows(t: task_pb2.Task) -> Iterable[tuple[str, str]]:
    """Children and the group's progress (GetTask's FULL view)."""
    if "family" not in t.DESCRIPTOR.fields_by_name:
        return  # generated code older than child tasks
    if t.family.child_count:
        f = t.family
        yield "children", f"{f.child_count} ({_counts(f.children_by_state)})"
        hidden = f.child_count - len(f.child_ids)
        more = [f"(and {hidden} more)"] if hidden else []
        yield "first children", "\n".join([*f.child_ids, *more])
    if t.HasField("group_progress"):
        g = t.group_progress
        yield "group progress", f"{g.done}/{g.total} done ({_counts(g.by_state)})"


def _task_rows(t: task_pb2.Task) -> Iterable[tuple[str, RenderableType]]:
    yield "id", t.id
    yield "type", t.type
    yield "queue", t.queue
    yield "state", styled(state_name(t.state), STATE_STYLE)
    yield "priority", _enum(task_pb2.Priority.Name(t.priority), "PRIORITY_")
    yield "attempts", f"{t.attempts} of {t.max_retries + 1} allowed"
    yield "timeout", span(t.timeout)
    yield "lease duration", span(t.lease_duration)
    yield "created", when(t.created_at)
    yield "updated", when(t.updated_at)
    if t.HasField("scheduled_at"):
        yield "scheduled", when(t.scheduled_at)
    if t.HasField("started_at"):
        yield "started", when(t.started_at)
    if t.HasField("finished_at"):
        yield "finished", when(t.finished_at)
    for label, value in _optional_rows(t):
        if value:
            yield label, value
    yield from _family_rows(t)
    if t.HasField("payload"):
        yield "payload", json_text(t.payload)
    if t.HasField("result"):
        yield "result", json_text(t.result)
    if t.HasField("parent_result"):
        count = len(t.parent_result.list_value.values)
        shown = f"{count} outcomes" if t.callback_of else json_text(t.parent_result)
        yield "parent result", shown
    if t.HasField("last_error"):
        e = t.last_error
        kind = f"{e.type}: " if e.type else ""
        yield "last error", Text(kind + e.message + (" (permanent)" if e.permanent else ""), "red")


def task_detail(t: task_pb2.Task, title: str) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for label, value in _task_rows(t):
        grid.add_row(label, value)
    panel = Panel(grid, title=title, title_align="left", expand=False)
    console().print(panel, width=panel_width())


def task_table(reply: task_service_pb2.ListTasksResponse, page: int) -> None:
    table = _table()
    for name in ("ID", "TYPE", "QUEUE", "PRIORITY", "STATE", "ATTEMPTS", "CREATED"):
        table.add_column(name, no_wrap=name == "ID")
    for t in reply.tasks:
        table.add_row(
            t.id,
            t.type,
            t.queue,
            _enum(task_pb2.Priority.Name(t.priority), "PRIORITY_"),
            styled(state_name(t.state), STATE_STYLE),
            str(t.attempts),
            when(t.created_at),
        )
    more = f"; next: --page {page + 1}" if reply.next_page_token else ""
    table.caption = f"page {page}: {len(reply.tasks)} task(s){more}"
    console().print(table)


def _error_summary(t: task_pb2.Task, width: int = 80) -> str:
    if not t.HasField("last_error"):
        return "-"
    e = t.last_error
    text = (f"{e.type}: " if e.type else "") + e.message.replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def dead_letter_table(reply: task_service_pb2.ListTasksResponse, page: int) -> None:
    table = _table()
    for name in ("ID", "TYPE", "QUEUE", "ATTEMPTS", "DEAD SINCE", "LAST ERROR"):
        table.add_column(name, no_wrap=name == "ID", overflow="fold")
    for t in reply.tasks:
        table.add_row(
            t.id,
            t.type,
            t.queue,
            str(t.attempts),
            when(t.finished_at),
            Text(_error_summary(t), "red"),
        )
    more = f"; next: --page {page + 1}" if reply.next_page_token else ""
    table.caption = f"page {page}: {len(reply.tasks)} dead-lettered task(s){more}"
    console().print(table)


def dead_letter_detail(t: task_pb2.Task) -> None:
    """The task, then its last error's traceback in full."""
    dead = t.state == task_pb2.Task.State.STATE_DEAD_LETTERED
    task_detail(t, "Dead-lettered task" if dead else f"Task ({state_name(t.state)})")
    if t.HasField("last_error") and t.last_error.traceback:
        tb = Text(t.last_error.traceback.rstrip())
        panel = Panel(tb, title="traceback", title_align="left", expand=False)
        console().print(panel, width=panel_width())


def watch_text(t: task_pb2.Task) -> Text:
    """One line for a change of state: when, id, state, attempt, worker, last error."""
    extra = f"attempt {t.attempts}" + (f" on {t.worker_id}" if t.worker_id else "")
    failed = (task_pb2.Task.State.STATE_FAILED, task_pb2.Task.State.STATE_DEAD_LETTERED)
    if t.state in failed and t.HasField("last_error") and t.last_error.message:
        message = " ".join(t.last_error.message.split())
        extra += f" - {t.last_error.type or 'error'}: {message}"
    state = styled(state_name(t.state), STATE_STYLE)
    return Text.assemble(when(t.updated_at), "  ", t.id, "  ", state, "  ", extra)


def watch_line(t: task_pb2.Task) -> None:
    console().print(watch_text(t))


# -- admin ----------------------------------------------------------------------


def queue_table(queues: Iterable[queue_pb2.QueueStats], title: str | None = None) -> None:
    if title:
        console().print(title)
    console().print(queue_stats_table(queues))


def queue_stats_table(queues: Iterable[queue_pb2.QueueStats]) -> Table:
    table = _table()
    heads = ["QUEUE", "STATE", "PENDING", "H/M/L", "RUNNING", "SCHEDULED", "RETRYING"]
    heads += ["DEAD", "DONE/MIN", "FAILED/MIN", "RATE/S", "OLDEST"]
    for i, name in enumerate(heads):
        table.add_column(name, justify="left" if i < 2 else "right")
    for q in queues:
        p = q.pending_by_priority
        table.add_row(
            q.queue if q.tenant in ("", "default") else f"{q.tenant}/{q.queue}",  # operator view
            Text("paused", "yellow") if q.paused else Text("active", "green"),
            *map(str, (q.pending, f"{p.high}/{p.medium}/{p.low}", q.running, q.scheduled)),
            *map(str, (q.retrying, q.dead_lettered, q.completed_last_minute)),
            str(q.failed_last_minute),
            f"{q.throughput_per_second:.2f}",
            span(q.oldest_pending_age),
        )
    if not table.rows:
        table.caption = "no queues yet"
    return table


def worker_table(workers: Iterable[worker_pb2.Worker]) -> None:
    table = _table()
    for name in ("ID", "HOST", "PID", "STATUS", "QUEUES", "TASK TYPES", "BUSY", "LAST SEEN"):
        table.add_column(name, no_wrap=name == "ID")
    table.add_column("METRICS")
    table.add_column("VERSION")
    for w in workers:
        table.add_row(
            w.id,
            w.hostname,
            str(w.pid),
            styled(_enum(worker_pb2.Worker.Status.Name(w.status), "STATUS_"), WORKER_STYLE),
            ",".join(w.queues),
            ",".join(w.task_types),
            f"{w.active_tasks}/{w.concurrency}",
            ago(w.last_seen_at),
            w.metrics_address or "-",
            w.version,
        )
    table.caption = f"{len(table.rows)} worker(s)"
    console().print(table)


def health_name(status: int) -> str:
    return _enum(admin_service_pb2.HealthStatus.Name(status), "HEALTH_STATUS_")  # type: ignore[arg-type]


def health(reply: admin_service_pb2.GetSystemHealthResponse) -> None:
    table = _table()
    for name in ("COMPONENT", "STATUS", "LATENCY", "DETAIL"):
        table.add_column(name, justify="right" if name == "LATENCY" else "left")
    for c in reply.components:
        latency = c.latency.seconds + c.latency.nanos / 1e9
        status = styled(health_name(c.status), HEALTH_STYLE)
        table.add_row(c.name, status, f"{latency * 1000:.1f}ms", c.message)
    head = Text.assemble(
        "system ",
        styled(health_name(reply.status), HEALTH_STYLE),
        f"  (dtq {reply.version}, {reply.active_workers} active worker(s), "
        f"checked {when(reply.checked_at)})",
    )
    console().print(head)
    console().print(table)
