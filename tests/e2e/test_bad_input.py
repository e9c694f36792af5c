"""Bad input a fuzzer sent (issue 10): each answer is INVALID_ARGUMENT naming the
problem, never UNKNOWN or INTERNAL, and never names a Python class; through
Envoy it is a JSON 400, never a 500. A real `dtq server`, generic gRPC calls for
bytes no stub would send, REST through a real Envoy."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from dtq.domain import paging
from dtq.v1 import admin_service_pb2, task_service_pb2, worker_service_pb2, worker_service_pb2_grpc
from dtq.v1 import admin_service_pb2 as apb
from dtq.v1 import task_service_pb2 as tpb
from dtq.v1 import task_service_pb2_grpc as tgrpc
from dtq.v1 import worker_service_pb2 as wpb
from tests.conftest import Server, start_server
from tests.e2e.test_rest import INVALID_ARGUMENT, Rest, assert_error
from tests.support.envoy import Envoy, running_envoy

pytestmark = pytest.mark.e2e

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
NO_FILTERS = paging.fingerprint(None, None, None)  # ListTasks without filters
WORKERS = paging.fingerprint("workers")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def token(body: object) -> str:
    return b64(json.dumps(body).encode())


TASK_TOKENS = [
    "garbage",
    "!!!",
    b64(bytes.fromhex("9c11e4a07f3b55d2c80e6a19f4b27d03aa5e")),  # random bytes
    token({"x": 1}),  # well-formed, wrong fields
    token({"k": 5, "f": NO_FILTERS}),
    token({"k": "not-a-uuid", "f": NO_FILTERS}),
    token({"k": "0190a8e2-1c3b-7a4e-8f00-0123456789ab", "f": "other"}),
    b64(b"[" * 5000 + b"]" * 5000),  # nesting deeper than Python's json recurses
    "a" * 5000,
]
WORKER_TOKENS = [
    "abc",
    token({"k": "abc", "f": WORKERS}),  # non-numeric offset
    token({"k": "-5", "f": WORKERS}),
    token({"k": "1e9", "f": WORKERS}),
    token({"k": "99999999999999999999999", "f": WORKERS}),
    b64(b"[" * 5000 + b"]" * 5000),
]
MALFORMED = [b"\xff\xff\xff", b"\x0a\xff", b"\x08"]


def _methods() -> list[tuple[str, bool, bool]]:
    """(path, client streams, server streams) of every dtq RPC."""
    found = []
    for module in (task_service_pb2, worker_service_pb2, admin_service_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                found.append(
                    (f"/{service.full_name}/{m.name}", m.client_streaming, m.server_streaming)
                )
    return found


def assert_invalid(error: grpc.RpcError, field: str | None, reason: str) -> None:
    """INVALID_ARGUMENT with one ErrorInfo of `reason`; no Python class named."""
    details = error.details() or ""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "class" not in details and "Error" not in details
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    infos = [d for d in status.details if d.type_url == ERROR_INFO]
    assert len(infos) == 1
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    assert (info.reason, info.domain) == (reason, "dtq")
    if field:
        assert details.startswith(f"{field}:")


@pytest.fixture(scope="module")
def envoy(server: Server) -> Iterator[Envoy]:
    with running_envoy(server.address) as running:
        yield running


LISTS = {  # RPC, request, response, REST route
    "tasks": ("/dtq.v1.TaskService/ListTasks", tpb.ListTasksRequest, tpb.ListTasksResponse),
    "workers": (
        "/dtq.v1.AdminService/ListWorkers",
        apb.ListWorkersRequest,
        apb.ListWorkersResponse,
    ),
}


@pytest.mark.parametrize(
    ("listing", "page_token"),
    [("tasks", t) for t in TASK_TOKENS] + [("workers", t) for t in WORKER_TOKENS],
)
def test_forged_page_token(
    channel: grpc.Channel, envoy: Envoy, listing: str, page_token: str
) -> None:
    method, request, response = LISTS[listing]
    call = channel.unary_unary(
        method,
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )
    with pytest.raises(grpc.RpcError) as caught:
        call(request(page_token=page_token), timeout=10)
    assert_invalid(caught.value, "page_token", "INVALID_FIELD")
    reply = Rest(envoy.port).get(f"/api/v1/{listing}", page_token=page_token)
    assert_error(reply, 400, INVALID_ARGUMENT, "INVALID_FIELD", ("page_token",))


@pytest.mark.parametrize("raw", MALFORMED, ids=lambda r: r.hex())
@pytest.mark.parametrize(("method", "client_streams", "server_streams"), _methods())
def test_malformed_protobuf_is_invalid_argument(
    channel: grpc.Channel, method: str, client_streams: bool, server_streams: bool, raw: bytes
) -> None:
    # No serializers: the bytes go on the wire as they are.
    if client_streams:
        call = channel.stream_stream(method) if server_streams else channel.stream_unary(method)
        request: object = iter([raw])
    else:
        call = channel.unary_stream(method) if server_streams else channel.unary_unary(method)
        request = raw
    with pytest.raises(grpc.RpcError) as caught:
        reply = call(request, timeout=10)
        if server_streams:
            list(reply)
    assert_invalid(caught.value, None, "MALFORMED_REQUEST")
    health = channel.unary_unary(
        "/dtq.v1.AdminService/GetSystemHealth",
        request_serializer=apb.GetSystemHealthRequest.SerializeToString,
        response_deserializer=apb.GetSystemHealthResponse.FromString,
    )
    assert health(apb.GetSystemHealthRequest(), timeout=10).version  # the server serves on


def test_unreachable_postgres_names_no_python_class(redis_url: str) -> None:
    dead = start_server("postgresql://postgres@127.0.0.1:1/nowhere", redis_url)
    try:
        with dead.channel() as channel:
            call = channel.unary_unary(
                "/dtq.v1.TaskService/SubmitTask",
                request_serializer=tpb.SubmitTaskRequest.SerializeToString,
                response_deserializer=tpb.SubmitTaskResponse.FromString,
            )
            with pytest.raises(grpc.RpcError) as caught:
                call(tpb.SubmitTaskRequest(type="x"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Error" not in (caught.value.details() or "")  # was "...: OperationalError"
    finally:
        dead.proc.stop()


# -- names: `default\n` is not a queue -------------------------------------------------

Q = "default\n"
QUEUE_CALLS = {  # RPC: (request, the field named)
    "/dtq.v1.TaskService/SubmitTask": (tpb.SubmitTaskRequest(type="x", queue=Q), "queue"),
    "/dtq.v1.TaskService/ListTasks": (tpb.ListTasksRequest(queue=Q), "queue"),
    "/dtq.v1.AdminService/GetQueueStats": (apb.GetQueueStatsRequest(queue=Q), "queue"),
    "/dtq.v1.AdminService/PauseQueue": (apb.PauseQueueRequest(queue=Q), "queue"),
    "/dtq.v1.AdminService/ResumeQueue": (apb.ResumeQueueRequest(queue=Q), "queue"),
    "/dtq.v1.AdminService/RequeueDeadLetters": (apb.RequeueDeadLettersRequest(queue=Q), "queue"),
    "/dtq.v1.AdminService/PurgeDeadLetters": (
        apb.PurgeDeadLettersRequest(queue=Q, confirm=True),
        "queue",
    ),
    "/dtq.v1.WorkerService/RegisterWorker": (
        wpb.RegisterWorkerRequest(worker_id="w1", queues=[Q], task_types=["x"]),
        "queues",
    ),
}


@pytest.mark.parametrize("method", sorted(QUEUE_CALLS))
def test_a_queue_name_with_a_newline_is_refused(channel: grpc.Channel, method: str) -> None:
    request, field = QUEUE_CALLS[method]
    call = channel.unary_unary(method, request_serializer=type(request).SerializeToString)
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=10)
    assert_invalid(caught.value, field, "INVALID_FIELD")


def test_a_lease_stream_on_a_queue_with_a_newline_is_refused(channel: grpc.Channel) -> None:
    stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
    open_ = wpb.StreamOpen(worker_id="w1", queues=[Q], task_types=["x"], capacity=1)
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.LeaseTasks(iter([wpb.LeaseTasksRequest(open=open_)]), timeout=10))
    assert_invalid(caught.value, "open.queues", "INVALID_FIELD")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/tasks", {"type": "x", "queue": Q}),
        ("/api/v1/queues/default%0A:pause", {}),
        ("/api/v1/queues/%20default:resume", {}),
    ],
)
def test_rest_queue_name_with_padding_is_a_400(
    envoy: Envoy, clean: None, path: str, body: dict[str, str]
) -> None:
    reply = Rest(envoy.port).post(path, body)
    assert_error(reply, 400, INVALID_ARGUMENT, "INVALID_FIELD", ("queue",))
    assert Rest(envoy.port).ok("GET", "/api/v1/tasks")["tasks"] == []


# -- a bad message in the middle of a lease stream ---------------------------------------


def _open_stream(channel: grpc.Channel, later: list[bytes]) -> grpc.RpcError:
    """A lease stream of raw bytes: a valid registration and open, then `later`."""
    stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
    worker = stub.RegisterWorker(wpb.RegisterWorkerRequest(task_types=["x"]), timeout=10)
    open_ = wpb.LeaseTasksRequest(
        open=wpb.StreamOpen(worker_id=worker.worker_id, task_types=["x"], capacity=1)
    )
    call = channel.stream_stream("/dtq.v1.WorkerService/LeaseTasks")  # bytes as they are
    with pytest.raises(grpc.RpcError) as caught:
        list(call(iter([open_.SerializeToString(), *later]), timeout=10))
    return caught.value


@pytest.mark.parametrize("raw", MALFORMED, ids=lambda r: r.hex())
def test_garbage_mid_stream_ends_the_lease_stream_with_invalid_argument(
    channel: grpc.Channel, raw: bytes
) -> None:
    heartbeat = wpb.LeaseTasksRequest().SerializeToString()
    error = _open_stream(channel, [heartbeat, raw])
    assert_invalid(error, None, "MALFORMED_REQUEST")  # was: closed with OK


def test_an_invalid_outcome_mid_stream_ends_it_with_invalid_argument(
    channel: grpc.Channel,
) -> None:
    bad = wpb.LeaseTasksRequest(outcomes=[wpb.TaskOutcome(task_id="nope", lease_token="t")])
    error = _open_stream(channel, [bad.SerializeToString()])
    assert_invalid(error, "outcomes[0].lease_token", "INVALID_FIELD")


@pytest.mark.parametrize("field", ["created_after", "created_before"])
def test_a_time_filter_past_year_9999_is_refused(channel: grpc.Channel, field: str) -> None:
    """The fuzzer's find: ListTasks answered INTERNAL for created_after in year 10000."""
    request = tpb.ListTasksRequest(**{field: timestamp_pb2.Timestamp(seconds=253402300800)})
    with pytest.raises(grpc.RpcError) as caught:
        tgrpc.TaskServiceStub(channel).ListTasks(request, timeout=10)
    assert_invalid(caught.value, field, "INVALID_FIELD")
