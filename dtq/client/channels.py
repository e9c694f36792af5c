"""Where the client connects, and how it spreads calls over several servers.

One gRPC channel per server address. `round_robin` sends each call to the next
server in turn; `pick_first` sticks to one and moves on when it is unreachable.
A retried call goes to the next server either way, so one server's loss costs a
retry, not a failure.

TLS: `tls_ca=` (the CA file that signed the servers' certificates; with
`tls_cert=`/`tls_key=` for mTLS), or any `credentials=grpc.ssl_channel_credentials(...)`.
An API key or token goes as `authorization: Bearer <key>` on every call, by an
interceptor (`dtq.client.bearer`), with TLS or without.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import grpc

from dtq import tls
from dtq.client import bearer

if TYPE_CHECKING:
    from dtq.settings import Settings

T = TypeVar("T")
DEFAULT_ADDRESS = "127.0.0.1:50051"
Balance = Literal["round_robin", "pick_first"]
OPTIONS: list[tuple[str, int]] = [
    # gRPC's reconnect backoff grows to 120 s by default: a client would wait
    # that long after a server outage. Keep it below the retry policy's cap.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    # Notice a dead connection within ~30 s even when idle (the server allows
    # a ping every 5 s without data).
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass(frozen=True)
class ChannelConfig:
    """How to reach the servers: addresses, balancing, transport security."""

    addresses: tuple[str, ...]
    balance: Balance = "round_robin"
    credentials: grpc.ChannelCredentials | None = None  # None: plaintext
    options: tuple[tuple[str, int], ...] = tuple(OPTIONS)
    api_key: str | None = field(default=None, repr=False)  # sent as a bearer credential
    # More client interceptors (sync ones for `Client`, grpc.aio ones for `AsyncClient`).
    interceptors: tuple[Any, ...] = ()
    connections: int = 1  # channels (TCP connections) per server, used in turn
    # Sent as x-dtq-tenant: the tenant an operator (`*`) credential acts in.
    tenant: str | None = None

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError("connections must be at least 1")

    def channel_options(self) -> list[tuple[str, int]]:
        # gRPC shares one connection between channels of the same target and
        # options (its global subchannel pool): several need pools of their own.
        own = [("grpc.use_local_subchannel_pool", 1)] if self.connections > 1 else []
        return [*self.options, *own]


def config(
    address: str | Sequence[str],
    balance: Balance,
    credentials: grpc.ChannelCredentials | None,
    api_key: str | None,
    tls_files: tuple[str | None, str | None, str | None],
    interceptors: Sequence[Any],
    connections: int = 1,
    tenant: str | None = None,
) -> ChannelConfig:
    """The clients' arguments as a ChannelConfig; `tls_files`: (CA, cert, key)."""
    return ChannelConfig(
        addresses_of(address),
        balance,
        transport(credentials, *tls_files),
        api_key=api_key or None,
        interceptors=tuple(interceptors),
        connections=connections,
        tenant=tenant or None,
    )


def transport(
    credentials: grpc.ChannelCredentials | None,
    tls_ca: str | None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> grpc.ChannelCredentials | None:
    """The channel credentials for the client's TLS arguments (None: plaintext).

    ValueError for a file that cannot be read or arguments that do not go together.
    """
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("tls_cert and tls_key go together (the client's certificate and key)")
    if tls_cert and not tls_ca:
        raise ValueError("tls_cert/tls_key need tls_ca (the CA of the servers' certificates)")
    if not tls_ca:
        return credentials
    if credentials is not None:
        raise ValueError("give credentials or tls_ca, not both")
    return tls.channel_credentials(tls_ca, tls_cert or "", tls_key or "")


def from_settings(settings: Settings, given: dict[str, Any]) -> dict[str, Any]:
    """The client arguments: the `DTQ_*` credential and TLS files, under those
    `given` (explicit `credentials=` replace the TLS files)."""
    key = settings.api_key.get_secret_value() if settings.api_key else None
    found: dict[str, Any] = {"api_key": key or None}
    if settings.tenant:
        found["tenant"] = settings.tenant
    if given.get("credentials") is None:
        found |= {
            "tls_ca": settings.tls_ca or None,
            "tls_cert": settings.tls_cert or None,
            "tls_key": settings.tls_key or None,
        }
    return {**found, **given}


def addresses_of(address: str | Sequence[str]) -> tuple[str, ...]:
    """`host:port`, `a:1,b:2` or a list of addresses, as a tuple; ValueError if none."""
    parts = address.split(",") if isinstance(address, str) else list(address)
    found = tuple(p.strip() for p in parts if p.strip())
    if not found:
        raise ValueError("give at least one server address (host:port)")
    return found


def sync_channel(config: ChannelConfig, address: str) -> grpc.Channel:
    options = config.channel_options()
    if config.credentials is not None:
        channel = grpc.secure_channel(address, config.credentials, options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    # Innermost: sees every call.
    channel = bearer.sync_channel(channel, config.api_key, config.tenant)
    if config.interceptors:
        channel = grpc.intercept_channel(channel, *config.interceptors)
    return channel


def aio_channel(config: ChannelConfig, address: str) -> grpc.aio.Channel:
    options = config.channel_options()
    interceptors = [
        *config.interceptors,
        *bearer.async_interceptors(config.api_key, config.tenant),
    ]
    if config.credentials is not None:
        return grpc.aio.secure_channel(
            address, config.credentials, options=options, interceptors=interceptors or None
        )
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors or None)


class Endpoints(Generic[T]):
    """`connections` endpoints (channel and its stubs) per address, opened on
    first use (an asyncio channel then belongs to the loop that uses it);
    thread-safe. An address's endpoints are used in turn."""

    def __init__(self, config: ChannelConfig, make: Callable[[str], T]) -> None:
        self._config = config
        self._make = make
        self._items: list[T] = []
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._current = 0

    def opened(self) -> list[T]:
        """The endpoints opened so far (all or none)."""
        return list(self._items)

    def pick(self) -> T:
        """The endpoint for the next call."""
        with self._lock:
            n = self._config.connections
            if not self._items:
                self._items = [self._make(a) for a in self._config.addresses for _ in range(n)]
            if self._config.balance == "pick_first":
                return self._items[self._current * n + next(self._turn) % n]
            return self._items[next(self._turn) % len(self._items)]

    def failed(self, item: T) -> None:
        """`item` was unreachable: pick_first moves on to the next server."""
        n = self._config.connections
        with self._lock:
            current = self._items[self._current * n : (self._current + 1) * n]
            if any(i is item for i in current):
                self._current = (self._current + 1) % len(self._config.addresses)
