"""`authorization: Bearer <key>` on every call of a channel (API keys, tokens).

gRPC's call credentials need a TLS channel; these interceptors work on any
channel, so a key is sent the same way with TLS or without (on loopback).
"""

from __future__ import annotations

from typing import Any

import grpc


def _with(metadata: Any, pair: tuple[str, str]) -> tuple[tuple[str, str | bytes], ...]:
    return (*(m for m in metadata or () if m[0] != "authorization"), pair)


class _AsyncBearer:
    def __init__(self, credential: str) -> None:
        self.pair = ("authorization", f"Bearer {credential}")

    def details(self, d: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            d.method,
            d.timeout,
            grpc.aio.Metadata(*_with(d.metadata, self.pair)),
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


def async_interceptors(credential: str | None) -> list[grpc.aio.ClientInterceptor]:
    """For `grpc.aio.*_channel(..., interceptors=...)`; none without a credential."""
    if not credential:
        return []
    return [
        _AsyncUnaryUnary(credential),
        _AsyncUnaryStream(credential),
        _AsyncStreamStream(credential),
    ]


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
    def __init__(self, credential: str) -> None:
        self.pair = ("authorization", f"Bearer {credential}")

    def _details(self, d: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _Details(d, _with(d.metadata, self.pair))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def sync_channel(channel: grpc.Channel, credential: str | None) -> grpc.Channel:
    """`channel` sending `credential` on every call (itself without one)."""
    return grpc.intercept_channel(channel, _SyncBearer(credential)) if credential else channel
