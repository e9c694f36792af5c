"""The CLI's connection to the API server, and its one way of reporting errors.

Every failure ends as one line on stderr, never a traceback. Exit codes:

    0    success
    1    the command failed: the server answered an error (`error: CODE REASON:
         message`, the reason from the status's `google.rpc.ErrorInfo`; a
         refused or missing credential says which option gives one), no
         server answered at the address tried (with how to start one), a task
         followed by `--wait`/`watch` ended other than completed, the system is
         unhealthy, or `submit-batch` rejected lines
    2    usage error or bad local input (payload, dates, a JSONL file): the
         server was not asked
    130  interrupted (Ctrl-C), except `--watch` loops, which Ctrl-C ends (0)
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, TypeVar

import grpc
import pydantic
import typer
from pydantic import SecretStr

from dtq.client import Client as ApiClient
from dtq.client import DtqClientError, RetryPolicy
from dtq.client.errors import from_rpc_error
from dtq.client.sync import Stubs
from dtq.settings import Settings

DEADLINE = 10.0  # seconds a unary call may take
FAILED_EXIT = 1
USAGE_EXIT = 2
INTERRUPTED_EXIT = 130
# A command reports what happened (the user reruns it); but over a rate limit
# or quota (RESOURCE_EXHAUSTED with RetryInfo) it waits the time the server
# names and tries again, saying so on stderr, up to LIMIT_TRIES tries (each
# wait at most a minute).
LIMIT_TRIES = 6


def _announce(error: DtqClientError, seconds: float) -> None:
    typer.echo(
        f"{error.code.name} {error.reason}: retrying in {seconds:.2g}s (over a limit)", err=True
    )


ON_LIMITS = RetryPolicy(
    attempts=LIMIT_TRIES,
    only=frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED}),
    on_retry=_announce,
)
Resp = TypeVar("Resp")
R = TypeVar("R")

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
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        metavar="KEY",
        help="API key (or JWT) sent as 'authorization: Bearer' [DTQ_API_KEY].",
        show_default=False,
    ),
]
TlsCaOpt = Annotated[
    str | None,
    typer.Option(
        "--tls-ca",
        metavar="PEM",
        help="Connect with TLS, trusting this CA [DTQ_TLS_CA]; "
        "DTQ_TLS_CERT/DTQ_TLS_KEY give a client certificate (mTLS).",
        show_default=False,
    ),
]

TenantOpt = Annotated[
    str | None,
    typer.Option(
        "--tenant",
        metavar="NAME",
        help="With an operator key (tenant '*'): act in this tenant, sent as "
        "'x-dtq-tenant' [DTQ_TENANT]; default: every tenant's to see, 'default' to act in.",
        show_default=False,
    ),
]

TARGET_OPTIONS = {
    "server": ServerOpt,
    "api_key": ApiKeyOpt,
    "tls_ca": TlsCaOpt,
    "tenant": TenantOpt,
}


@dataclass(frozen=True)
class Target:
    """Where a command connects, and how: --server, --api-key, --tls-ca
    (None: from the DTQ_ settings)."""

    server: str | None = None
    api_key: str | None = None
    tls_ca: str | None = None
    tenant: str | None = None


def remote(command: Callable[..., R]) -> Callable[..., R]:
    """A command that talks to a server: it gains the options --server,
    --api-key and --tls-ca, and receives them as its `target` argument."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "target"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
        for name, kind in TARGET_OPTIONS.items()
    ]

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> R:
        given = {name: kwargs.pop(name, None) for name in TARGET_OPTIONS}
        return command(*args, target=Target(**given), **kwargs)

    run.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    hints = {k: v for k, v in command.__annotations__.items() if k != "target"}
    run.__annotations__ = {**hints, **TARGET_OPTIONS}
    return run


UNREACHABLE = (
    "cannot reach the dtq server at {address} ({source}): start one with "
    '"dtq dev" (everything on this machine) or "dtq server", '
    "or point --server/DTQ_SERVER_ADDRESS at a running one"
)
TLS_HINT = "check --tls-ca/DTQ_TLS_CA (the CA of its certificate); mTLS: DTQ_TLS_CERT/DTQ_TLS_KEY"
SSL_REASON = re.compile(r"OPENSSL_internal:([A-Z_]+)")
NO_KEY = "give an API key with --api-key or DTQ_API_KEY (dtq apikey create)"
BAD_KEY = "the credential sent was refused (revoked, expired or mistyped?)"


