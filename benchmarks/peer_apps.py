"""The no-op task of each peer, run by its own worker command (see peers.py).

Run inside benchmarks/.venv. The peers without a result store (Dramatiq, Celery)
confirm each completion with one pipelined Redis call (count, last time, and in
the latency workload the submit->start delay); pgqueuer's completions are
confirmed from PostgreSQL itself and it records only the latency sample."""

from __future__ import annotations

import json
import os
import time

import redis

PEER = os.environ.get("PEER", "")
BROKER = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0")
TRACK = redis.Redis.from_url(os.environ.get("PEER_TRACK_URL", BROKER))


def record(sent_at: float | None, count: bool = True) -> None:
    now = time.time()
    pipe = TRACK.pipeline(transaction=False)
    if count:
        pipe.incr("bench:done")
        pipe.set("bench:last", repr(now))
    if sent_at is not None:
        pipe.rpush("bench:start_ms", repr((now - sent_at) * 1000))
    pipe.execute()


if PEER == "dramatiq":
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    dramatiq.set_broker(RedisBroker(url=BROKER))

    @dramatiq.actor(max_retries=0)
    def noop(sent_at: float | None = None) -> None:
        record(sent_at)


if PEER == "celery":
    from celery import Celery

    celery_app = Celery("peer", broker=BROKER)
    celery_app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False)

    @celery_app.task(name="noop", ignore_result=True)
    def celery_noop(sent_at: float | None = None) -> None:
        record(sent_at)


async def pgqueuer_main() -> object:
    """`pgq run peer_apps:pgqueuer_main`: a PgQueuer with the noop entrypoint."""
    import asyncpg
    from pgqueuer import PgQueuer
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job

    connection = await asyncpg.connect(os.environ["PGDSN"])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        if job.payload:
            record(json.loads(job.payload)["t"], count=False)

    return pgq
