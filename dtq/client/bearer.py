"""`authorization: Bearer <key>` on every call of a channel (API keys, tokens),
and `x-dtq-tenant` when a client acts in a tenant it picked (the operator scope).

gRPC's call credentials need a TLS channel; these interceptors work on any
channel, so a key is sent the same way with TLS or without (on loopback).
"""

from __future__ import annotations

from typing import Any

import grpc

Pairs = tuple[tuple[str, str], ...]
TENANT_HEADER = "x-dtq-tenant"


def _with(metadata: Any, pairs: Pairs) -> tuple[tuple[str, str | bytes], ...]:
    names = {name for name, _ in pairs}
    return (*(m for m in metadata or () if m[0] not in names), *pairs)


def _pairs(credential: str | None, tenant: str | None) -> Pairs:
    found = [("authorization", f"Bearer {credential}")] if credential else []
    return (*found, *([(TENANT_HEADER, tenant)] if tenant else []))


class _AsyncBearer:
    def __init__(self, pairs: Pairs) -> None:
        self.pairs = pairs

    def details(self, d: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            d.method,
            d.timeout,
            grpc.aio.Metadata(*_with(d.metadata, self.pairs)),
            d.credentials,
            d.wait_for_ready,
        )


class _AsyncUnaryUnary(_AsyncBearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self.details(details), request)


class _AsyncUnaryStream(_AsyncBearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self.details(details), request)


class _AsyncStreamStream(_AsyncBearer, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self.details(details), request_iterator)


def async_interceptors(
    credential: str | None, tenant: str | None = None
) -> list[grpc.aio.ClientInterceptor]:
    """For `grpc.aio.*_channel(..., interceptors=...)`; none without a
    credential or a tenant."""
    pairs = _pairs(credential, tenant)
    if not pairs:
        return []
    return [_AsyncUnaryUnary(pairs), _AsyncUnaryStream(pairs), _AsyncStreamStream(pairs)]


class _Details(grpc.ClientCallDetails):
    def __init__(
        self, d: grpc.ClientCallDetails, metadata: tuple[tuple[str, str | bytes], ...]
    ) -> None:
        self.method = d.method
        self.timeout = d.timeout
        self.metadata = metadata
        self.credentials = d.credentials
        self.wait_for_ready = getattr(d, "wait_for_ready", None)
        self.compression = getattr(d, "compression", None)


class _SyncBearer(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, pairs: Pairs) -> None:
        self.pairs = pairs

    def _details(self, d: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _Details(d, _with(d.metadata, self.pairs))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def sync_channel(
    channel: grpc.Channel, credential: str | None, tenant: str | None = None
) -> grpc.Channel:
    """`channel` sending `credential` (and `tenant`) on every call (itself
    without either)."""
    pairs = _pairs(credential, tenant)
    return grpc.intercept_channel(channel, _SyncBearer(pairs)) if pairs else channel
