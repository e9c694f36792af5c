"""Replies Envoy makes itself are JSON `google.rpc.Status` bodies too.

The transcoder refusing a request (bad JSON, unknown enum name, unknown query
parameter, path and body disagreeing), an unknown route, a body over the limit and
no API server to send to: each answers the same shape as the server's errors
(`code`, `message`, `details` with ErrorInfo), with its HTTP code, through a real
Envoy rendered by `dtq.envoy.render`. Native gRPC keeps Envoy's grpc-status.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from dtq.v1 import task_service_pb2 as pb
from dtq.v1 import task_service_pb2_grpc
from tests.conftest import Server
from tests.e2e.test_rest import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    Rest,
    assert_error,
)
from tests.support.envoy import Envoy, running_envoy
from tests.support.procs import free_port

pytestmark = pytest.mark.e2e

SMALL_BODY = 4096  # bytes: the limit of the `small` Envoy


@pytest.fixture(scope="module")
def small(server: Server) -> Iterator[Envoy]:
    """Envoy in front of the module's server with a 4 KiB REST body limit."""
    with running_envoy(server.address, max_body_bytes=SMALL_BODY) as running:
        yield running


@pytest.fixture(scope="module")
def orphan() -> Iterator[Envoy]:
    """Envoy whose only backend is a port nothing listens on."""
    with running_envoy(f"127.0.0.1:{free_port()}", backend_up=False) as running:
        yield running


@pytest.mark.parametrize(
    ("method", "path", "raw", "says"),
    [
        ("POST", "/api/v1/tasks", b"{not json", "Expected : between key:value pair"),
        ("POST", "/api/v1/tasks", b'{"type": ', "Unexpected end of string"),
        ("POST", "/api/v1/tasks", b'["not", "an", "object"]', "Root element must be a message"),
        ("POST", "/api/v1/tasks", b'{"type": "x", "priority": "PRIORITY_URGENT"}', "priority"),
        ("GET", "/api/v1/tasks?state=STATE_BOGUS", None, "STATE_BOGUS"),
        ("GET", "/api/v1/tasks?bogus=1", None, "bogus"),
        ("POST", "/api/v1/queues/mail:pause", b'{"queue": "other"}', "conflicting"),
    ],
)
def test_a_request_the_transcoder_refuses_is_a_json_400(
    small: Envoy, method: str, path: str, raw: bytes | None, says: str
) -> None:
    reply = Rest(small.port).call(method, path, raw=raw)
    status = assert_error(reply, 400, INVALID_ARGUMENT, "INVALID_REQUEST")
    assert says in status["message"]  # Envoy's own explanation, JSON-escaped


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/v1/nothing"), ("DELETE", "/api/v1/tasks"), ("GET", "/")],
)
def test_an_unknown_route_is_a_json_404(small: Envoy, method: str, path: str) -> None:
    status = assert_error(Rest(small.port).call(method, path), 404, NOT_FOUND, "UNKNOWN_ROUTE")
    assert path in status["message"]


def test_a_body_over_the_limit_is_a_json_413_and_nothing_is_stored(small: Envoy) -> None:
    rest = Rest(small.port)
    body = json.dumps({"type": "big", "payload": {"blob": "x" * SMALL_BODY}}).encode()
    reply = rest.post("/api/v1/tasks", raw=body)
    assert_error(reply, 413, RESOURCE_EXHAUSTED, "BODY_TOO_LARGE")
    assert rest.ok("GET", "/api/v1/tasks", type="big")["tasks"] == []
    rest.submit(payload={"blob": "x" * (SMALL_BODY // 2)})  # under the limit: accepted


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/tasks"),
        ("GET", "/api/v1/tasks"),
        ("GET", "/api/v1/tasks/01a22029-0000-7000-8000-000000000000:watch"),
        ("GET", "/api/v1/health"),
    ],
)
def test_no_api_server_is_a_json_503_with_retry_info(orphan: Envoy, method: str, path: str) -> None:
    reply = Rest(orphan.port).call(method, path, {"type": "x"} if method == "POST" else None)
    status = assert_error(reply, 503, UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    retry = [d for d in status["details"] if d["@type"].endswith("RetryInfo")]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retry_delay": "1s"}]


def test_native_grpc_without_an_api_server_keeps_envoys_status(orphan: Envoy) -> None:
    with grpc.insecure_channel(orphan.address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.SubmitTask(pb.SubmitTaskRequest(type="x"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not caught.value.details().startswith("{")  # not the REST JSON body


def test_headers_over_envoys_limit_are_a_json_4xx(small: Envoy) -> None:
    reply = Rest(small.port).get("/api/v1/tasks", page_token="a" * 70_000)  # over 60 KiB
    assert_error(reply, 431, INVALID_ARGUMENT, "INVALID_REQUEST")
