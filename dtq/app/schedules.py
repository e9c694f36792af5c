"""Use cases of recurring schedules: create, read, change, pause, trigger, and
the queue manager's firing of due ones.

Exactly one task per fire time, whatever the number of managers: a due
schedule is held by one manager at a time (a row lock), and the task of a
fire time carries the idempotency key `schedule:<name>:<fire time>`, so a
manager killed after submitting but before recording the fire submits the
same task again on the next try, and the submit path returns the first one.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, replace

from dtq import metrics
from dtq.app import caller
from dtq.app.tasks import Tasks
from dtq.domain import paging, validation
from dtq.domain import schedule as sch
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import Task
from dtq.domain.schedule import Action, Schedule
from dtq.domain.tenants import DEFAULT, not_allowed
from dtq.domain.validation import Limits
from dtq.ports import Clock, Fired, ScheduleStore

log = logging.getLogger(__name__)
BATCH = 100  # due schedules fired per transaction


@dataclass
class Schedules:
    """Recurring schedules; tasks go through the normal submit path (`Tasks`)."""

    store: ScheduleStore
    tasks: Tasks
    clock: Clock
    limits: Limits
    grace: float = 10.0

    # -- operators ------------------------------------------------------------------------

    async def create(self, schedule: Schedule) -> Schedule:
        now = self.clock.now()
        fresh = replace(self._checked(schedule), created_at=now, updated_at=now)
        fresh = replace(fresh, last_fire_at=None, last_task_id=None, paused=False)
        created = await self.store.create(sch.starting(fresh, now))
        log.info("schedule_created", extra={"schedule": created.name})
        return created

    async def get(self, name: str) -> Schedule:
        found = await self.store.get(sch.name(name))
        if found is None or not caller.may_see(DEFAULT, found.task.queue):
            raise DtqError.not_found("schedule", name)  # another's queue: not even there
        return found

    async def page(self, page_size: int, token: str) -> tuple[list[Schedule], str]:
        size = validation.page_size(page_size, default=100)
        after = paging.decode(token, paging.fingerprint("schedules"))
        found = await self.store.list_schedules(after, size + 1)
        more = len(found) > size
        found = found[:size]
        next_token = paging.encode(found[-1].name, paging.fingerprint("schedules")) if more else ""
        # A caller limited to queues sees only theirs; another tenant, none.
        return [s for s in found if caller.may_see(DEFAULT, s.task.queue)], next_token

    async def update(self, schedule: Schedule) -> Schedule:
        """A new definition. The next fire time moves only when the timing
        changed; the pause flag and the last run are kept."""
        current = await self.get(schedule.name)
        now = self.clock.now()
        wanted = replace(
            self._checked(schedule),
            paused=current.paused,
            next_fire_at=current.next_fire_at,
            updated_at=now,
        )
        retime = wanted.timing != current.timing
        if retime:
            wanted = sch.starting(wanted, now)
        return await self._write(wanted, retime)

    async def delete(self, name: str) -> None:
        await self.get(name)
        if not await self.store.delete(name):
            raise DtqError.not_found("schedule", name)
        log.info("schedule_deleted", extra={"schedule": name})

    async def set_paused(self, name: str, paused: bool) -> Schedule:
        """Pause, or resume: fire times passed while paused do not fire."""
        current = await self.get(name)
        if current.paused == paused:
            return current
        now = self.clock.now()
        changed = sch.starting(replace(current, paused=paused, updated_at=now), now)
        return await self._write(changed, retime=True)

    async def trigger(self, name: str) -> tuple[Schedule, Task]:
        """Submit the schedule's task now, outside its fire times (paused or not)."""
        current = await self.get(name)
        now = self.clock.now()
        (submitted,) = await self.tasks.submit([current.task.spec(sch.trigger_key(name))])
        await self.store.record_run(name, now, submitted.task.id)
        log.info("schedule_triggered", extra={"schedule": name, "task_id": str(submitted.task.id)})
        return await self.get(name), submitted.task

    async def _write(self, schedule: Schedule, retime: bool) -> Schedule:
        written = await self.store.update(schedule, retime)
        if written is None:
            raise DtqError.not_found("schedule", schedule.name)
        return written

    def _checked(self, schedule: Schedule) -> Schedule:
        """The name and the task template as a submission would be checked."""
        sch.name(schedule.name, "schedule.name")
        home = caller.current().home
        if home != DEFAULT:  # schedules are the default tenant's, for now
            raise not_allowed(home, DEFAULT)
        caller.check_queue(schedule.task.queue)
        try:
            validation.new_task(schedule.task.spec(""), self.limits, self.clock.now())
        except DtqError as error:
            raise error.prefixed("schedule.task") from None
        return schedule

    # -- the queue manager ----------------------------------------------------------------

    async def fire_due(self) -> float | None:
        """Fire every due schedule; the next fire time of any schedule."""
        while await self.store.fire_due(self.clock.now(), BATCH, self._fire) == BATCH:
            pass
        return await self.store.next_due()

    async def _fire(self, schedule: Schedule) -> Fired:
        now = self.clock.now()
        plan = sch.plan(schedule, now, self.grace)
        queue = metrics.queue_label(schedule.task.queue)
        last_at, last_id = schedule.last_fire_at, schedule.last_task_id
        state = schedule.last_task_state
        for at in plan.fires:
            action = sch.on_overlap(schedule.overlap, state)
            if action == Action.SKIP:
                metrics.schedule_skips.labels(queue).inc()
                log.info("schedule_skipped", extra={"schedule": schedule.name, "fire_at": at})
                continue
            if action == Action.CANCEL_THEN_FIRE and last_id is not None:
                with contextlib.suppress(DtqError):  # finished meanwhile: nothing to cancel
                    await self.tasks.cancel(last_id)
            task = await self._submit(schedule, at)
            if task is not None:
                last_at, last_id, state = at, task.id, task.state
        if plan.dropped:
            metrics.schedule_missed.labels(queue).inc()
            log.warning("schedule_missed", extra={"schedule": schedule.name})
        return Fired(plan.next_fire_at, last_at, last_id)

    async def _submit(self, schedule: Schedule, at: float) -> Task | None:
        """The task of fire time `at` (the one submitted before, if any)."""
        spec = schedule.task.spec(sch.fire_key(schedule.name, at))
        try:
            (submitted,) = await self.tasks.submit([spec])
        except DtqError as error:
            if error.code == Code.UNAVAILABLE:
                raise  # PostgreSQL or Redis: the transaction rolls back, tried again
            # Refused for good (ALREADY_EXISTS: fired before a crash, and the
            # template changed since; RESOURCE_EXHAUSTED: a new queue past
            # DTQ_MAX_QUEUES): the fire time passes, the schedule goes on.
            log.warning(
                "schedule_fire_refused", extra={"schedule": schedule.name, "reason": error.reason}
            )
            return None
        queue = metrics.queue_label(schedule.task.queue)
        if not submitted.deduplicated:
            metrics.schedule_fires.labels(queue).inc()
            metrics.schedule_lateness.labels(queue).observe(max(0.0, self.clock.now() - at))
        log.info(
            "schedule_fired",
            extra={"schedule": schedule.name, "fire_at": at, "task_id": str(submitted.task.id)},
        )
        return submitted.task
