"""`dtq audit list`: the audit log, newest first (AdminService.ListAuditEvents)."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import Annotated

import typer

from dtq.cli import output
from dtq.cli.apikey import parse_span
from dtq.cli.client import Target, bad_input, connect, remote
from dtq.cli.output import JsonOpt
from dtq.v1 import admin_service_pb2 as pb

audit_app = typer.Typer(help="The audit log: who changed what.", no_args_is_help=True)
PAGE = 500
SPAN = re.compile(r"\s*\d+(\.\d+)?\s*[smhd]\s*")
HEADERS = ("ID", "TIME", "ACTOR", "ROLE", "ACTION", "TARGET", "OUTCOME", "DETAIL")


def since_request(since: str | None) -> pb.ListAuditEventsRequest:
    """`2h`, `7d` (that long ago) or an ISO 8601 time (local without an offset)."""
    request = pb.ListAuditEventsRequest()
    if not since:
        return request
    if SPAN.fullmatch(since):
        request.since.FromSeconds(int(time.time() - parse_span(since)))
        return request
    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        bad_input(f"--since: {since!r} is neither a span (2h, 7d) nor an ISO 8601 time")
    request.since.FromDatetime(moment if moment.tzinfo else moment.astimezone())
    return request


@audit_app.command("list")
@remote
def list_events(
    since: Annotated[
        str | None,
        typer.Option(metavar="WHEN", help="Only events since then: 2h, 7d, or an ISO time."),
    ] = None,
    actor: Annotated[
        str | None, typer.Option(metavar="WHO", help="Only this actor (key:<id>, cli:<user>...).")
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", min=1, help="Most events to show.")] = 50,
    json_out: JsonOpt = False,
    *,
    target: Target,
) -> None:
    """Calls that changed state on someone else's behalf, and how they ended."""
    request = since_request(since)
    request.actor = actor or ""
    events: list[pb.AuditEvent] = []
    with connect(target) as client:
        while len(events) < limit:
            request.page_size = min(PAGE, limit - len(events))
            reply = client.call(lambda s: s.admin.ListAuditEvents, request)
            events.extend(reply.events)
            if not reply.next_page_token:
                break
            request.page_token = reply.next_page_token
    if json_out:
        output.emit_json(pb.ListAuditEventsResponse(events=events))
        return
    rows = (
        (
            str(e.id),
            output.when(e.time),
            e.actor,
            e.role,
            e.action,
            e.target,
            e.outcome,
            json.dumps(json.loads(e.detail or "{}").get("reply", {})) if e.detail else "",
        )
        for e in events
    )
    output.rows_table(HEADERS, rows, "events")


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
