"""Where handlers run: the interface the Executor uses, and its errors.

Two implementations: `ThreadPool` (dtq/worker/thread_pool.py, the default)
runs handlers in this process and interrupts a sync handler's thread;
`ProcessPool` (dtq/worker/process_pool.py, `--pool process`) runs each slot in
a child process and kills it. Either way, cancelling `call` stops the handler.
"""

from __future__ import annotations

from typing import Any, Protocol

from dtq.worker.app import Handler, TaskContext


class HandlerPool(Protocol):
    """Runs one handler call per slot."""

    async def call(self, handler: Handler, payload: dict[str, Any], ctx: TaskContext) -> Any:
        """The handler's return value, or its exception. Cancelling the call
        interrupts the handler (thread) or kills its process."""
        ...

    async def started(self) -> None:
        """Wait until every slot can start a handler at once (a child process
        imports the handler modules first)."""
        ...

    def close(self) -> None:
        """Stop every slot; running handlers are abandoned."""
        ...


class WorkerProcessDied(Exception):
    """The process running the handler died (os._exit, a segfault, the OOM
    killer) before it answered. Retryable: the next attempt gets a new process."""


class HandlerFailed(Exception):
    """A handler's exception, as reported by a child process (its class may not
    exist or pickle in the parent)."""

    def __init__(self, type_name: str, message: str, traceback: str, permanent: bool) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.permanent = permanent
