"""A cap on the number of queues: each queue costs every stats call, the
observer and the lease scripts, and its name is chosen by callers.

A submission to a queue the index does not know yet is refused with
RESOURCE_EXHAUSTED (TOO_MANY_QUEUES) once `limit` queues exist, until empty
ones are deleted (`dtq queue delete`). An unknown name makes the server read
the known set again if its copy is `refresh` seconds old, and always before it
refuses; servers together may overshoot by what they accept in that time. With Redis
unreachable the cap lets submissions through: PostgreSQL is the source of
truth, and accepting work beats refusing it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from dtq.domain.errors import Code, DtqError
from dtq.ports import QueueIndex


class QueueCap:
    def __init__(
        self,
        index: QueueIndex,
        limit: int,
        refresh: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.index = index
        self.limit = limit
        self.refresh = refresh
        self.clock = clock
        self.known: set[str] = set()
        self._read_at = -refresh

    async def check(self, queues: Iterable[str]) -> None:
        new = set(queues) - self.known
        if not new:
            return
        stale = self.clock() - self._read_at >= self.refresh
        if stale or len(self.known) + len(new) > self.limit:  # read before refusing
            try:
                self.known = await self.index.queues()
            except DtqError:
                return  # fail open (see the module doc)
            self._read_at = self.clock()
            new -= self.known
        if len(self.known) + len(new) > self.limit:
            raise DtqError(
                Code.RESOURCE_EXHAUSTED,
                "TOO_MANY_QUEUES",
                f"{len(self.known)} queues exist, the most allowed (DTQ_MAX_QUEUES) is "
                f"{self.limit}: submit to an existing queue, or delete empty ones "
                f"(dtq queue delete)",
            )
        if new:
            try:
                await self.index.add(sorted(new))  # scheduled tasks' queues count too
            except DtqError:
                return
            self.known |= new

    def forget(self, queue: str) -> None:
        """A queue was deleted."""
        self.known.discard(queue)
