"""JSON bodies for the replies Envoy makes itself (`local_reply_config`).

The server's errors reach REST clients as a JSON `google.rpc.Status` (the
transcoder's `convert_grpc_status`). Replies that Envoy generates (the
transcoder refusing a request it cannot parse or route, a body over the size
limit, no server to send it to) are plain text by default; these mappers give
them the same shape, `{"code", "message", "details": [ErrorInfo]}`, with the
HTTP status kept (or set) as listed in `REPLIES`. Native gRPC calls are left
alone: Envoy already answers them with a grpc-status.
"""

from __future__ import annotations

from typing import Any

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
# gRPC codes (google.rpc.Code) used below.
INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, RESOURCE_EXHAUSTED = 3, 4, 5, 8
INTERNAL, UNAVAILABLE = 13, 14


# (lowest HTTP status, highest, gRPC code, ErrorInfo reason); the first match wins.
# A body over the limit is RESOURCE_EXHAUSTED, as gRPC answers a message over the
# server's receive limit, but keeps its HTTP 413.
REPLIES: tuple[tuple[int, int, int, str], ...] = (
    (404, 404, NOT_FOUND, "UNKNOWN_ROUTE"),
    (413, 413, RESOURCE_EXHAUSTED, "BODY_TOO_LARGE"),
    (400, 499, INVALID_ARGUMENT, "INVALID_REQUEST"),  # bad JSON, enum name, query, ...
    (502, 503, UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    (504, 504, DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT"),
    (500, 599, INTERNAL, "PROXY_ERROR"),
)


def _status_in(low: int, high: int) -> dict[str, Any]:
    def compare(op: str, value: int) -> dict[str, Any]:
        runtime = {"default_value": value, "runtime_key": f"dtq.local_reply.{op.lower()}_{value}"}
        return {"status_code_filter": {"comparison": {"op": op, "value": runtime}}}

    if low == high:
        return compare("EQ", low)
    return {"and_filter": {"filters": [compare("GE", low), compare("LE", high)]}}


def _rest() -> dict[str, Any]:
    """A REST call: not native gRPC, or transcoded from REST (the transcoder keeps
    the REST path in x-envoy-original-path when it rewrites the request)."""
    grpc_type = {
        "name": "content-type",
        "string_match": {"prefix": "application/grpc"},
        "treat_missing_header_as_empty": True,
    }
    original = {"name": "x-envoy-original-path", "present_match": True}
    return {
        "or_filter": {
            "filters": [
                {"header_filter": {"header": {**grpc_type, "invert_match": True}}},
                {"header_filter": {"header": original}},
            ]
        }
    }


def _body(code: int, reason: str) -> dict[str, Any]:
    details: list[dict[str, Any]] = [{"@type": ERROR_INFO, "reason": reason, "domain": "dtq"}]
    if code == UNAVAILABLE:  # as the server's own UNAVAILABLE: retry after a second
        details.append({"@type": RETRY_INFO, "retry_delay": "1s"})
    return {
        # %LOCAL_REPLY_BODY% is Envoy's own text: the parse error, the route, the reset.
        "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%", "details": details},
        "content_type": "application/json",
    }


def local_reply_config() -> dict[str, Any]:
    """The HTTP connection manager's `local_reply_config`."""
    mappers = [
        {
            "filter": {"and_filter": {"filters": [_rest(), _status_in(low, high)]}},
            "body_format_override": _body(code, reason),
        }
        for low, high, code, reason in REPLIES
    ]
    return {"mappers": mappers}
