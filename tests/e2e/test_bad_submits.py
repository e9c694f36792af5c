"""Bad submits among good ones, concurrently, through a real `dtq server`: the
bad ones are refused (INVALID_ARGUMENT naming the field), every other is stored.

Before issue 10 they shared a group-commit statement with the good ones, and
one NUL (or a year-10000 schedule) failed the whole group as INTERNAL."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from dtq.v1 import task_service_pb2 as pb
from dtq.v1 import task_service_pb2_grpc
from tests.conftest import Server

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
YEAR_10000 = 253_402_300_800  # Timestamp seconds of 10000-01-01T00:00:00Z
GOOD, BATCHES, BATCH = 200, 4, 25
BAD = {
    "trace_context.traceparent": pb.SubmitTaskRequest(
        type="t", trace_context={"traceparent": "00-\x00-01"}
    ),
    "idempotency_key": pb.SubmitTaskRequest(type="t", idempotency_key="key\x00one"),
    "scheduled_at": pb.SubmitTaskRequest(
        type="t", scheduled_at=timestamp_pb2.Timestamp(seconds=YEAR_10000)
    ),
}


def good(i: int) -> pb.SubmitTaskRequest:
    body = struct_pb2.Struct()
    body.update({"i": i})
    return pb.SubmitTaskRequest(type="t", payload=body, idempotency_key=f"good-{i}")


def violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found += [v.field for v in bad.field_violations]
    return found


async def submit_all(address: str) -> tuple[list[Any], list[str], int]:
    """Everything at once; returns the bad calls' answers, the good tasks' ids
    and how many of those GetTask finds."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        singles = [stub.SubmitTask(good(i), timeout=30) for i in range(GOOD)]
        first = GOOD
        batches = [
            stub.BatchSubmitTasks(
                pb.BatchSubmitTasksRequest(
                    requests=[good(first + b * BATCH + i) for i in range(BATCH)]
                ),
                timeout=30,
            )
            for b in range(BATCHES)
        ]
        bad = [stub.SubmitTask(r, timeout=30) for r in BAD.values()]
        # Interleaved, so the bad ones arrive while good ones wait for a flush.
        good_calls = await asyncio.gather(
            *singles[:100], *batches[:2], *singles[100:], *batches[2:], return_exceptions=True
        )
        bad_answers = await asyncio.gather(*bad, return_exceptions=True)
        ids: list[str] = []
        for answer in good_calls:
            assert not isinstance(answer, BaseException), f"a good submit failed: {answer!r}"
            if isinstance(answer, pb.SubmitTaskResponse):
                ids.append(answer.task.id)
            else:
                ids += [s.task.id for s in answer.results]
        found = await asyncio.gather(
            *(stub.GetTask(pb.GetTaskRequest(id=i), timeout=30) for i in ids)
        )
        return bad_answers, ids, sum(1 for f in found if f.task.id)


def test_bad_submits_among_concurrent_good_ones_fail_alone(server: Server) -> None:
    bad_answers, ids, stored = asyncio.run(asyncio.wait_for(submit_all(server.address), 120))
    for field, answer in zip(BAD, bad_answers, strict=True):
        assert isinstance(answer, grpc.aio.AioRpcError), f"{field}: accepted"
        assert answer.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, answer.details())
        assert violations(answer) == [field]
    assert len(set(ids)) == GOOD + BATCHES * BATCH
    assert stored == len(ids)


def test_a_nul_in_a_payload_string_is_stored_as_sent(server: Server) -> None:
    # The payload is stored as encoded protobuf (bytea), not jsonb: \u0000 is a
    # valid JSON/protobuf string and round-trips unchanged.
    body = struct_pb2.Struct()
    body.update({"text": "a\x00b"})
    with server.channel() as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        task = stub.SubmitTask(pb.SubmitTaskRequest(type="t", payload=body), timeout=10).task
        back = stub.GetTask(pb.GetTaskRequest(id=task.id), timeout=10).task
    assert back.payload["text"] == "a\x00b"
