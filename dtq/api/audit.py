"""What the audit log keeps of a call: its target, detail and outcome, from
the request and reply messages (see `dtq.domain.audit`)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import text_format
from google.protobuf.json_format import MessageToDict, SerializeToJsonError

TARGET_FIELDS = ("id", "queue", "tenant.name", "name")


def target(request: Any) -> str:
    for path in TARGET_FIELDS:
        value = request
        for name in path.split("."):
            value = getattr(value, name, None)
        if isinstance(value, str) and value:
            return value
    schedule = getattr(request, "schedule", None)  # CreateSchedule, UpdateSchedule
    return str(getattr(schedule, "name", "")) if schedule is not None else ""


def _fields(request: Any) -> dict[str, Any]:
    """The request as JSON; one JSON cannot hold (a Timestamp past year 9999 in
    a field the call ignores) is kept in the protobuf text format."""
    try:
        return MessageToDict(request)
    except SerializeToJsonError:
        return {"text": text_format.MessageToString(request, as_one_line=True)}


def detail(request: Any, reply: Any | None) -> dict[str, Any]:
    """The request's fields, and the reply's counts (`purged_count`, ...)."""
    found: dict[str, Any] = {"request": _fields(request)}
    if reply is not None:
        fields = reply.DESCRIPTOR.fields
        counts = {f.name: getattr(reply, f.name) for f in fields if f.name.endswith("_count")}
        if counts:
            found["reply"] = counts
    return found


def outcome(context: grpc.aio.ServicerContext[Any, Any], raised: bool) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):  # grpc.aio keeps the number it was given
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))
    return "UNKNOWN" if raised else "OK"
