"""The live columns of the worker registry: leases held now, last heard from.

The server holding a worker's stream knows both: the leases its session holds
and when the worker last sent a message (a heartbeat, an outcome, or the empty
message an idle worker sends at the heartbeat interval). `Presence` writes what
changed for every stream of this process together, every `interval` seconds:
one Redis round trip, not one per lease or per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dtq.app.dispatch import Session
from dtq.domain.errors import DtqError
from dtq.ports import Clock, Liveness, WorkerRegistry

log = logging.getLogger(__name__)
INTERVAL = 0.5  # seconds; how stale `ListWorkers` BUSY may be
SEEN_STEP = 1.0  # last seen is shown in seconds: rewrite it at most this often


@dataclass
class Presence:
    """Keeps `active_tasks` and `last_seen_at` of connected workers current."""

    registry: WorkerRegistry
    clock: Clock
    sessions: Callable[[], Iterable[Session]]
    interval: float = INTERVAL
    _seen: dict[int, float] = field(default_factory=dict)  # session id -> last message
    _written: dict[int, Liveness] = field(default_factory=dict)

    def saw(self, session: Session) -> None:
        """The worker of `session` sent a message."""
        self._seen[session.id] = self.clock.now()

    def changes(self) -> dict[int, Liveness]:
        """What to write, by session: the ones whose lease count or draining
        changed, or that were heard from since the last write (at most every
        SEEN_STEP seconds)."""
        current = {s.id: s for s in self.sessions()}
        for gone in (self._written.keys() | self._seen.keys()) - current.keys():
            self._written.pop(gone, None)
            self._seen.pop(gone, None)
        due = {}
        for sid, session in current.items():
            before = self._written.get(sid)
            seen = self._seen.get(sid, before.last_seen_at if before else self.clock.now())
            row = Liveness(
                session.worker_id, len(session.held), session.draining, seen, session.tenant
            )
            if _due(row, before):
                due[sid] = row
        return due

    async def flush(self) -> None:
        """Write the changes; what a failed write missed is due again next time."""
        due = self.changes()
        if due:
            await self.registry.touch_many(list(due.values()))
            self._written.update(due)

    async def run(self) -> None:
        """Flush every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except DtqError as error:
                log.warning("presence_not_written", extra={"reason": error.reason})


def _due(row: Liveness, before: Liveness | None) -> bool:
    if before is None or (row.active_tasks, row.draining) != (before.active_tasks, before.draining):
        return True
    return row.last_seen_at - before.last_seen_at >= SEEN_STEP