@dataclass(frozen=True)
class Client:
    """A `dtq.Client` for one command; `address` and `source` (where the
    address came from) name the server in error lines."""

    api: ApiClient
    address: str
    source: str = "the default"
    keyed: bool = False  # a credential was sent

    def call(
        self,
        rpc: Callable[[Stubs], Callable[..., Resp]],
        request: Any,
        timeout: float = DEADLINE,
    ) -> Resp:
        """A unary call; the reply message (a failure ends the command)."""
        return self.api.call(rpc, request, timeout=timeout)


def settings() -> Settings:
    """The DTQ_ settings; a bad one ends the command (exit 2)."""
    try:
        return Settings()
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        bad_input(f"DTQ_{where.upper()}: {first['msg']}")


def server_address(server: str | None, found: Settings) -> tuple[str, str]:
    """The address to use and where it came from: --server, DTQ_SERVER_ADDRESS, default."""
    if server:
        return server, "from --server"
    if "server_address" in found.model_fields_set:
        return found.server_address, "from DTQ_SERVER_ADDRESS"
    return found.server_address, "the default; set DTQ_SERVER_ADDRESS or --server"


def _api_client(target: Target) -> Client:
    found = settings()
    address, source = server_address(target.server, found)
    options: dict[str, Any] = {"server_address": address}
    if target.api_key:
        options["api_key"] = SecretStr(target.api_key)
    if target.tls_ca:
        options["tls_ca"] = target.tls_ca
    if target.tenant:
        options["tenant"] = target.tenant
    found = found.model_copy(update=options)
    from dtq.cli.tracing import interceptors  # OpenTelemetry only for commands that call

    try:
        api = ApiClient.from_settings(
            found, timeout=DEADLINE, retry=ON_LIMITS, interceptors=interceptors()
        )
    except ValueError as error:  # a TLS file that cannot be read, an empty address
        bad_input(str(error))
    return Client(api, address, source, keyed=api.config.api_key is not None)


@contextlib.contextmanager
def connect(target: Target) -> Iterator[Client]:
    """A client for the target's server with its credential and TLS (default:
    DTQ_SERVER_ADDRESS, DTQ_API_KEY, DTQ_TLS_*); RPC errors end the command."""
    from dtq.cli.tracing import command_span

    with command_span():
        client = _api_client(target)
        try:
            with client.api:
                yield client
        except DtqClientError as error:
            fail(describe(error, client.address, client.source, client.keyed))
        except grpc.RpcError as error:  # a stream's failure
            fail(describe(from_rpc_error(error), client.address, client.source, client.keyed))
        except KeyboardInterrupt:
            raise typer.Exit(INTERRUPTED_EXIT) from None


def fail(message: str, code: int = FAILED_EXIT) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def bad_input(message: str) -> NoReturn:
    """Bad local input (the server was not asked): exit 2, like a usage error."""
    fail(message, USAGE_EXIT)


def _unreachable(text: str, address: str, source: str) -> str:
    if "handshake failed" in text.lower():
        why = SSL_REASON.search(text)
        return (
            f"TLS with the dtq server at {address} failed ({why[1] if why else text}): {TLS_HINT}"
        )
    line = UNREACHABLE.format(address=address, source=source)
    if "socket closed" in text.lower():  # e.g. plaintext to a TLS server
        line += f"; if it speaks TLS, {TLS_HINT}"
    return line


def describe(
    error: DtqClientError, address: str, source: str = "the default", keyed: bool = False
) -> str:
    """One line for an RPC error: code, ErrorInfo reason, message (and when to retry)."""
    code, reason = error.code, error.reason
    text = " ".join(error.message.split())  # one line, whatever the server sent
    if code == grpc.StatusCode.UNAVAILABLE and not reason:
        return _unreachable(text, address, source)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and not reason:
        return f"DEADLINE_EXCEEDED: no answer from the dtq server at {address} in time"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        text = f"the server at {address} does not offer this call (an older dtq?): {text}"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        text = f"{text}; {BAD_KEY if keyed else NO_KEY}"
    line = f"{code.name} {reason}: {text}" if reason else f"{code.name}: {text}"
    if error.retry_after:
        line += f" (retry in {error.retry_after:g}s)"
    return line
