"""Hypothesis strategies built from the generated message descriptors, so a
field or RPC added to the protos is fuzzed without touching this file.

Strings mix ordinary text with SQL and Lua injection, NUL bytes, lone
surrogate-free odd Unicode and very long values; integers hit the type's
bounds; enums include numbers no enum names; Timestamps run from year 1 to
9999 and past both; Durations are huge and negative; Structs nest deep.
"""

from __future__ import annotations

import uuid
from typing import Any

from google.protobuf import descriptor, message_factory, struct_pb2
from google.protobuf.message import Message
from hypothesis import strategies as st

FD = descriptor.FieldDescriptor

NASTY = [
    "",
    "'; DROP TABLE tasks; --",
    "' OR '1'='1",
    "1; SELECT pg_sleep(10)",
    "\\'; COPY tasks TO '/tmp/x'; --",
    "redis.call('FLUSHALL')",
    "]] redis.call('flushall') --[[",
    "'); os.exit(1); --",
    "{queue}}{",
    "dtq:{default}:ready:high",
    "\x00",
    "a\x00b",
    "\u202e\ufeff\U0001f4a9",
    "%s%n%x",
    "../../../../etc/passwd",
    "*",
    "\r\nSet-Cookie: x=1",
    "x" * 300,
    "y" * 70_000,
    str(uuid.UUID(int=0)),
    "01a22029-0000-7000-8000-000000000000",
]

# Timestamp seconds: year 1, 9999, the epoch, one before, and past the range
# protobuf's JSON mapping allows (the binary form carries any int64).
SECONDS = [-62135596800, 253402300799, 0, -1, 1, 253402300800, -62135596801, 2**62, -(2**63)]
NANOS = [0, 1, 999_999_999, -1, 1_000_000_000, -(2**31), 2**31 - 1]
INT_BOUNDS = {
    FD.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FD.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FD.CPPTYPE_UINT32: (0, 2**32 - 1),
    FD.CPPTYPE_UINT64: (0, 2**64 - 1),
}

# Ids of real tasks the suite submitted: forged lease tokens on tasks that exist.
KNOWN_IDS: list[str] = ["01a22029-0000-7000-8000-000000000000"]
known_ids = st.integers(0, 2**16).map(lambda i: KNOWN_IDS[i % len(KNOWN_IDS)])
texts = st.one_of(st.sampled_from(NASTY), st.text(max_size=40), known_ids)


def integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [v for v in (lo, hi, 0, 1, -1, 1000, 10**6) if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def deep_value(levels: int) -> struct_pb2.Value:
    """A list nested `levels` deep."""
    value = struct_pb2.Value(string_value="bottom")
    for _ in range(levels):
        outer = struct_pb2.Value()
        outer.list_value.values.add().CopyFrom(value)
        value = outer
    return value


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def structs(draw: st.DrawFn) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if draw(st.integers(0, 4)) == 0:  # now and then far past the depth limit
        out.fields["deep"].CopyFrom(deep_value(draw(st.sampled_from([33, 64, 90]))))
    else:
        out.update(draw(st.dictionaries(texts, json_values, max_size=4)))
    return out


@st.composite
def timestamps(draw: st.DrawFn, cls: type[Message]) -> Message:
    return cls(seconds=draw(st.sampled_from(SECONDS)), nanos=draw(st.sampled_from(NANOS)))


@st.composite
def durations(draw: st.DrawFn, cls: type[Message]) -> Message:
    seconds = draw(st.sampled_from([0, 1, -1, 10**9, -(10**9), 315576000001, 2**62, -(2**63)]))
    return cls(seconds=seconds, nanos=draw(st.sampled_from(NANOS)))


@st.composite
def values(draw: st.DrawFn, cls: type[Message]) -> Message:
    if draw(st.integers(0, 4)) == 0:
        return deep_value(draw(st.sampled_from([33, 64, 90])))
    out = struct_pb2.Value()
    out.struct_value.update({"v": draw(json_values)})
    return out.struct_value.fields["v"]


SPECIAL = {
    "google.protobuf.Value": values,
    "google.protobuf.Timestamp": timestamps,
    "google.protobuf.Duration": durations,
}


def scalar(field: FD) -> st.SearchStrategy[Any]:
    kind = field.cpp_type
    if kind == FD.CPPTYPE_STRING:
        if field.type == FD.TYPE_BYTES:
            return st.binary(max_size=64)
        return texts
    if kind == FD.CPPTYPE_BOOL:
        return st.booleans()
    if kind in (FD.CPPTYPE_FLOAT, FD.CPPTYPE_DOUBLE):
        return st.floats(width=32 if kind == FD.CPPTYPE_FLOAT else 64)
    if kind == FD.CPPTYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return st.sampled_from([*numbers, -1, 99, 2**31 - 1])
    return integers(*INT_BOUNDS[kind])


def value_of(field: FD, cls_of: Any, depth: int) -> st.SearchStrategy[Any]:
    if field.cpp_type != FD.CPPTYPE_MESSAGE:
        return scalar(field)
    return messages(cls_of(field.message_type), depth + 1)


def messages(cls: type[Message], depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of `cls` with a random subset of fields set, nested 3 deep at most."""
    desc = cls.DESCRIPTOR
    if desc.full_name == "google.protobuf.Struct":
        return structs()
    if desc.full_name in SPECIAL:
        return SPECIAL[desc.full_name](cls)
    return _messages(cls, depth)


@st.composite
def _messages(draw: st.DrawFn, cls: type[Message], depth: int) -> Message:
    msg = cls()
    for field in cls.DESCRIPTOR.fields:
        if depth > 2 and field.cpp_type == FD.CPPTYPE_MESSAGE:
            continue
        if not draw(st.booleans()):
            continue
        if field.message_type and field.message_type.GetOptions().map_entry:
            _draw_map(draw, msg, field, depth)
        elif field.is_repeated:
            strategy = value_of(field, message_factory.GetMessageClass, depth)
            for item in draw(st.lists(strategy, max_size=3)):
                container = getattr(msg, field.name)
                if field.cpp_type == FD.CPPTYPE_MESSAGE:
                    container.add().CopyFrom(item)
                else:
                    container.append(item)
        else:
            _set(msg, field, draw(value_of(field, message_factory.GetMessageClass, depth)))
    return msg


def _draw_map(draw: st.DrawFn, msg: Message, field: FD, depth: int) -> None:
    key_field = field.message_type.fields_by_name["key"]
    value_field = field.message_type.fields_by_name["value"]
    target = getattr(msg, field.name)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(scalar(key_field))
        value = draw(value_of(value_field, message_factory.GetMessageClass, depth))
        if value_field.cpp_type == FD.CPPTYPE_MESSAGE:
            target[key].CopyFrom(value)
        else:
            target[key] = value


def _set(msg: Message, field: FD, value: Any) -> None:
    if field.cpp_type == FD.CPPTYPE_MESSAGE:
        getattr(msg, field.name).CopyFrom(value)
    else:
        setattr(msg, field.name, value)


TAME = {"type": "noop", "queue": "fuzz", "worker_id": "fuzz-worker", "task_types": "noop"}


def tame(msg: Message) -> Message:
    """Give names and ids valid values, so the odd times, durations, payloads
    and tokens beside them get past the first check and reach deeper code."""
    for field, value in msg.ListFields():
        if field.cpp_type == FD.CPPTYPE_MESSAGE and not (field.message_type.GetOptions().map_entry):
            for item in value if field.is_repeated else [value]:
                tame(item)
        elif field.name in TAME:
            good = TAME[field.name]
            if field.is_repeated:
                del value[:]
                value.append(good)
            else:
                setattr(msg, field.name, good)
        elif field.name in ("id", "task_id") and not field.is_repeated:
            setattr(msg, field.name, KNOWN_IDS[-1])
    return msg
