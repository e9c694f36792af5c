"""The client workloads: application threads calling `dtq.Client.submit()` one
task at a time, as a web application's request handlers would.

`client`: N tasks from `threads` threads sharing one Client (coalescing on or
off), as fast as they go: end-to-end tasks/s, each submit's time, submit->start.
`client-latency`: one thread submitting at a steady `rate` (sequentially, like
the peers' benchmark): each submit's time and submit->start.

Submit -> start comes from the server's timestamps (see `dtq.bench.latency`).
A warm-up submit opens the connections first; its task is not counted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dtq.bench.api import NOOP, Api, Done
from dtq.bench.stats import summary
from dtq.client import Client, DtqClientError


@dataclass(frozen=True)
class ClientConfig:
    tasks: int = 20_000
    threads: int = 64
    coalesce: bool = True
    connections: int = 1  # the Client's channels to the server
    rate: float = 200.0  # client-latency: submits per second
    duration: float = 15.0  # client-latency: seconds
    timeout: float = 600.0


@dataclass
class _Sent:
    ids: list[str] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    calls: int = 0  # coalesced calls made for the submissions (0: not coalesced)
    taken: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, client: Client, queue: str) -> None:
        began = time.perf_counter()
        try:
            handle = client.submit(NOOP, queue=queue)
        except DtqClientError as error:
            with self.lock:
                self.errors[error.code.name] = self.errors.get(error.code.name, 0) + 1
            return
        ms = (time.perf_counter() - began) * 1000
        with self.lock:
            self.ids.append(handle.id)
            self.submit_ms.append(ms)


def _threads(client: Client, queue: str, n: int, threads: int, sent: _Sent) -> float:
    """n submits from `threads` threads, each one at a time; seconds taken."""
    counter = iter(range(n))
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            sent.submit(client, queue)

    began = time.perf_counter()
    with ThreadPoolExecutor(threads, thread_name_prefix="bench-client") as pool:
        for f in [pool.submit(loop) for _ in range(threads)]:
            f.result()
    return time.perf_counter() - began


def _paced(client: Client, queue: str, rate: float, duration: float, sent: _Sent) -> None:
    total, began = max(1, round(rate * duration)), time.perf_counter()
    for i in range(total):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent.submit(client, queue)


def _client(api: Api, config: ClientConfig) -> Client:
    return Client(
        api.address,
        coalesce=config.coalesce,
        connections=config.connections,
        timeout=60,
        api_key=api.api_key,
    )


async def _timed(api: Api, config: ClientConfig, queue: str, drive: Callable[..., Any]) -> Any:
    def run() -> tuple[_Sent, float, float]:
        with _client(api, config) as client:
            client.submit(NOOP, queue=queue)  # warm-up: connections open
            sent = _Sent()
            first_wall = time.time()
            seconds = drive(client, sent)
            coalescer = client._coalescer  # how many calls the submits took
            if coalescer is not None:
                sent.calls, sent.taken = coalescer.batches.calls - 1, coalescer.batches.taken - 1
            return sent, first_wall, seconds

    return await asyncio.to_thread(run)


def _figures(sent: _Sent, done: Done) -> dict[str, Any]:
    return {
        "accepted": len(sent.ids),
        "completed": len(done.finished),
        "errors": sent.errors,
        "tasks_per_call": round(sent.taken / sent.calls, 1) if sent.calls else 1.0,
        "submit_ms": summary(sent.submit_ms),
        "submit_to_start_ms": summary(
            [(s - c) * 1000 for c, s in zip(done.created, done.started, strict=True)]
        ),
    }


def _settings(config: ClientConfig) -> dict[str, Any]:
    return {"coalesce": config.coalesce, "connections": config.connections}


async def run(api: Api, queue: str, config: ClientConfig) -> dict[str, Any]:
    """The `client` workload: N tasks from `threads` threads."""
    sent, first_wall, seconds = await _timed(
        api,
        config,
        queue,
        lambda client, sent: _threads(client, queue, config.tasks, config.threads, sent),
    )
    done = await api.wait_completed(queue, sent.ids, config.timeout)
    e2e = done.last_finished - first_wall
    return {
        "tasks": config.tasks,
        "threads": config.threads,
        **_settings(config),
        **_figures(sent, done),
        "accepted_per_s": round(len(sent.ids) / seconds, 1),
        "e2e_seconds": round(e2e, 3),
        "e2e_tasks_per_s": round(len(done.finished) / e2e, 1),
    }


async def run_latency(api: Api, queue: str, config: ClientConfig) -> dict[str, Any]:
    """The `client-latency` workload: one thread at a steady rate."""
    sent, _, _ = await _timed(
        api,
        config,
        queue,
        lambda client, sent: _paced(client, queue, config.rate, config.duration, sent),
    )
    done = await api.wait_completed(queue, sent.ids, config.timeout)
    return {"rate": config.rate, "duration": config.duration, **_settings(config)} | _figures(
        sent, done
    )
