"""The task state machine: every allowed transition, in one table.

Stores persist a transition with a compare-and-set on the task's current state
(and lease token for a running task); they never decide transitions
themselves. They ask this table which states an event may start from.

    SCHEDULED --promote--> PENDING --lease--> RUNNING --complete--> COMPLETED
                               ^                 |  \\--fail----> FAILED --promote--> PENDING
                               |                 |   \\--dead_letter--> DEAD_LETTERED
                               +----expire-------+
    cancel: PENDING, SCHEDULED, FAILED, RUNNING --> CANCELLED
    retry (operator): FAILED, DEAD_LETTERED --> PENDING
    WAITING --unblock--> SCHEDULED (due at once): a flow's step whose parent
        completed, or a group's callback whose group finished
"""

from __future__ import annotations

import enum

from dtq.domain.errors import DtqError
from dtq.domain.model import TaskState

S = TaskState


class Event(enum.StrEnum):
    """Things that happen to a task."""

    PROMOTE = "promote"  # its scheduled time came
    LEASE = "lease"  # a worker got it
    COMPLETE = "complete"  # the handler returned
    FAIL = "fail"  # an attempt failed, a retry is scheduled
    DEAD_LETTER = "dead_letter"  # an attempt failed, no retry left or permanent error
    EXPIRE = "expire"  # the lease ran out, or the worker handed it back
    CANCEL = "cancel"  # a user cancelled it
    RETRY = "retry"  # an operator re-queued it
    UNBLOCK = "unblock"  # what it waited for finished (a flow)


TRANSITIONS: dict[Event, tuple[frozenset[TaskState], TaskState]] = {
    Event.PROMOTE: (frozenset({S.SCHEDULED, S.FAILED}), S.PENDING),
    Event.LEASE: (frozenset({S.PENDING}), S.RUNNING),
    Event.COMPLETE: (frozenset({S.RUNNING}), S.COMPLETED),
    Event.FAIL: (frozenset({S.RUNNING}), S.FAILED),
    Event.DEAD_LETTER: (frozenset({S.RUNNING}), S.DEAD_LETTERED),
    Event.EXPIRE: (frozenset({S.RUNNING}), S.PENDING),
    Event.CANCEL: (
        frozenset({S.PENDING, S.SCHEDULED, S.FAILED, S.RUNNING, S.WAITING}),
        S.CANCELLED,
    ),
    Event.RETRY: (frozenset({S.FAILED, S.DEAD_LETTERED}), S.PENDING),
    Event.UNBLOCK: (frozenset({S.WAITING}), S.SCHEDULED),
}

TERMINAL: frozenset[TaskState] = frozenset({S.COMPLETED, S.CANCELLED, S.DEAD_LETTERED})
# Events only an operator triggers; every other event is automatic.
OPERATOR_EVENTS: frozenset[Event] = frozenset({Event.RETRY})


def sources(event: Event) -> frozenset[TaskState]:
    """States `event` may start from."""
    return TRANSITIONS[event][0]


def target(event: Event) -> TaskState:
    """State `event` leads to."""
    return TRANSITIONS[event][1]


def apply(state: TaskState, event: Event) -> TaskState:
    """The state after `event`, or FAILED_PRECONDITION if not allowed."""
    allowed, to = TRANSITIONS[event]
    if state not in allowed:
        raise DtqError.failed_precondition(
            "INVALID_TRANSITION",
            f"cannot {event.value} a task that is {state.value}",
        )
    return to
