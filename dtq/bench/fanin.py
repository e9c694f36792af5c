"""The fan-in workload: many idle worker streams held by this one process.

The idle streams take `noop` tasks from a queue nobody submits to, so they stay
idle; the server's RSS and CPU are sampled before and while they are connected,
and the latency workload runs with them connected."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from dtq.bench import latency
from dtq.bench.api import NOOP, Api
from dtq.bench.stats import ProcessProbe, ProcSample
from dtq.v1 import worker_service_pb2 as wpb
from dtq.v1 import worker_service_pb2_grpc

STREAMS_PER_CHANNEL = 50  # HTTP/2 connections carry several streams each
OPENING = 20  # workers registering at once (a storm of 200 exhausted the server's Redis pool)


@dataclass(frozen=True)
class FanInConfig:
    workers: int = 200
    idle_seconds: float = 10.0
    latency: latency.LatencyConfig = field(default_factory=latency.LatencyConfig)


class IdleWorkers:
    """`count` registered workers, each holding an open lease stream."""

    def __init__(self, api: Api, queue: str, count: int) -> None:
        self.api, self.queue, self.count = api, queue, count
        self.channels: list[grpc.aio.Channel] = []
        self.calls: list[Any] = []
        self.retries = 0  # registrations refused with UNAVAILABLE, then retried

    async def open(self) -> None:
        for c in range(0, self.count, STREAMS_PER_CHANNEL):
            # A distinct argument gives each channel its own connection.
            self.channels.append(self.api.channel_to([("dtq.bench.channel", c)]))
        gate = asyncio.Semaphore(OPENING)

        async def one(i: int) -> None:
            async with gate:
                await self._one(i)

        await asyncio.gather(*(one(i) for i in range(self.count)))

    async def _one(self, i: int) -> None:
        stub = worker_service_pb2_grpc.WorkerServiceStub(self.channels[i // STREAMS_PER_CHANNEL])
        worker_id = f"bench-idle-{self.queue}-{i}"
        request = wpb.RegisterWorkerRequest(
            worker_id=worker_id, queues=[self.queue], task_types=[NOOP], concurrency=1
        )
        for attempt in range(10):  # like real workers: retry UNAVAILABLE with backoff
            try:
                await stub.RegisterWorker(request, timeout=30)
                break
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == 9:
                    raise
                self.retries += 1
                await asyncio.sleep(0.1 * 2**attempt)
        call = stub.LeaseTasks()
        opening = wpb.StreamOpen(
            worker_id=worker_id, queues=[self.queue], task_types=[NOOP], capacity=1
        )
        await call.write(wpb.LeaseTasksRequest(open=opening))
        self.calls.append(call)

    async def close(self) -> None:
        for call in self.calls:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                await call.done_writing()
            call.cancel()
        for channel in self.channels:
            await channel.close()


async def idle_load(probe: ProcessProbe, seconds: float) -> dict[str, Any] | None:
    """The server's CPU (% of one core) over `seconds`, and its RSS at the end."""
    first = probe.sample()
    began = time.perf_counter()
    await asyncio.sleep(seconds)
    last = probe.sample()
    if first is None or last is None:
        return None
    return _load(first, last, time.perf_counter() - began)


def _load(first: ProcSample, last: ProcSample, wall: float) -> dict[str, Any]:
    return {
        "cpu_percent": round(100 * (last.cpu_seconds - first.cpu_seconds) / wall, 2),
        "rss_mb": round(last.rss_bytes / 2**20, 1),
    }


async def run(api: Api, queue: str, probe: ProcessProbe, config: FanInConfig) -> dict[str, Any]:
    before = await idle_load(probe, config.idle_seconds)
    idle = IdleWorkers(api, f"{queue}-idle", config.workers)
    try:
        began = time.perf_counter()
        await idle.open()
        opened = time.perf_counter() - began
        await asyncio.sleep(1.0)  # let registration and stream set-up settle
        during = await idle_load(probe, config.idle_seconds)
        with_them = await latency.run(api, queue, config.latency)
    finally:
        await idle.close()
    return {
        "workers": config.workers,
        "open_seconds": round(opened, 2),
        "register_retries": idle.retries,
        "probe": probe.source,
        "server_before": before,
        "server_idle": during,
        "latency": {
            k: with_them[k]
            for k in ("rate", "duration", "accepted", "completed", "submit_to_start_ms", "rpc_ms")
        },
    }
