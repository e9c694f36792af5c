"""A registered handler as a reference that submits tasks of its type.

    @app.task("send_email")
    def send_email(payload: dict) -> dict: ...

    app.client = Client.from_settings()          # or App(client=...)
    handle = send_email.submit({"to": "a@example.com"}, priority="high")
    handle = send_email.delay(to="a@example.com")   # Celery's habit: keywords are the payload
    handle = await send_email.asubmit({...}, client=async_client)

The reference still calls the function itself when called (`send_email(payload)`).
Payloads are checked as JSON before anything is sent (TypeError/ValueError).
gRPC is loaded only when a reference submits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, Unpack

if TYPE_CHECKING:
    from dtq.client import AsyncClient, AsyncTaskHandle, Client, SubmitOptions, TaskHandle

P = ParamSpec("P")
R = TypeVar("R")


class Owner(Protocol):
    """What a reference needs of its `App`: a name and, maybe, a client."""

    name: str
    client: Client | AsyncClient | None


class TaskRef(Generic[P, R]):
    """The handler of task type `name`, which can also submit tasks of that type."""

    def __init__(self, app: Owner, name: str, fn: Callable[P, R]) -> None:
        functools.update_wrapper(self, fn)
        self.app = app
        self.name = name
        self.fn = fn

    def __repr__(self) -> str:
        return f"<TaskRef {self.name!r} of App {self.app.name!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def submit(
        self,
        payload: Mapping[str, Any] | None = None,
        *,
        client: Client | None = None,
        **options: Unpack[SubmitOptions],
    ) -> TaskHandle:
        """Submit a task of this type through `client` (default: the App's client)."""
        from dtq.client import Client

        chosen = client or self.app.client
        if not isinstance(chosen, Client):
            raise TypeError(self._missing("a Client", "asubmit"))
        return chosen.submit(self.name, payload, **options)

    def delay(self, **payload: Any) -> TaskHandle:
        """Submit a task whose payload is these keyword arguments, with default options."""
        return self.submit(payload)

    async def asubmit(
        self,
        payload: Mapping[str, Any] | None = None,
        *,
        client: AsyncClient | None = None,
        **options: Unpack[SubmitOptions],
    ) -> AsyncTaskHandle:
        """`submit` through an `AsyncClient` (default: the App's client)."""
        from dtq.client import AsyncClient

        chosen = client or self.app.client
        if not isinstance(chosen, AsyncClient):
            raise TypeError(self._missing("an AsyncClient", "submit"))
        return await chosen.submit(self.name, payload, **options)

    async def adelay(self, **payload: Any) -> AsyncTaskHandle:
        """`delay` through the App's `AsyncClient`."""
        return await self.asubmit(payload)

    def _missing(self, kind: str, other: str) -> str:
        return (
            f"{self.name!r} needs {kind}: pass client=..., or set App(client=...) / app.client"
            f" (App {self.app.name!r} has {type(self.app.client).__name__}; try .{other})"
        )
