"""Nesting depth of payloads (what submit bounds) and the worker's decoding of
a lease message whose task does not decode (issue 10)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2

from dtq.api.convert import depth
from dtq.v1 import task_pb2
from dtq.v1 import worker_service_pb2 as pb
from dtq.worker.decoding import decode


def nested(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


def struct(body: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(body)
    return s


@pytest.mark.parametrize(
    ("body", "levels"),
    [({}, 1), ({"a": 1}, 1), ({"a": {}}, 2), ({"a": [1, [2]], "b": {"c": {}}}, 3)],
)
def test_depth_counts_objects_and_arrays(body: dict[str, Any], levels: int) -> None:
    assert depth(struct(body)) == levels


def test_depth_stops_counting_past_the_cap() -> None:
    assert depth(struct({"k": nested(48)})) == 33
    assert depth(struct({"k": nested(48)}), cap=100) == 49


def test_a_lease_that_does_not_decode_is_named_and_the_rest_kept() -> None:
    deep = struct({"k": nested(48)})
    message = pb.LeaseTasksResponse(
        leases=[
            pb.Lease(task=task_pb2.Task(id="good", payload=struct({"i": 1})), lease_token="t1"),
            pb.Lease(task=task_pb2.Task(id="bad", payload=deep), lease_token="t2"),
        ],
        acks=[pb.OutcomeAck(task_id="acked")],
        draining=True,
    )
    received = decode(message.SerializeToString())
    assert [lease.task.id for lease in received.response.leases] == ["good"]
    assert [a.task_id for a in received.response.acks] == ["acked"]
    assert received.response.draining
    assert [(u.task_id, u.lease_token) for u in received.undecodable] == [("bad", "t2")]


def test_garbage_from_the_server_is_an_empty_message() -> None:
    received = decode(b"\xff\xff\xff")
    assert received.response == pb.LeaseTasksResponse()
    assert received.undecodable == ()
