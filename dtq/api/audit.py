"""What the audit log keeps of a call: its target, detail and outcome, from
the request and reply messages (see `dtq.domain.audit`)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

TARGET_FIELDS = ("id", "queue")


def target(request: Any) -> str:
    for name in TARGET_FIELDS:
        value = getattr(request, name, None)
        if isinstance(value, str) and value:
            return value
    return ""


def detail(request: Any, reply: Any | None) -> dict[str, Any]:
    """The request's fields, and the reply's counts (`purged_count`, ...)."""
    found: dict[str, Any] = {"request": MessageToDict(request)}
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
