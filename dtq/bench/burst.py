"""The burst workload: N no-op tasks as fast as possible, once with one
SubmitTask per task from many concurrent callers, once with BatchSubmitTasks."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import grpc

from dtq.bench.api import Api
from dtq.bench.stats import summary
from dtq.v1 import task_service_pb2


@dataclass(frozen=True)
class BurstConfig:
    tasks: int = 20_000
    callers: int = 64  # concurrent SubmitTask calls
    batch_size: int = 500  # tasks per BatchSubmitTasks
    batch_callers: int = 4  # concurrent BatchSubmitTasks calls
    timeout: float = 600.0  # seconds to wait for the last completion


@dataclass
class _Submitted:
    ids: list[str]
    errors: dict[str, int]
    rpc_ms: list[float]
    first_wall: float  # time.time() when the first call went out
    submit_seconds: float  # first call out -> last reply in


async def _drive(
    calls: int, callers: int, call: Any, ids: list[str], errors: dict[str, int]
) -> list[float]:
    """Run `call(i)` for i in range(calls) from `callers` coroutines; RPC times in ms."""
    rpc_ms: list[float] = []
    counter = iter(range(calls))

    async def caller() -> None:
        for i in counter:  # shared iterator: each index is taken once
            began = time.perf_counter()
            try:
                ids.extend(await call(i))
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] = errors.get(error.code().name, 0) + 1
            rpc_ms.append((time.perf_counter() - began) * 1000)

    await asyncio.gather(*(caller() for _ in range(max(1, min(callers, calls)))))
    return rpc_ms


async def submit_single(api: Api, queue: str, n: int, callers: int) -> _Submitted:
    request = api.request(queue)

    async def one(_: int) -> list[str]:
        reply = await api.tasks.SubmitTask(request, timeout=60)
        return [reply.task.id]

    ids: list[str] = []
    errors: dict[str, int] = {}
    first_wall, began = time.time(), time.perf_counter()
    rpc_ms = await _drive(n, callers, one, ids, errors)
    return _Submitted(ids, errors, rpc_ms, first_wall, time.perf_counter() - began)


async def submit_batches(api: Api, queue: str, n: int, size: int, callers: int) -> _Submitted:
    request = api.request(queue)
    sizes = [min(size, n - start) for start in range(0, n, size)]

    async def one(i: int) -> list[str]:
        batch = task_service_pb2.BatchSubmitTasksRequest(requests=[request] * sizes[i])
        reply = await api.tasks.BatchSubmitTasks(batch, timeout=120)
        return [r.task.id for r in reply.results]

    ids: list[str] = []
    errors: dict[str, int] = {}
    first_wall, began = time.time(), time.perf_counter()
    rpc_ms = await _drive(len(sizes), callers, one, ids, errors)
    return _Submitted(ids, errors, rpc_ms, first_wall, time.perf_counter() - began)


async def measure(api: Api, queue: str, sent: _Submitted, within: float) -> dict[str, Any]:
    """Wait for every accepted task to complete; the figures of one burst."""
    done = await api.wait_completed(queue, sent.ids, within)
    e2e = done.last_finished - sent.first_wall
    return {
        "accepted": len(sent.ids),
        "completed": len(done.finished),
        "errors": sent.errors,
        "submit_seconds": round(sent.submit_seconds, 3),
        "accepted_per_s": round(len(sent.ids) / sent.submit_seconds, 1),
        "e2e_seconds": round(e2e, 3),
        "e2e_tasks_per_s": round(len(done.finished) / e2e, 1),
        "rpc_ms": summary(sent.rpc_ms),
    }


async def run(api: Api, queue: str, config: BurstConfig) -> dict[str, Any]:
    """Both bursts, one after the other (the second starts once the first is done)."""
    single = await submit_single(api, queue, config.tasks, config.callers)
    single_figures = await measure(api, queue, single, config.timeout)
    batch = await submit_batches(api, queue, config.tasks, config.batch_size, config.batch_callers)
    batch_figures = await measure(api, queue, batch, config.timeout)
    return {
        "tasks": config.tasks,
        "callers": config.callers,
        "batch_size": config.batch_size,
        "batch_callers": config.batch_callers,
        "single": single_figures,
        "batch": batch_figures,
    }
