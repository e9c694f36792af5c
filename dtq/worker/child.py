"""Inside a child process of `--pool process`: run the handlers the parent sends.

The child imports the same handler modules as the parent, then answers one job
at a time over its pipe until the parent closes it. SIGTERM (the parent
stopping a timed-out or cancelled task) raises `TaskInterrupted` so that the
handler's `finally` blocks run, then the child exits; SIGKILL follows if it
does not. Ctrl-C is left to the parent, which stops its children itself.
"""

from __future__ import annotations

import asyncio
import json
import signal
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from opentelemetry import context, propagate

from dtq import logs, tracing
from dtq.worker.app import App, PermanentError, TaskContext, TaskInterrupted
from dtq.worker.children import PipeSpawner, Spawner
from dtq.worker.loader import load

# To the child: (task type, payload, TaskContext fields but `cancelled`, the
# propagation fields of the parent's run span, or None when tracing is off).
Job = tuple[str, dict[str, Any], dict[str, Any], dict[str, str] | None]
# From the child: ("ok", JSON value) or ("error", type, message, traceback, permanent);
# while a job runs, ("submit", [SubmitTaskRequest bytes]) for ctx.submit, which the
# parent answers ("submitted", [SubmitTaskResponse bytes]) or ("refused", code,
# message, google.rpc.Status bytes).
Reply = tuple[Any, ...]
READY: Reply = ("ready",)


@dataclass(frozen=True)
class ChildSpec:
    """What a child needs to start: the handler modules and how to log."""

    modules: list[str]
    log_level: str = "INFO"
    log_format: str = "auto"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise TaskInterrupted("the worker stopped this task")


def main(conn: Connection, spec: ChildSpec) -> None:
    """Entry point of a child process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)
    logs.configure(spec.log_level, spec.log_format, "worker")
    traced = tracing.setup("dtq-worker")  # the parent's OTEL_* environment
    try:
        app = load(spec.modules)
        loop = asyncio.new_event_loop()
        conn.send(READY)  # the handlers are imported: time a job from here
        while True:
            try:
                job: Job = conn.recv()
            except EOFError:  # the parent is gone
                return
            reply = run(app, loop, job, PipeSpawner(conn))
            if traced:  # before the answer: the parent may stop this child next
                tracing.flush()
            conn.send(reply)
    except TaskInterrupted:
        return
    finally:
        if traced:
            tracing.flush()


def run(app: App, loop: asyncio.AbstractEventLoop, job: Job, spawner: Spawner) -> Reply:
    """Run one job; the reply is plain data, so it always pickles. The
    handler's `ctx.submit` asks the parent over the pipe (`spawner`)."""
    task_type, payload, fields, carrier = job
    handler = app.handlers[task_type]
    ctx = TaskContext(**fields, spawner=spawner)
    args: tuple[Any, ...] = (payload, ctx) if handler.wants_context else (payload,)
    # The handler runs in the parent's run span, as in the thread pool.
    token = context.attach(propagate.extract(carrier)) if carrier else None
    try:
        if handler.is_async:
            result = loop.run_until_complete(handler.fn(*args))
        else:
            result = handler.fn(*args)
        return ("ok", json.loads(json.dumps(result, default=str)))
    except Exception as exc:
        tb = "".join(traceback.format_exception(exc))
        message = str(exc) or exc.__class__.__name__
        return ("error", exc.__class__.__name__, message, tb, isinstance(exc, PermanentError))
    finally:
        if token is not None:
            context.detach(token)
