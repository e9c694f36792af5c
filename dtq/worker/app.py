"""Task handlers: plain Python functions, sync or async, registered by decorator.

    from dtq import App

    app = App()

    @app.task("email_sending")
    def send(payload: dict) -> dict:
        ...
        return {"sent": True}

    @app.task("image_processing")
    async def process(payload: dict, ctx: TaskContext) -> dict:
        if ctx.cancelled.is_set(): ...

A handler takes the task's payload (a dict) and, if it declares a second
parameter, a `TaskContext`. It returns any JSON value (the task's result) or
raises: `PermanentError` dead-letters the task at once; any other exception is
retried with backoff until the task's `max_retries` are spent. Through the
context a handler submits child tasks, `ctx.submit("fetch", {...})`,
deduplicated when a retry submits them again (dtq/worker/children.py).

`@app.periodic` declares a recurring schedule of a handler's task type in
code; `dtq schedule sync -m myapp.tasks` makes the server's schedules match:

    @app.periodic("*/5 * * * *", tz="Europe/Paris", payload={"full": False})
    @app.task("report")
    def report(payload: dict) -> None: ...

A handler that outlives its task's `timeout`, or whose task is cancelled, is
interrupted: an async handler is cancelled at its next `await`, a sync one gets
`TaskInterrupted` raised in its thread (or, with `--pool process`, its process
is killed).
"""

from __future__ import annotations

import inspect
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, Unpack

from dtq.worker.refs import TaskRef

if TYPE_CHECKING:
    from dtq.client import AsyncClient, Client
    from dtq.client.requests import Submission, SubmitOptions
    from dtq.worker.children import ChildTask, Spawner

HandlerFn = Callable[..., Any]
P = ParamSpec("P")
R = TypeVar("R")


class PermanentError(Exception):
    """Raise from a handler when retrying cannot help (bad input, ...)."""


class TaskInterrupted(BaseException):
    """Raised inside a sync handler's thread when its task timed out, was
    cancelled or lost its lease, or the worker is shutting down.

    A BaseException (like KeyboardInterrupt), so that `except Exception` in a
    handler does not swallow it; `finally` blocks still run. It lands at the
    next Python bytecode: a thread blocked in C code (`time.sleep`, a socket
    read) sees it only when the call returns. `dtq worker --pool process`
    kills the handler's process instead, which stops any code."""


@dataclass(frozen=True)
class TaskContext:
    """What a handler may know about the attempt it runs."""

    task_id: str
    type: str
    queue: str
    attempt: int
    max_retries: int
    timeout: float
    # Flows: the parent's result (a chain step: any JSON value), or a group's
    # outcomes (its callback: a list of {"id", "state", "result", "error"},
    # in submission order); None for a task that waited for nothing.
    parent_result: Any = None
    parent_id: str = ""
    group_id: str = ""
    root_id: str = ""  # the first task of its tree; "" for a top-level task
    # Set when the task is cancelled, its lease is lost or it timed out:
    # long handlers should check it and return early.
    cancelled: threading.Event = field(default_factory=threading.Event)
    # How `submit` reaches the API (dtq/worker/children.py); None: it cannot.
    spawner: Spawner | None = field(default=None, repr=False, compare=False)
    _children: Iterator[int] = field(default_factory=itertools.count, repr=False, compare=False)

    def submit(
        self, type: str, payload: Mapping[str, Any] | None = None, **options: Unpack[SubmitOptions]
    ) -> ChildTask:
        """Submit a child of this task (same options as `Client.submit`, but
        `after`); returns once it is committed. Deduplicated when a retry of
        this task submits it again: see dtq/worker/children.py."""
        (child,) = self.submit_many([_submission(type, payload, options)])
        return child

    def submit_many(self, submissions: Iterable[Submission]) -> list[ChildTask]:
        """Several children in one call, all or none (at most 1000)."""
        from dtq.worker import children

        requests = children.requests_for(submissions, self._next_child)
        return children.children(self._spawner().submit(requests))

    async def asubmit(
        self, type: str, payload: Mapping[str, Any] | None = None, **options: Unpack[SubmitOptions]
    ) -> ChildTask:
        """`submit` from an async handler."""
        (child,) = await self.asubmit_many([_submission(type, payload, options)])
        return child

    async def asubmit_many(self, submissions: Iterable[Submission]) -> list[ChildTask]:
        """`submit_many` from an async handler."""
        from dtq.worker import children

        requests = children.requests_for(submissions, self._next_child)
        return children.children(await self._spawner().asubmit(requests))

    def _next_child(self) -> int:
        return next(self._children)

    def _spawner(self) -> Spawner:
        if self.spawner is None:
            raise RuntimeError("this context cannot submit children (it runs outside a worker)")
        return self.spawner


