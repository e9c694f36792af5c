"""A task's attempts: the ones that ended without a result are logged with the
task (the write that records the failure appends one entry, see
`pg_sql.RESOLVE`); the latest attempt, when it is not logged, is what the task's
own columns say. Nothing is written on the success path."""

from __future__ import annotations

from dtq.domain.model import Attempt, Task, TaskState

# Entries kept per task: the newest. A dead letter re-queued again and again
# would otherwise grow its row without bound.
ATTEMPT_LOG_SIZE = 50
# Tracebacks are kept up to 32 KiB with the task's last error; a logged attempt
# keeps the first 8 KiB, so a full log stays near 600 KiB at worst.
LOGGED_TRACEBACK_LIMIT = 8192
RELEASED = "LeaseReleased"  # the error type of an attempt handed back unfinished
RELEASED_MESSAGE = "the worker gave the lease back unfinished (it was shutting down)"

_FAILED = frozenset({TaskState.FAILED, TaskState.DEAD_LETTERED})


def history(task: Task) -> list[Attempt]:
    """Every attempt known, oldest first: the log, then the latest attempt when
    the log does not hold it (running, completed, cancelled while running, or a
    row from before the log existed)."""
    log = list(task.attempt_log or ())
    last_logged = log[-1].attempt if log else 0
    if task.attempts > last_logged and task.started_at is not None:
        log.append(_latest(task))
    return log


def _latest(task: Task) -> Attempt:
    running = task.state == TaskState.RUNNING
    return Attempt(
        attempt=task.attempts,
        worker_id=task.worker_id or "",
        started_at=task.started_at,
        ended_at=None if running else (task.finished_at or task.updated_at),
        error=task.error if task.state in _FAILED else None,
    )
