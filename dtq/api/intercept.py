"""A base for server interceptors that wrap method handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in the stubs


class HandlerWrapper(grpc.aio.ServerInterceptor):
    """Wraps the handler of each method under `prefix` with `wrap`, once per handler."""

    def __init__(self, prefix: str = "/") -> None:
        self.prefix = prefix
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def wrap(self, handler: Handler, method: str) -> Handler:
        raise NotImplementedError  # abstract: each wrapper (e.g. Authentication) says how

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(self.prefix):
            return handler
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self.wrap(handler, method))
        return cached[1]
