"""Generated requests for every RPC of the three services, over gRPC.

Unary RPCs get messages drawn from their descriptors; the two streams get
generated messages, raw garbage and callers that never read."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtq.v1 import task_service_pb2, task_service_pb2_grpc
from tests.conftest import Server
from tests.security import checks, strategies, tally
from tests.security.checks import FUZZ, Rpc, grpc_call

pytestmark = [pytest.mark.e2e, pytest.mark.security]

UNARY = [rpc for rpc in checks.rpcs() if not rpc.streaming]
STREAMS = {rpc.method.name: rpc for rpc in checks.rpcs() if rpc.streaming}


@pytest.fixture(scope="module")
def fuzz_channel(server: Server) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        yield ch


@pytest.fixture(scope="module", autouse=True)
def real_tasks(fuzz_channel: grpc.Channel) -> None:
    """A few real tasks, so forged lease tokens and ids hit rows that exist."""
    stub = task_service_pb2_grpc.TaskServiceStub(fuzz_channel)
    for _ in range(5):
        task = stub.SubmitTask(task_service_pb2.SubmitTaskRequest(type="noop", queue="fuzz"))
        strategies.KNOWN_IDS.append(task.task.id)


@pytest.mark.parametrize("rpc", UNARY, ids=lambda rpc: rpc.name)
@FUZZ
@given(data=st.data())
def test_unary(fuzz_channel: grpc.Channel, rpc: Rpc, data: st.DataObject) -> None:
    request = data.draw(strategies.messages(rpc.request), label="request")
    if data.draw(st.booleans(), label="tame"):
        strategies.tame(request)
    call = fuzz_channel.unary_unary(
        rpc.path,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=rpc.response.FromString,
    )
    grpc_call(rpc.name, lambda: call(request, timeout=20))


@pytest.mark.parametrize("rpc", UNARY[:: max(1, len(UNARY) // 8)], ids=lambda rpc: rpc.name)
@FUZZ
@given(blob=st.binary(min_size=1, max_size=200))
def test_unary_garbage_bytes(fuzz_channel: grpc.Channel, rpc: Rpc, blob: bytes) -> None:
    call = fuzz_channel.unary_unary(rpc.path)
    grpc_call(f"{rpc.name} (raw bytes)", lambda: call(blob, timeout=20))


def stream_call(
    channel: grpc.Channel, rpc: Rpc, raw: bool = False
) -> grpc.StreamStreamMultiCallable:
    if raw:
        return channel.stream_stream(rpc.path)
    return channel.stream_stream(
        rpc.path,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=rpc.response.FromString,
    )


def drain(rpc: str, replies: Iterator[object], limit: int = 3) -> None:
    """Read up to `limit` replies (a stream may go on forever), then stop."""

    def read() -> None:
        for n, _ in enumerate(replies):
            if n + 1 >= limit:
                break

    grpc_call(rpc, read)


@FUZZ
@given(data=st.data())
def test_lease_stream_generated(fuzz_channel: grpc.Channel, data: st.DataObject) -> None:
    rpc = STREAMS["LeaseTasks"]
    sent = data.draw(st.lists(strategies.messages(rpc.request), min_size=1, max_size=4))
    replies = stream_call(fuzz_channel, rpc)(iter(sent), timeout=2)
    drain("WorkerService.LeaseTasks", replies)
    replies.cancel()


@FUZZ
@given(blobs=st.lists(st.binary(min_size=1, max_size=100), min_size=1, max_size=3))
def test_lease_stream_garbage(fuzz_channel: grpc.Channel, blobs: list[bytes]) -> None:
    replies = stream_call(fuzz_channel, STREAMS["LeaseTasks"], raw=True)(iter(blobs), timeout=2)
    drain("WorkerService.LeaseTasks (raw bytes)", replies)
    replies.cancel()


@FUZZ
@given(data=st.data())
def test_watch_generated(fuzz_channel: grpc.Channel, data: st.DataObject) -> None:
    rpc = STREAMS["WatchTask"]
    request = data.draw(strategies.messages(rpc.request))
    call = fuzz_channel.unary_stream(
        rpc.path,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=rpc.response.FromString,
    )
    replies = call(request, timeout=1)
    drain("TaskService.WatchTask", replies, limit=2)
    replies.cancel()


def hang_after(idle: threading.Event, blobs: list[bytes]) -> Iterator[bytes]:
    yield from blobs
    idle.wait(30)


def test_streams_that_never_read(server: Server, fuzz_channel: grpc.Channel) -> None:
    """Open streams, send, and never read a reply; the server stays healthy."""
    idle = threading.Event()
    opened = []
    for task_id in strategies.KNOWN_IDS[:5]:
        watch = fuzz_channel.unary_stream(STREAMS["WatchTask"].path)
        request = task_service_pb2.WatchTaskRequest(id=task_id).SerializeToString()
        opened.append(watch(request, timeout=30))
        lease = stream_call(fuzz_channel, STREAMS["LeaseTasks"], raw=True)
        opened.append(lease(hang_after(idle, [b"\x0a\x03abc"] * 50), timeout=30))
    time.sleep(1)
    tally.seen("unread streams", f"{len(opened)} open")
    health = checks.health(fuzz_channel)
    assert health, "health failed while streams sat unread"
    idle.set()
    for call in opened:
        call.cancel()
