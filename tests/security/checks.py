"""What every fuzzed reply must satisfy, and the RPCs the descriptors name."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message
from hypothesis import HealthCheck, settings

from dtq.v1 import admin_service_pb2, task_service_pb2, worker_service_pb2
from tests.security import tally

T = TypeVar("T")
SERVICES = [
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"],
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"],
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"],
]
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
# A stack trace or a path of our tree in a reply.
LEAK = re.compile(rb"Traceback|File \"|\.py\b|site-packages|/work/|/usr/lib/python")

FUZZ = settings(
    max_examples=50,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Rpc:
    method: descriptor.MethodDescriptor

    @property
    def name(self) -> str:
        return f"{self.method.containing_service.name}.{self.method.name}"

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def request(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.input_type)

    @property
    def response(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.output_type)

    @property
    def streaming(self) -> bool:
        return bool(self.method.client_streaming or self.method.server_streaming)


def rpcs() -> Iterator[Rpc]:
    for service in SERVICES:
        for method in service.methods:
            yield Rpc(method)


def no_leak(rpc: str, blob: bytes) -> None:
    found = LEAK.search(blob)
    assert found is None, f"{rpc}: reply leaks {found.group()!r}: {blob[:400]!r}"


def grpc_call(rpc: str, call: Callable[[], T]) -> T | None:
    """Run `call`; tally its code; fail on UNKNOWN/INTERNAL or a leaking reply."""
    try:
        result = call()
    except grpc.RpcError as error:
        code = error.code()
        tally.seen(rpc, code.name)
        assert code not in FORBIDDEN, f"{rpc}: {code.name} {error.details()}"
        check_error(rpc, error)
        return None
    tally.seen(rpc, "OK")
    return result


def check_error(rpc: str, error: Any) -> None:
    no_leak(rpc, (error.details() or "").encode())
    for key, value in error.trailing_metadata() or ():
        no_leak(rpc, value if isinstance(value, bytes) else f"{key}={value}".encode())


def health(channel: grpc.Channel) -> bool:
    """True when GetSystemHealth answers OK within 5 s."""
    call = channel.unary_unary(
        "/dtq.v1.AdminService/GetSystemHealth",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=admin_service_pb2.GetSystemHealthResponse.FromString,
    )
    try:
        call(admin_service_pb2.GetSystemHealthRequest(), timeout=5)
    except grpc.RpcError:
        return False
    return True
