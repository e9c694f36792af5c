"""Runs the chosen workloads one after another against one server."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from dtq.bench import backlog, burst, client, fanin, latency
from dtq.bench.api import Api, BenchError
from dtq.bench.stats import ProcessProbe

WORKLOADS = ("burst", "latency", "fan-in", "backlog", "client", "client-latency")


@dataclass(frozen=True)
class BenchConfig:
    server: str
    queue: str
    workloads: tuple[str, ...]
    burst: burst.BurstConfig
    latency: latency.LatencyConfig
    fanin: fanin.FanInConfig
    backlog: backlog.BacklogConfig
    client: client.ClientConfig = field(default_factory=client.ClientConfig)
    probe: ProcessProbe = field(default_factory=lambda: ProcessProbe(None, None))
    connections: int = 16  # client connections the calls are spread over
    api_key: str | None = None  # sent on every call (a server with DTQ_AUTH=on)


async def run(config: BenchConfig) -> dict[str, Any]:
    api = Api(config.server, config.connections, config.api_key)
    results: dict[str, Any] = {
        "server": config.server,
        "queue": config.queue,
        "connections": config.connections,
        "started_at": time.time(),
    }
    try:
        results["workers"] = await api.check_workers(config.queue)
        for name in config.workloads:
            began = time.perf_counter()
            try:
                results[name] = await _one(api, config, name, results)
            except (BenchError, grpc.aio.AioRpcError) as error:
                # One workload failing (e.g. the server refusing) must not lose the others.
                results[name] = {"error": _describe(error)}
                results.setdefault("errors", []).append(name)
            results[name]["seconds"] = round(time.perf_counter() - began, 1)
    finally:
        await api.close()
    return results


async def _one(api: Api, config: BenchConfig, name: str, done: dict[str, Any]) -> dict[str, Any]:
    q = config.queue
    if name == "burst":
        return await burst.run(api, q, config.burst)
    if name == "latency":
        return await latency.run(api, q, config.latency)
    if name == "fan-in":
        return await fanin.run(api, q, config.probe, config.fanin)
    if name == "backlog":
        return await backlog.run(api, q, config.backlog, config.burst, done.get("burst"))
    if name == "client":
        return await client.run(api, q, config.client)
    if name == "client-latency":
        return await client.run_latency(api, q, config.client)
    raise ValueError(f"unknown workload {name!r}")


def _describe(error: Exception) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error)
