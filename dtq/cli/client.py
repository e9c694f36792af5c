"""The CLI's connection to the API server, and its one way of reporting errors.

Every failure ends as one line on stderr, never a traceback. Exit codes:

    0    success
    1    the command failed: the server answered an error (`error: CODE REASON:
         message`, the reason from the status's `google.rpc.ErrorInfo`), no
         server answered at the address tried (with how to start one), a task
         followed by `--wait`/`watch` ended other than completed, the system is
         unhealthy, or `submit-batch` rejected lines
    2    usage error or bad local input (payload, dates, a JSONL file): the
         server was not asked
    130  interrupted (Ctrl-C), except `--watch` loops, which Ctrl-C ends (0)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, NoReturn, TypeVar

import grpc
import pydantic
import typer
from google.protobuf import message as pb_message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from dtq.settings import Settings
from dtq.v1 import admin_service_pb2_grpc, task_service_pb2_grpc

DEADLINE = 10.0  # seconds a unary call may take
FAILED_EXIT = 1
USAGE_EXIT = 2
INTERRUPTED_EXIT = 130
M = TypeVar("M", bound=pb_message.Message)

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
    "cannot reach the dtq server at {address} ({source}): start one with "
    '"dtq dev" (everything on this machine) or "dtq server", '
    "or point --server/DTQ_SERVER_ADDRESS at a running one"
)


@dataclass(frozen=True)
class Client:
    """Stubs over one channel to `address`; `source` says where the address came from."""

    address: str
    channel: grpc.Channel
    source: str = "the default"

    @property
    def tasks(self) -> task_service_pb2_grpc.TaskServiceStub:
        return task_service_pb2_grpc.TaskServiceStub(self.channel)

    @property
    def admin(self) -> admin_service_pb2_grpc.AdminServiceStub:
        return admin_service_pb2_grpc.AdminServiceStub(self.channel)


def server_address(server: str | None) -> tuple[str, str]:
    """The address to use and where it came from: --server, DTQ_SERVER_ADDRESS, default."""
    if server:
        return server, "from --server"
    try:
        settings = Settings()
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        bad_input(f"DTQ_{where.upper()}: {first['msg']}")
    if "server_address" in settings.model_fields_set:
        return settings.server_address, "from DTQ_SERVER_ADDRESS"
    return settings.server_address, "the default; set DTQ_SERVER_ADDRESS or --server"


@contextlib.contextmanager
def connect(server: str | None) -> Iterator[Client]:
    """A client for `server` (default: the settings); RPC errors end the command."""
    from dtq.cli.tracing import traced  # OpenTelemetry only for commands that call

    address, source = server_address(server)
    try:
        with grpc.insecure_channel(address) as channel, traced(channel) as calls:
            yield Client(address, calls, source)
    except grpc.RpcError as error:
        fail(describe(error, address, source))
    except KeyboardInterrupt:
        raise typer.Exit(INTERRUPTED_EXIT) from None


def fail(message: str, code: int = FAILED_EXIT) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def bad_input(message: str) -> NoReturn:
    """Bad local input (the server was not asked): exit 2, like a usage error."""
    fail(message, USAGE_EXIT)


def describe(error: grpc.RpcError, address: str, source: str = "the default") -> str:
    """One line for an RPC error: code, ErrorInfo reason, message (and when to retry)."""
    if not isinstance(error, grpc.Call):
        return f"UNKNOWN: {error}"
    code, details = error.code(), status_details(error)
    reason = _detail(details, error_details_pb2.ErrorInfo).reason
    text = " ".join((error.details() or "").split())  # one line, whatever the server sent
    if code == grpc.StatusCode.UNAVAILABLE and not reason:
        return UNREACHABLE.format(address=address, source=source)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and not reason:
        return f"DEADLINE_EXCEEDED: no answer from the dtq server at {address} in time"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        text = f"the server at {address} does not offer this call (an older dtq?): {text}"
    line = f"{code.name} {reason}: {text}" if reason else f"{code.name}: {text}"
    delay = _detail(details, error_details_pb2.RetryInfo).retry_delay
    if delay.seconds or delay.nanos:
        line += f" (retry in {delay.ToTimedelta().total_seconds():g}s)"
    return line


def status_details(error: grpc.Call) -> list[status_pb2.Status]:
    """The rich status of the call as a one-item list, or [] when there is none."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # status and trailers disagree: no usable details
        return []
    return [status] if status is not None else []


def _detail(statuses: list[status_pb2.Status], kind: type[M]) -> M:
    """The first detail of `kind` in the status, or an empty one."""
    for status in statuses:
        for detail in status.details:
            if detail.Is(kind.DESCRIPTOR):
                found = kind()
                detail.Unpack(found)
                return found
    return kind()


def reason_of(error: grpc.Call) -> str:
    """The `ErrorInfo.reason` in the call's rich status, or ''."""
    return str(_detail(status_details(error), error_details_pb2.ErrorInfo).reason)


def field_violations(error: grpc.Call) -> list[tuple[str, str]]:
    """The `BadRequest` field violations of the call's status: (field, description)."""
    bad = _detail(status_details(error), error_details_pb2.BadRequest)
    return [(v.field, v.description) for v in bad.field_violations]
