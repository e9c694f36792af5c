"""Authentication and the role rules, around every dtq.v1 method.

Each call's `authorization` metadata (`Bearer <API key or token>`; Envoy
forwards the HTTP header as it is) is authenticated by `Identity`, the role is
checked against `dtq.domain.auth.RULES`, and the caller is set for the use
cases (`dtq.app.caller`). Health and reflection stay open. With
authentication off, every caller is an anonymous admin of every tenant (the
operator scope). A call's `x-dtq-tenant` metadata picks the tenant the
operator scope acts in; another caller may name only its own tenant. The calls in
`dtq.domain.audit.AUDITED` are recorded with their caller and outcome, those
refused to an authenticated caller too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from dtq.api import audit
from dtq.api.errors import abort
from dtq.api.intercept import Handler, HandlerWrapper
from dtq.app.audit import Audit
from dtq.app.caller import CALLER
from dtq.app.identity import Identity
from dtq.domain.audit import AUDITED
from dtq.domain.auth import ANONYMOUS, Principal, denied, permits
from dtq.domain.errors import DtqError

Ctx = grpc.aio.ServicerContext[Any, Any]
PACKAGE = "/dtq.v1."
TENANT_HEADER = "x-dtq-tenant"


def _metadata(context: Ctx, name: str) -> str | None:
    return next((str(v) for k, v in context.invocation_metadata() or () if k == name), None)


class Authentication(HandlerWrapper):
    """`identity` None: authentication is off; `audit` None: nothing is
    recorded. Both settable after construction (the server is made, and its
    port bound, before the adapters)."""

    def __init__(self, identity: Identity | None = None, audit: Audit | None = None) -> None:
        super().__init__(PACKAGE)
        self.identity = identity
        self.audit = audit

    async def authenticate(self, context: Ctx) -> Principal:
        if self.identity is None:
            principal = ANONYMOUS
        else:
            principal = await self.identity.authenticate(_metadata(context, "authorization"))
        return principal.acting_in(_metadata(context, TENANT_HEADER))

    async def caller(self, context: Ctx, method: str) -> Principal:
        principal = await self.authenticate(context)
        if not permits(principal, method):
            raise denied(principal, method)
        return principal

    def wrap(self, handler: Handler, method: str) -> Handler:
        h: Any = handler  # the stubs type handlers as sync functions; grpc.aio's are coroutines
        name = method.removeprefix(PACKAGE)
        codec = {
            "request_deserializer": h.request_deserializer,
            "response_serializer": h.response_serializer,
        }
        if h.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._call(h.unary_unary, name), **codec)
        if h.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(self._call(h.stream_unary, name), **codec)
        if h.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._stream(h.unary_stream, name), **codec)
        return grpc.stream_stream_rpc_method_handler(self._stream(h.stream_stream, name), **codec)

    def _call(
        self, fn: Callable[[Any, Ctx], Awaitable[Any]], method: str
    ) -> Callable[[Any, Ctx], Awaitable[Any]]:
        audited = method in AUDITED

        async def behavior(request: Any, context: Ctx) -> Any:
            principal: Principal | None = None
            try:
                principal = await self.authenticate(context)
                if not permits(principal, method):
                    raise denied(principal, method)
            except DtqError as error:
                if audited and principal is not None:  # not every anonymous knock: a flood
                    await self._record(principal, method, request, None, error.code.name)
                await abort(context, error)
            token = CALLER.set(principal)  # type: ignore[arg-type]  # abort raised otherwise
            try:
                reply = await fn(request, context)
            except Exception:
                if audited:
                    outcome = audit.outcome(context, raised=True)
                    await self._record(principal, method, request, None, outcome)
                raise
            finally:
                CALLER.reset(token)
            if audited:
                await self._record(principal, method, request, reply, audit.outcome(context, False))
            return reply

        return behavior

    async def _record(
        self, principal: Principal | None, method: str, request: Any, reply: Any, outcome: str
    ) -> None:
        if self.audit is not None:  # else not built yet, or not wanted
            detail = audit.detail(request, reply)
            await self.audit.record(principal, method, audit.target(request), outcome, detail)

    def _stream(
        self, fn: Callable[[Any, Ctx], AsyncIterator[Any]], method: str
    ) -> Callable[[Any, Ctx], AsyncIterator[Any]]:
        async def behavior(request: Any, context: Ctx) -> AsyncIterator[Any]:
            try:
                principal = await self.caller(context, method)
            except DtqError as error:
                await abort(context, error)
            CALLER.set(principal)  # this generator's task serves only this call
            async for item in fn(request, context):
                yield item

        return behavior
