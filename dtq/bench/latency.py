"""The latency workload: a steady rate of no-op tasks from one client.

Submit -> start and submit -> completed come from the server's own timestamps
(`created_at`, `started_at`, `finished_at`), all taken from the server's wall
clock: `created_at` when the SubmitTask call is handled (before the commit),
`started_at` when the lease is recorded (before it is pushed to the worker),
`finished_at` when the outcome is recorded. The RPC latency is measured by the
client (gRPC), and through Envoy's REST endpoint when a URL is given.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc

from dtq.bench.api import NOOP, Api
from dtq.bench.stats import summary


@dataclass(frozen=True)
class LatencyConfig:
    rate: float = 200.0  # tasks per second
    duration: float = 15.0  # seconds
    rest_url: str | None = None  # Envoy, e.g. http://127.0.0.1:8080
    rest_rate: float = 500.0
    timeout: float = 300.0


async def paced(
    rate: float, duration: float, call: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """Start `call()` at a steady `rate` for `duration` s (open loop: a slow call
    does not delay the next one), then wait for every call to end."""
    total = max(1, round(rate * duration))
    start = time.perf_counter()
    running: set[asyncio.Task[None]] = set()
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.get_running_loop().create_task(call())
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.gather(*running)


async def grpc_phase(
    api: Api, queue: str, rate: float, duration: float
) -> tuple[list[str], list[float], dict[str, int]]:
    request = api.request(queue)
    ids: list[str] = []
    rpc_ms: list[float] = []
    errors: dict[str, int] = {}

    async def one() -> None:
        began = time.perf_counter()
        try:
            reply = await api.tasks.SubmitTask(request, timeout=30)
        except grpc.aio.AioRpcError as error:
            errors[error.code().name] = errors.get(error.code().name, 0) + 1
            return
        rpc_ms.append((time.perf_counter() - began) * 1000)
        ids.append(reply.task.id)

    await paced(rate, duration, one)
    return ids, rpc_ms, errors


class RestClient:
    """POST /api/v1/tasks through Envoy, one keep-alive connection per thread."""

    def __init__(self, url: str, threads: int = 8, api_key: str | None = None) -> None:
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="bench-rest")
        self.local = threading.local()

    def post(self, body: bytes) -> tuple[int, bytes, float]:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        began = time.perf_counter()
        try:
            conn.request("POST", "/api/v1/tasks", body, self.headers)
            reply = conn.getresponse()
            data = reply.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self.local.conn = None
            return 0, b"", (time.perf_counter() - began) * 1000
        return reply.status, data, (time.perf_counter() - began) * 1000

    def close(self) -> None:
        self.pool.shutdown(wait=True)


async def rest_phase(
    url: str, queue: str, rate: float, duration: float, api_key: str | None = None
) -> tuple[list[str], list[float], dict[str, int]]:
    client = RestClient(url, api_key=api_key)
    body = json.dumps({"type": NOOP, "queue": queue}).encode()
    ids: list[str] = []
    rpc_ms: list[float] = []
    errors: dict[str, int] = {}
    loop = asyncio.get_running_loop()

    async def one() -> None:
        status, data, ms = await loop.run_in_executor(client.pool, client.post, body)
        if status != 200:
            errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
            return
        rpc_ms.append(ms)
        ids.append(json.loads(data)["task"]["id"])

    try:
        await paced(rate, duration, one)
    finally:
        client.close()
    return ids, rpc_ms, errors


async def run(api: Api, queue: str, config: LatencyConfig) -> dict[str, Any]:
    ids, rpc_ms, errors = await grpc_phase(api, queue, config.rate, config.duration)
    done = await api.wait_completed(queue, ids, config.timeout)
    figures: dict[str, Any] = {
        "rate": config.rate,
        "duration": config.duration,
        "accepted": len(ids),
        "completed": len(done.finished),
        "errors": errors,
        "submit_to_start_ms": summary(
            [(s - c) * 1000 for c, s in zip(done.created, done.started, strict=True)]
        ),
        "submit_to_completed_ms": summary(
            [(f - c) * 1000 for c, f in zip(done.created, done.finished, strict=True)]
        ),
        "rpc_ms": summary(rpc_ms),
    }
    if config.rest_url:
        rest_ids, rest_ms, rest_errors = await rest_phase(
            config.rest_url, queue, config.rest_rate, config.duration, api.api_key
        )
        rest_done = await api.wait_completed(queue, rest_ids, config.timeout)
        figures["rest"] = {
            "rate": config.rest_rate,
            "accepted": len(rest_ids),
            "completed": len(rest_done.finished),
            "errors": rest_errors,
            "rpc_ms": summary(rest_ms),
        }
    return figures
