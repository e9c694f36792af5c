"""Redis pub/sub for one process: ready notifications, cancels, task watches.

One connection per process. It reconnects by itself with backoff; after each
(re)connection it calls the `on_resync` callbacks, because messages published
while it was away are lost (pub/sub keeps nothing) and whoever relies on them
must re-check the source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from dtq.adapters import redis_keys as keys
from dtq.adapters.redis_conn import Client

log = logging.getLogger(__name__)

OnReady = Callable[[str, str], None]  # queue, task type ("*" = any)
OnCancel = Callable[[str, uuid.UUID], None]  # worker id, task id
OnSchedule = Callable[[float], None]  # due time


class RedisNotifier:
    """Listens on the channels a process needs and fans messages out."""

    def __init__(
        self,
        client: Client,
        *,
        ready: bool = False,
        cancels: bool = False,
        schedule: bool = False,
    ) -> None:
        self._client = client
        self._want_ready, self._want_cancels, self._want_schedule = ready, cancels, schedule
        self.on_ready: list[OnReady] = []
        self.on_cancel: list[OnCancel] = []
        self.on_schedule: list[OnSchedule] = []
        self.on_resync: list[Callable[[], None]] = []
        self._watchers: dict[bytes, set[asyncio.Queue[str]]] = {}  # by task id bytes
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="redis-notifier")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self._connect()
                backoff = 0.05
                async for message in self._pubsub.listen():
                    self._dispatch(message)
                raise ConnectionError("pub/sub stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.connected.clear()
                log.warning(
                    "pubsub_disconnected", extra={"error": repr(error), "retry_in": backoff}
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _connect(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        if self._want_ready:
            await self._pubsub.psubscribe(keys.NOTIFY_PATTERN)
        channels = [keys.CHANGES_CHANNEL] if self._watchers else []
        if self._want_cancels:
            channels.append(keys.CANCEL_CHANNEL)
        if self._want_schedule:
            channels.append(keys.SCHEDULE_CHANNEL)
        if channels:
            await self._pubsub.subscribe(*channels)
        self.connected.set()
        for callback in self.on_resync:
            callback()

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"].decode()
        data: bytes = message["data"]
        if kind == "pmessage":
            queue = keys.queue_of_channel(channel)
            for ready_cb in self.on_ready:
                ready_cb(queue, data.decode())
        elif channel == keys.CANCEL_CHANNEL:
            body = json.loads(data)
            for cancel_cb in self.on_cancel:
                cancel_cb(body["worker_id"] or "", uuid.UUID(body["task_id"]))
        elif channel == keys.SCHEDULE_CHANNEL:
            for schedule_cb in self.on_schedule:
                schedule_cb(float(data))
        elif channel == keys.CHANGES_CHANNEL:
            for task_id, state in keys.split_changes(data):
                for queue_ in self._watchers.get(task_id, ()):
                    queue_.put_nowait(state)

    @contextlib.asynccontextmanager
    async def watch(self, task_id: uuid.UUID) -> AsyncIterator[asyncio.Queue[str]]:
        """A queue that receives the new state of the task after each change."""
        key = task_id.bytes
        changes: asyncio.Queue[str] = asyncio.Queue()
        first = not self._watchers
        self._watchers.setdefault(key, set()).add(changes)
        if first and self.connected.is_set():
            with contextlib.suppress(Exception):
                await self._pubsub.subscribe(keys.CHANGES_CHANNEL)
        try:
            yield changes
        finally:
            watchers = self._watchers.get(key, set())
            watchers.discard(changes)
            if not watchers:
                self._watchers.pop(key, None)
                if not self._watchers and self.connected.is_set():
                    with contextlib.suppress(Exception):
                        await self._pubsub.unsubscribe(keys.CHANGES_CHANNEL)
