"""Fires recurring schedules when their time comes.

PostgreSQL holds each schedule's next fire time (indexed); the firer sleeps
until the earliest one, and is woken at once by a NOTIFY when an operator
creates, changes, pauses or resumes a schedule (any API server, at commit).
A due schedule is locked by one manager at a time; see `dtq.app.schedules`
for why each fire time submits exactly one task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from dtq.app.schedules import Schedules
from dtq.domain.errors import DtqError
from dtq.ports import Clock

log = logging.getLogger(__name__)
# Re-read the schedules at least this often: bounds the cost of a missed NOTIFY
# (the listener reconnecting) without polling.
MAX_SLEEP = 5.0
RETRY = 1.0  # after PostgreSQL or Redis failed
EARLY = 0.002  # the loop's timer may fire this much before the fire time


class ScheduleFirer:
    def __init__(self, schedules: Schedules, clock: Clock) -> None:
        self.schedules = schedules
        self.clock = clock
        self._wake = asyncio.Event()

    def wake(self, count: int = 0) -> None:
        """A schedule changed (or a notification may have been missed)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                due = await self.schedules.fire_due()
                delay = MAX_SLEEP if due is None else due - self.clock.now() + EARLY
            except DtqError as error:
                log.warning("schedules_failed", extra={"reason": error.reason})
                delay = RETRY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, min(MAX_SLEEP, delay)))