def _submission(type: str, payload: Mapping[str, Any] | None, options: Any) -> Submission:
    from dtq.client.requests import Submission

    return Submission(type, payload or {}, **options)


@dataclass(frozen=True)
class Handler:
    """A registered task type."""

    name: str
    fn: HandlerFn
    is_async: bool
    wants_context: bool


@dataclass(frozen=True)
class Periodic:
    """A schedule declared in code (`@app.periodic`), created by `dtq schedule sync`."""

    name: str
    task_type: str
    cron: str = ""
    every: float = 0.0  # seconds; or cron
    tz: str = "UTC"
    payload: dict[str, Any] = field(default_factory=dict)
    queue: str = ""
    priority: str = ""  # low, medium, high; empty: medium
    max_retries: int | None = None
    timeout: float | None = None
    overlap: str = "skip"  # allow, skip, cancel_previous
    catch_up: str = "one"  # skip, one, all


class App:
    """A set of task handlers, the unit a worker loads.

    `client` (a `dtq.Client` or `dtq.AsyncClient`, also settable later as
    `app.client`) is what the handlers' references submit through.
    """

    def __init__(self, name: str = "dtq", client: Client | AsyncClient | None = None) -> None:
        self.name = name
        self.handlers: dict[str, Handler] = {}
        self.periodics: dict[str, Periodic] = {}
        self.client = client

    def task(self, name: str | None = None) -> Callable[[Callable[P, R]], TaskRef[P, R]]:
        """Register the decorated function as the handler of task type `name`
        (default: the function's name). The function becomes a `TaskRef`: still
        callable, and able to `.submit(...)` / `.delay(...)` tasks of its type."""

        def register(fn: Callable[P, R]) -> TaskRef[P, R]:
            task_type = name or fn.__name__
            self.add(task_type, fn)
            return TaskRef(self, task_type, fn)

        return register

    def periodic(
        self,
        cron: str = "",
        *,
        every: float = 0.0,
        tz: str = "UTC",
        name: str | None = None,
        payload: dict[str, Any] | None = None,
        **options: Any,
    ) -> Callable[[Callable[P, R]], TaskRef[P, R]]:
        """Declare a schedule of the decorated handler's task type: `cron` (5
        or 6 fields) in time zone `tz`, or `every` seconds. `name` defaults to
        the task type; `options`: queue, priority, max_retries, timeout,
        overlap, catch_up (see `Periodic`). A plain function is registered as
        a handler too (`@app.task()`)."""
        if bool(cron) == bool(every):
            raise ValueError("give a cron expression or every=seconds, not both")

        def register(fn: Callable[P, R]) -> TaskRef[P, R]:
            ref = fn if isinstance(fn, TaskRef) else self.task()(fn)
            declared = Periodic(
                name or ref.name, ref.name, cron, every, tz, dict(payload or {}), **options
            )
            if declared.name in self.periodics:
                raise ValueError(f"schedule {declared.name!r} is declared twice")
            self.periodics[declared.name] = declared
            return ref

        return register

    def add(self, name: str, fn: HandlerFn) -> None:
        if name in self.handlers:
            raise ValueError(f"task type {name!r} already has a handler")
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not 1 <= len(params) <= 2:
            raise TypeError(f"handler {name!r} must take (payload) or (payload, ctx)")
        self.handlers[name] = Handler(
            name, fn, inspect.iscoroutinefunction(fn), wants_context=len(params) == 2
        )

    def merge(self, other: App) -> None:
        for handler in other.handlers.values():
            self.add(handler.name, handler.fn)
        for declared in other.periodics.values():
            if declared.name in self.periodics:
                raise ValueError(f"schedule {declared.name!r} is declared twice")
            self.periodics[declared.name] = declared
