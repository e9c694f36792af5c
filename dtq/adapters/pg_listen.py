"""LISTEN on a PostgreSQL channel, calling back on each notification.

One asynchronous connection of its own (psycopg2's async mode: nothing blocks
the event loop or a thread, so a stop is immediate even while PostgreSQL does
not answer), read when its socket is readable; lost, it is opened again with
backoff, and
the callback is called then (with 0), since a notification may have been
missed. Notifications read together make one call, with their number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg2
import psycopg2.extensions

from dtq.adapters.pg_conn import ready

log = logging.getLogger(__name__)
BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)
CONNECT_TIMEOUT = 5.0


class PgListener:
    def __init__(self, dsn: str, channel: str, on_notify: Callable[[int], None]) -> None:
        self.dsn = dsn
        self.channel = channel
        self.on_notify = on_notify
        self.notified = 0  # notifications received
        self.connects = 0

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    conn = await self._connect()
            except (psycopg2.Error, TimeoutError) as error:
                delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
                attempt += 1
                # The class only: libpq's message may quote the DSN, password and all.
                kind = type(error).__name__
                log.warning("listen_failed", extra={"channel": self.channel, "error": kind})
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self.connects += 1
            try:
                if self.connects > 1:  # opened again: something may have been missed
                    self.on_notify(0)
                await self._read(conn)
            finally:
                with contextlib.suppress(psycopg2.Error):
                    conn.close()

    async def _connect(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.dsn, async_=1, keepalives=1, keepalives_idle=30)
        try:
            await ready(conn)
            cur = conn.cursor()
            cur.execute(f"LISTEN {self.channel}")  # a fixed name of ours, not input
            await ready(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _read(self, conn: psycopg2.extensions.connection) -> None:
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(conn.fileno(), readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                try:
                    conn.poll()
                except psycopg2.Error as error:
                    kind = type(error).__name__
                    log.warning("listen_lost", extra={"channel": self.channel, "error": kind})
                    return
                if conn.notifies:  # several may come at once: one call for them all
                    count = len(conn.notifies)
                    conn.notifies.clear()
                    self.notified += count
                    self.on_notify(count)
        finally:
            loop.remove_reader(conn.fileno())
