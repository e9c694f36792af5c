"""Running handlers without ever blocking the worker's stream.

Handlers run in a `HandlerPool`: threads of this process (the default; async
handlers on a second event loop) or child processes (`--pool process`). The
stream, heartbeats and outcome delivery live on the main loop, so a handler
that blocks its loop or hogs the CPU delays only other handlers, never a
heartbeat. A handler that outlives its timeout, or whose task is cancelled, is
interrupted (thread) or killed (process); see dtq/worker/pools.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from opentelemetry.trace import Span

from dtq import metrics, tracing
from dtq.v1 import task_pb2, worker_service_pb2
from dtq.worker.app import App, PermanentError, TaskContext
from dtq.worker.children import Children
from dtq.worker.pools import HandlerFailed, HandlerPool

MAX_TRACEBACK = 32 * 1024


@dataclass
class Execution:
    """One leased task being run."""

    lease: worker_service_pb2.Lease
    context: TaskContext
    future: asyncio.Future[Any] | None = None
    abandoned: bool = False  # cancelled or lease lost: report nothing
    started: bool = False  # a slot took it (False: prefetched, waiting)

    @property
    def task_id(self) -> str:
        return self.lease.task.id

    def ref(self) -> worker_service_pb2.LeaseRef:
        return worker_service_pb2.LeaseRef(task_id=self.task_id, lease_token=self.lease.lease_token)


def _seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def _to_value(result: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    json_format.ParseDict(json.loads(json.dumps(result, default=str)), value)
    return value


def _error(exc: BaseException) -> task_pb2.TaskError:
    if isinstance(exc, HandlerFailed):  # raised in a child process
        return task_pb2.TaskError(
            message=exc.message,
            type=exc.type_name,
            traceback=exc.traceback[-MAX_TRACEBACK:],
            permanent=exc.permanent,
        )
    tb = "".join(traceback.format_exception(exc))[-MAX_TRACEBACK:]
    return task_pb2.TaskError(
        message=str(exc) or exc.__class__.__name__,
        type=exc.__class__.__name__,
        traceback=tb,
        permanent=isinstance(exc, PermanentError),
    )


def _flow(task: task_pb2.Task) -> dict[str, Any]:
    """The flow fields of the context; none from protos older than flows."""
    if "parent_result" not in task.DESCRIPTOR.fields_by_name:
        return {}
    result = task.parent_result if task.HasField("parent_result") else None
    return {
        "parent_result": None if result is None else json_format.MessageToDict(result),
        "parent_id": task.parent_id,
        "group_id": task.group_id or task.callback_of,
        "root_id": getattr(task, "root_id", ""),
    }


class Executor:
    """Runs handlers for leases and turns their ends into TaskOutcomes."""

    def __init__(self, app: App, pool: HandlerPool) -> None:
        self.app = app
        self.pool = pool
        self.children: Children | None = None  # set once the worker has its channel

    def close(self) -> None:
        self.pool.close()

    def start(self, lease: worker_service_pb2.Lease) -> Execution:
        task = lease.task
        ctx = TaskContext(
            task_id=task.id,
            type=task.type,
            queue=task.queue,
            attempt=task.attempts,
            max_retries=task.max_retries,
            timeout=task.timeout.seconds + task.timeout.nanos / 1e9,
            spawner=self.children.bind(task.id, lease.lease_token) if self.children else None,
            **_flow(task),
        )
        return Execution(lease, ctx)

    async def run(self, execution: Execution) -> worker_service_pb2.TaskOutcome:
        """Run the handler under the task's timeout, in the task's trace; never raises."""
        task = execution.lease.task
        waited = (
            _seconds(task.scheduled_at) or _seconds(task.created_at),
            _seconds(task.started_at),
        )
        with tracing.task_run(
            task.trace_context, task.id, task.type, task.queue, task.attempts, waited
        ) as span:
            return await self._run(execution, span)

    async def _run(self, execution: Execution, span: Span | None) -> worker_service_pb2.TaskOutcome:
        task = execution.lease.task
        handler = self.app.handlers.get(task.type)
        outcome = worker_service_pb2.TaskOutcome(
            task_id=task.id, lease_token=execution.lease.lease_token
        )
        started = time.perf_counter()
        metrics.worker_running.inc()
        try:
            if handler is None:
                raise PermanentError(f"this worker has no handler for task type {task.type!r}")
            payload = json_format.MessageToDict(task.payload)
            # Cancelling the pool's call (timeout, revocation) interrupts the handler.
            result = await asyncio.wait_for(
                self.pool.call(handler, payload, execution.context), execution.context.timeout
            )
            outcome.result.CopyFrom(_to_value(result))
            kind = "completed"
        except TimeoutError:
            execution.context.cancelled.set()
            error = TimeoutError(
                f"the handler ran longer than its {execution.context.timeout:g}s timeout"
            )
            outcome.error.CopyFrom(_error(error))
            kind = "timed_out"
            tracing.run_failed(span, error, kind)
        except asyncio.CancelledError:
            execution.context.cancelled.set()
            raise
        except BaseException as exc:  # SystemExit in a handler fails only its task
            outcome.error.CopyFrom(_error(exc))
            kind = "failed"
            tracing.run_failed(span, exc, kind)
        finally:
            metrics.worker_running.dec()
        label = metrics.type_label(task.type)
        metrics.worker_tasks.labels(label, kind).inc()
        metrics.worker_task_duration.labels(label).observe(time.perf_counter() - started)
        return outcome
