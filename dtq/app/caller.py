"""The caller of the call being served, for the use cases that check queues.

Set by the API layer around each call (`dtq.api.auth`); `ANONYMOUS` (an
admin) where nobody set it: authentication off, or the manager's own work.
"""

from __future__ import annotations

from contextvars import ContextVar

from dtq.domain.auth import ANONYMOUS, Principal, queue_denied

CALLER: ContextVar[Principal] = ContextVar("dtq_caller", default=ANONYMOUS)


def current() -> Principal:
    return CALLER.get()


def visible(queues: set[str]) -> set[str]:
    """The queues of `queues` the caller may see."""
    principal = CALLER.get()
    return {q for q in queues if principal.may_use(q)}


def check_queue(queue: str) -> None:
    """PERMISSION_DENIED unless the caller may use `queue`."""
    principal = CALLER.get()
    if not principal.may_use(queue):
        raise queue_denied(principal, queue)
