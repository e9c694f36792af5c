"""The CLI's connection to the API server, and its one way of reporting errors.

Every failure ends as one line on stderr, never a traceback: `error: CODE
REASON: message` for an RPC error (the reason comes from the status's
`google.rpc.ErrorInfo`), exit 1; a hint when the server cannot be reached, exit
1; bad local input (payload, dates), exit 2.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, NoReturn

import grpc
import typer
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from dtq.settings import Settings
from dtq.v1 import admin_service_pb2_grpc, task_service_pb2_grpc

DEADLINE = 10.0  # seconds a unary call may take
USAGE_EXIT = 2

ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        "-s",
        metavar="HOST:PORT",
        help="API server address [DTQ_SERVER_ADDRESS, default 127.0.0.1:50051].",
        show_default=False,
    ),
]

UNREACHABLE = (
    "cannot reach the dtq server at {address} (is it running? start one with "
    '"dtq server", or pass --server/DTQ_SERVER_ADDRESS)'
)


@dataclass(frozen=True)
class Client:
    """Stubs over one channel to `address`."""

    address: str
    channel: grpc.Channel

    @property
    def tasks(self) -> task_service_pb2_grpc.TaskServiceStub:
        return task_service_pb2_grpc.TaskServiceStub(self.channel)

    @property
    def admin(self) -> admin_service_pb2_grpc.AdminServiceStub:
        return admin_service_pb2_grpc.AdminServiceStub(self.channel)


@contextlib.contextmanager
def connect(server: str | None) -> Iterator[Client]:
    """A client for `server` (default: the settings); RPC errors end the command."""
    address = server or Settings().server_address
    try:
        with grpc.insecure_channel(address) as channel:
            yield Client(address, channel)
    except grpc.RpcError as error:
        fail(describe(error, address))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def bad_input(message: str) -> NoReturn:
    """Bad local input (the server was not asked): exit 2, like a usage error."""
    fail(message, USAGE_EXIT)


def describe(error: grpc.RpcError, address: str) -> str:
    """One line for an RPC error: code, ErrorInfo reason, message."""
    if not isinstance(error, grpc.Call):
        return f"UNKNOWN: {error}"
    code, reason, text = error.code(), reason_of(error), error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and not reason:
        return UNREACHABLE.format(address=address)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and not reason:
        return f"DEADLINE_EXCEEDED: no answer from the dtq server at {address} in {DEADLINE:g}s"
    return f"{code.name} {reason}: {text}" if reason else f"{code.name}: {text}"


def reason_of(error: grpc.Call) -> str:
    """The `ErrorInfo.reason` in the call's rich status, or ''."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # status and trailers disagree: no usable details
        return ""
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""
