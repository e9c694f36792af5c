"""What `dtq schedule` prints: a table of schedules, one schedule in full."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dtq.cli.output import (
    STATE_STYLE,
    _enum,
    _table,
    console,
    json_text,
    panel_width,
    span,
    state_name,
    styled,
    when,
)
from dtq.v1 import schedule_pb2, task_pb2

Pb = schedule_pb2.Schedule


def timing(s: Pb) -> str:
    if s.cron:
        return f"{s.cron} ({s.time_zone or 'UTC'})"
    return f"every {span(s.interval)}"


def last_state(s: Pb) -> Text:
    if not s.last_task_state:
        return Text("-")
    return styled(state_name(s.last_task_state), STATE_STYLE)


def schedule_table(schedules: Iterable[Pb]) -> None:
    table = _table()
    for name in ("NAME", "WHEN", "TASK", "NEXT FIRE", "LAST FIRE", "LAST RUN", "PAUSED"):
        table.add_column(name, no_wrap=name in ("NAME", "NEXT FIRE", "LAST FIRE"))
    for s in schedules:
        table.add_row(
            s.name + (" (code)" if s.declared_in_code else ""),
            timing(s),
            f"{s.task.type} @ {s.task.queue}",
            when(s.next_fire_time),
            when(s.last_fire_time),
            last_state(s),
            "yes" if s.paused else "no",
        )
    table.caption = f"{len(table.rows)} schedules"
    console().print(table)


def _rows(s: Pb) -> Iterable[tuple[str, RenderableType]]:
    yield "name", s.name
    yield "when", timing(s)
    yield "task type", s.task.type
    yield "queue", s.task.queue
    yield "priority", _enum(task_pb2.Priority.Name(s.task.priority), "PRIORITY_")
    if s.task.HasField("payload"):
        yield "payload", json_text(s.task.payload)
    if s.task.HasField("max_retries"):
        yield "max retries", str(s.task.max_retries)
    if s.task.HasField("timeout"):
        yield "timeout", span(s.task.timeout)
    yield "overlap", _enum(Pb.OverlapPolicy.Name(s.overlap_policy), "OVERLAP_POLICY_")
    catch_up = _enum(Pb.CatchUpPolicy.Name(s.catch_up_policy), "CATCH_UP_POLICY_")
    if s.catch_up_policy == Pb.CATCH_UP_POLICY_ALL:
        catch_up += f" (at most {s.catch_up_limit})"
    yield "catch-up", catch_up
    yield "paused", "yes" if s.paused else "no"
    yield "declared in code", "yes" if s.declared_in_code else "no"
    yield "next fire", when(s.next_fire_time)
    yield "last fire", when(s.last_fire_time)
    if s.last_task_id:
        yield "last task", s.last_task_id
    yield "last run", last_state(s)
    yield "created", when(s.created_at)
    yield "updated", when(s.updated_at)


def schedule_detail(s: Pb, title: str) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for label, value in _rows(s):
        grid.add_row(label, value)
    panel = Panel(grid, title=title, title_align="left", expand=False)
    console().print(panel, width=panel_width())
