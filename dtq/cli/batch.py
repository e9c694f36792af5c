"""`dtq task submit-batch FILE.jsonl`: many tasks, one JSON object per line.

Each line is a task: `type` (required), `payload`, `queue`, `priority`
(low/medium/high), `max_retries`, `timeout` and `lease_duration` (seconds),
`scheduled_at` (ISO 8601) or `delay` (seconds from now), `idempotency_key`,
`fairness_key`.
Lines go to BatchSubmitTasks in chunks. The server rejects a whole batch for
one bad request and names it (`requests[i].field`), so a rejected line is set
aside and the rest of its chunk sent again; a chunk failing without naming a
line (a reused idempotency key) is sent one task at a time. Every line ends
accepted (possibly deduplicated) or rejected with its line number and reason.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from google.protobuf import struct_pb2
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dtq.cli import live, output
from dtq.cli.client import (
    Client,
    Target,
    bad_input,
    connect,
    describe,
    remote,
)
from dtq.cli.output import JsonOpt
from dtq.cli.priority import PRIORITY, PriorityChoice
from dtq.client import DtqClientError
from dtq.v1 import task_service_pb2

BATCH_DEADLINE = 60.0  # seconds one BatchSubmitTasks call may take
MAX_CHUNK = 1000  # the server's limit per batch
FIELDS = (
    "type",
    "payload",
    "queue",
    "priority",
    "max_retries",
    "timeout",
    "lease_duration",
    "scheduled_at",
    "delay",
    "idempotency_key",
    "fairness_key",
)
INDEXED = re.compile(r"^requests\[(\d+)\]\.?")
# Codes that concern one request, not the server or the connection.
PER_REQUEST = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
}


class LineError(ValueError):
    """A line that cannot become a request."""


@dataclass
class Line:
    number: int
    request: task_service_pb2.SubmitTaskRequest


@dataclass
class Summary:
    """What became of every line."""

    accepted: list[tuple[int, str, bool]] = field(default_factory=list)  # line, id, dedup
    rejected: list[tuple[int, str]] = field(default_factory=list)  # line, reason

    def as_dict(self) -> dict[str, Any]:
        dedup = sum(1 for _, _, d in self.accepted if d)
        return {
            "accepted": len(self.accepted),
            "created": len(self.accepted) - dedup,
            "deduplicated": dedup,
            "rejected": [{"line": n, "error": e} for n, e in sorted(self.rejected)],
            "tasks": [{"line": n, "id": i, "deduplicated": d} for n, i, d in sorted(self.accepted)],
        }


# -- reading lines ---------------------------------------------------------------


def _number(obj: dict[str, Any], name: str, minimum: float) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LineError(f"{name}: must be a number of seconds, not {json.dumps(value)}")
    if value < minimum:
        raise LineError(f"{name}: must be at least {minimum:g}")
    return float(value)


def _text(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name, "")
    if not isinstance(value, str):
        raise LineError(f"{name}: must be a string, not {json.dumps(value)}")
    return value


def _priority(obj: dict[str, Any]) -> int:
    name = _text(obj, "priority").strip().lower().removeprefix("priority_")
    if not name:
        return 0
    try:
        return PRIORITY[PriorityChoice(name)]
    except ValueError:
        raise LineError(f"priority: one of low, medium, high, not {name!r}") from None


def _when(obj: dict[str, Any], now: datetime) -> datetime | None:
    delay = _number(obj, "delay", 0)
    at = _text(obj, "scheduled_at")
    if delay is not None and at:
        raise LineError("give scheduled_at or delay, not both")
    if delay is not None:
        return now + timedelta(seconds=delay)
    if not at:
        return None
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        raise LineError(f"scheduled_at: {at!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.astimezone()


def parse_line(text: str, now: datetime, queue: str) -> task_service_pb2.SubmitTaskRequest:
    """One JSONL line as a request; LineError says what is wrong with it."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as error:
        raise LineError(f"not valid JSON: {error}") from None
    if not isinstance(obj, dict):
        raise LineError(f"must be a JSON object, not {type(obj).__name__}")
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise LineError(f"unknown field {unknown[0]!r}; known: {', '.join(FIELDS)}")
    if not _text(obj, "type"):
        raise LineError("type: required")
    payload = obj.get("payload", {})
    if not isinstance(payload, dict):
        raise LineError(f"payload: must be a JSON object, not {type(payload).__name__}")
    retries = obj.get("max_retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)):
        raise LineError(f"max_retries: must be an integer, not {json.dumps(retries)}")
    request = task_service_pb2.SubmitTaskRequest(
        type=obj["type"],
        payload=_struct(payload),
        priority=_priority(obj),  # type: ignore[arg-type]
        queue=_text(obj, "queue") or queue,
        max_retries=retries,
        idempotency_key=_text(obj, "idempotency_key"),
        fairness_key=_text(obj, "fairness_key"),
    )
    for name in ("timeout", "lease_duration"):
        seconds = _number(obj, name, 0)
        if seconds is not None:
            getattr(request, name).FromNanoseconds(round(seconds * 1e9))
    scheduled = _when(obj, now)
    if scheduled is not None:
        request.scheduled_at.FromDatetime(scheduled)
    return request


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    payload = struct_pb2.Struct()
    payload.update(value)
    return payload


def read_lines(source: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-blank line of FILE, or of stdin for `-`."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as error:
        bad_input(f"cannot read {source}: {error.strerror}")
    except UnicodeDecodeError as error:
        bad_input(f"{source} is not UTF-8 text: {error.reason}")
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield number, line


# -- submitting ------------------------------------------------------------------


def _send(client: Client, chunk: list[Line], summary: Summary) -> None:
    """Submit `chunk`; lines the server names as bad are rejected, the rest resent."""
    while chunk:
        request = task_service_pb2.BatchSubmitTasksRequest(requests=[x.request for x in chunk])
        try:
            reply = client.call(lambda s: s.tasks.BatchSubmitTasks, request, BATCH_DEADLINE)
        except DtqClientError as error:
            if error.code not in PER_REQUEST:
                raise
            bad = _named_line(error, len(chunk))
            if bad is None:  # no line named: find the culprits one by one
                _send_singly(client, chunk, summary)
                return
            summary.rejected.append((chunk[bad].number, _reason(error, client)))
            del chunk[bad]
            continue
        for line, result in zip(chunk, reply.results, strict=True):
            summary.accepted.append((line.number, result.task.id, result.deduplicated))
        return


def _named_line(error: DtqClientError, size: int) -> int | None:
    for violation in error.violations:
        match = INDEXED.match(violation.field)
        if match and int(match.group(1)) < size:
            return int(match.group(1))
    return None


def _reason(error: DtqClientError, client: Client) -> str:
    """`CODE REASON: field: description`, without the batch's `requests[i].` prefix."""
    if error.violations:
        first = error.violations[0]
        where = INDEXED.sub("", first.field)
        head = f"{error.code.name} {error.reason}" if error.reason else error.code.name
        return f"{head}: {where + ': ' if where else ''}{first.description}"
    return describe(error, client.address, client.source, client.keyed)


def _send_singly(client: Client, chunk: list[Line], summary: Summary) -> None:
    for line in chunk:
        try:
            result = client.call(lambda s: s.tasks.SubmitTask, line.request, BATCH_DEADLINE)
        except DtqClientError as error:
            if error.code not in PER_REQUEST:
                raise
            summary.rejected.append((line.number, _reason(error, client)))
            continue
        summary.accepted.append((line.number, result.task.id, result.deduplicated))


def _chunks(lines: list[Line], size: int) -> Iterator[list[Line]]:
    """Copies: sending one edits it."""
    for start in range(0, len(lines), size):
        yield lines[start : start + size]


def _submit_all(client: Client, lines: list[Line], size: int, summary: Summary) -> None:
    if not live.on_terminal():
        for chunk in _chunks(lines, size):
            _send(client, chunk, summary)
        return
    columns = (
        TextColumn("submitting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rejected]} rejected"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=live.terminal_console()) as progress:
        bar = progress.add_task("submit", total=len(lines), rejected=len(summary.rejected))
        for chunk in _chunks(lines, size):
            sent = len(chunk)  # _send takes rejected lines out of the chunk
            _send(client, chunk, summary)
            progress.update(bar, advance=sent, rejected=len(summary.rejected))


# -- the command -----------------------------------------------------------------


@remote
def submit_batch(
    file: Annotated[
        str,
        typer.Argument(metavar="FILE", help="JSON Lines: one task object per line; - for stdin."),
    ],
    chunk_size: Annotated[
        int, typer.Option(min=1, max=MAX_CHUNK, help="Tasks per BatchSubmitTasks call.")
    ] = 500,
    queue: Annotated[
        str | None, typer.Option(metavar="NAME", help="Queue of lines that name none.")
    ] = None,
    json_out: JsonOpt = False,
    *,
    target: Target,
) -> None:
    """Submit many tasks from a JSON Lines FILE, in batches, with a progress bar.

    Each line: {"type": "t", "payload": {...}, "queue": "q", "priority": "high",
    "max_retries": 3, "timeout": 60, "scheduled_at": "2030-01-01T00:00:00Z" or
    "delay": 30, "idempotency_key": "k"}; only type is required. Prints how many
    were accepted and deduplicated, and every rejected line with its reason;
    exits 1 when any line was rejected."""
    summary, lines = Summary(), []
    now = datetime.now(UTC)
    for number, text in read_lines(file):
        try:
            lines.append(Line(number, parse_line(text, now, queue or "")))
        except LineError as error:
            summary.rejected.append((number, str(error)))
    if lines:
        with connect(target) as client:
            try:
                _submit_all(client, lines, chunk_size, summary)
            except DtqClientError:
                if summary.accepted:
                    _unfinished(summary, lines)
                raise
    _report(summary, json_out)
    if summary.rejected:
        raise typer.Exit(1)


def _unfinished(summary: Summary, lines: list[Line]) -> None:
    """Before the error that stops the command: what was and was not submitted."""
    done = {n for n, _, _ in summary.accepted} | {n for n, _ in summary.rejected}
    first = next((line.number for line in lines if line.number not in done), 0)
    typer.echo(
        f"{len(summary.accepted)} task(s) accepted, {len(summary.rejected)} line(s) rejected; "
        f"lines from {first} on were not submitted (idempotency keys make a rerun safe)",
        err=True,
    )


def _report(summary: Summary, json_out: bool) -> None:
    counts = summary.as_dict()
    if json_out:
        typer.echo(json.dumps(counts, indent=2))
        return
    for entry in counts["rejected"]:
        typer.echo(f"line {entry['line']}: {entry['error']}", err=True)
    total = counts["accepted"] + len(counts["rejected"])
    output.console().print(
        f"{total} line(s): {counts['accepted']} accepted ({counts['created']} new, "
        f"{counts['deduplicated']} deduplicated), {len(counts['rejected'])} rejected"
    )
