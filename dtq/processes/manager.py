"""The `dtq manager` process: scheduler, schedule firer, lease reaper, reconciler
and retention. Safe to run twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from dtq import metrics, tracing
from dtq.adapters.pg_conn import Pg, libpq_dsn
from dtq.adapters.pg_listen import PgListener
from dtq.adapters.pg_queues import PgQueues
from dtq.adapters.pg_schedules import PgSchedules
from dtq.adapters.pg_sql import DUE_CHANNEL, SCHEDULES_CHANNEL
from dtq.adapters.redis_notify import RedisNotifier
from dtq.app.admin import Admin
from dtq.app.queue_cap import QueueCap
from dtq.app.schedules import Schedules
from dtq.app.tasks import Tasks
from dtq.manager.observer import QueueObserver
from dtq.manager.reaper import Reaper
from dtq.manager.reconciler import Reconciler
from dtq.manager.retention import Retention
from dtq.manager.scheduler import Scheduler
from dtq.manager.schedules import ScheduleFirer
from dtq.ops_http import HealthBoard, serve_ops
from dtq.processes.core import build_core, stop_on_signals, watch_dependencies
from dtq.processes.server import flush_deferred
from dtq.settings import Settings

log = logging.getLogger(__name__)


async def run(settings: Settings) -> None:
    tracing.setup("dtq-manager")
    board = HealthBoard("manager")
    ops = serve_ops(board, settings)  # first: a taken port stops it before it opens anything
    core = build_core(settings)
    scheduler = Scheduler(core.store, core.queue, core.clock)
    reaper = Reaper(core.leasing, core.index)
    observer = QueueObserver(
        Admin(core.store, core.queue, core.index, core.workers, core.clock),
        settings.observe_interval,
    )
    reconciler = Reconciler(
        core.store, core.queue, core.index, PgQueues(core.pg), settings.reconcile_interval
    )
    retention = Retention(
        core.store, core.clock, settings.retention_completed, settings.retention_interval
    )
    cap = QueueCap(core.index, settings.max_queues)
    tasks = Tasks(core.store, core.queue, core.clock, core.limits, queue_cap=cap)
    # Firing holds a transaction (the due schedules' locks) while it submits
    # through the pool: its own connection, so a pool of one cannot deadlock.
    firing = Pg(settings.database_dsn, 1, settings.database_timeout)
    schedules = Schedules(
        PgSchedules(firing), tasks, core.clock, core.limits, settings.schedule_grace
    )
    firer = ScheduleFirer(schedules, core.clock)
    notifier = RedisNotifier(core.redis, schedule=True)
    notifier.on_schedule.append(scheduler.wake)
    notifier.on_resync.append(lambda: scheduler.wake(0.0))

    def enqueued(count: int) -> None:  # dtq.enqueue_in committed tasks due now
        metrics.scheduler_notified.inc(count)
        scheduler.wake(0.0)

    listener = PgListener(libpq_dsn(settings.database_dsn), DUE_CHANNEL, enqueued)
    changes = PgListener(libpq_dsn(settings.database_dsn), SCHEDULES_CHANNEL, firer.wake)
    stop = asyncio.Event()
    stop_on_signals(stop)
    notifier.start()
    loops = [
        asyncio.create_task(scheduler.run(), name="scheduler"),
        asyncio.create_task(listener.run(), name="listener"),
        asyncio.create_task(firer.run(), name="schedules"),
        asyncio.create_task(changes.run(), name="schedule-changes"),
        asyncio.create_task(flush_deferred(tasks), name="deferred"),
        asyncio.create_task(reaper.run(), name="reaper"),
        asyncio.create_task(observer.run(), name="observer"),
        asyncio.create_task(reconciler.run(), name="reconciler"),
        asyncio.create_task(retention.run(), name="retention"),
        asyncio.create_task(watch_dependencies(core, board), name="health"),
    ]
    log.info("manager_started")
    await stop.wait()
    board.stopping = True
    for loop in loops:
        loop.cancel()
    for loop in loops:
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    await notifier.stop()
    if ops:
        ops.stop()
    firing.close()
    await core.close()
    log.info("manager_stopped")
