"""A group's outcomes, as the callback's `parent_result`: an encoded
`google.protobuf.Value` holding a list of `{"id", "state", "result", "error"}`
objects. Written in the protobuf wire format by hand (a few length-delimited
fields) so that the stored results, already encoded `Value`s, are copied as
they are: no decoding of 10,000 results to build one list."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from dtq.domain.model import TaskState

Outcome = tuple[uuid.UUID, TaskState, bytes | None, str | None]

# google.protobuf.Value fields: null_value 1 (varint), string_value 3,
# struct_value 5, list_value 6. Struct: fields 1 (map entries of key 1 and
# value 2). ListValue: values 1.
_NULL = b"\x08\x00"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _string(text: str) -> bytes:
    return _field(3, text.encode())


def _entry(key: str, value: bytes) -> bytes:
    return _field(1, _field(1, key.encode()) + _field(2, value))


def encode(outcomes: Iterable[Outcome]) -> bytes:
    """The encoded `Value` of the outcomes, in the order given."""
    items = bytearray()
    for task_id, state, result, error in outcomes:
        fields = (
            _entry("id", _string(str(task_id)))
            + _entry("state", _string(state.value))
            + _entry("result", result or _NULL)
            + _entry("error", _string(error or ""))
        )
        items += _field(1, _field(5, fields))
    return _field(6, bytes(items))
