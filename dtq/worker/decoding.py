"""Decoding the server's messages so that one bad lease fails one task, not the worker.

A lease can be valid on the wire and still not decode here: protobuf decoders
stop at 100 levels of nesting, and a payload accepted before the server bounded
its depth can be deeper. grpc would hand the stream `None` for that message, and
every other lease, ack and revocation in it would be lost too. `decode` parses
the message field by field instead when the whole does not decode: the leases
that decode are kept, and the ones that do not are returned by task id and
lease token, for the worker to report as failed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from dtq.v1 import worker_service_pb2 as pb

log = logging.getLogger(__name__)
LEASES = 1  # LeaseTasksResponse.leases
LEASE_TASK, LEASE_TOKEN = 1, 2  # Lease.task, Lease.lease_token
TASK_ID = 1  # Task.id
LEN = 2  # wire type of length-delimited fields


@dataclass(frozen=True)
class Undecodable:
    """A lease whose task did not decode."""

    task_id: str
    lease_token: str
    reason: str


@dataclass(frozen=True)
class Received:
    """One server message: what decoded, and the leases that did not."""

    response: pb.LeaseTasksResponse
    undecodable: tuple[Undecodable, ...] = ()


def decode(data: bytes) -> Received:
    """The response deserializer of the lease stream."""
    try:
        return Received(pb.LeaseTasksResponse.FromString(data))
    except DecodeError as error:
        reason = str(error)
    kept: list[bytes] = []
    bad: list[Undecodable] = []
    try:
        for number, wire, value, raw in _fields(data):
            if number == LEASES and wire == LEN:
                try:  # as the only lease of a message: at the depth it has in one
                    pb.LeaseTasksResponse.FromString(raw)
                except DecodeError:
                    bad.append(_identify(value, reason))
                    continue
            kept.append(raw)
        response = pb.LeaseTasksResponse.FromString(b"".join(kept))
    except (DecodeError, ValueError):
        log.error("server_message_undecodable", extra={"bytes": len(data)})
        return Received(pb.LeaseTasksResponse())
    return Received(response, tuple(bad))


def _identify(lease: bytes, reason: str) -> Undecodable:
    """Task id and token of a lease, read from the wire without its task's payload."""
    task_id = token = ""
    for number, wire, value, _ in _fields(lease):
        if wire != LEN:
            continue
        if number == LEASE_TOKEN:
            token = value.decode("utf-8", "replace")
        elif number == LEASE_TASK:
            for inner, inner_wire, item, _ in _fields(value):
                if inner == TASK_ID and inner_wire == LEN:
                    task_id = item.decode("utf-8", "replace")
    return Undecodable(task_id, token, reason)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, bytes, bytes]]:
    """(field number, wire type, value, the field's raw bytes) of one message level."""
    at = 0
    while at < len(data):
        start = at
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, at = _varint(data, at)
            value = b""
        elif wire == LEN:
            size, at = _varint(data, at)
            value, at = data[at : at + size], at + size
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
            value = b""
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if at > len(data):
            raise ValueError("truncated field")
        yield number, wire, value, data[start:at]
