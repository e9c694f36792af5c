"""How every Redis adapter reaches Redis: one client, one circuit breaker,
the Lua scripts.

Multi-step work is one Lua script (adapters/lua/), loaded once and called by
SHA; all keys go in KEYS, all values in ARGV. Only Redis 6.2 commands are used.

A `redis+cluster://host:port,...` URL gives a Redis Cluster client
(`RedisCluster`: it learns the slots from the seeds and follows MOVED and
failovers) behind the same adapters. Every script's keys share one `{queue}`
hash tag, so each script runs on one node; pipelines are split per node by
the client (none is a MULTI transaction).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeAlias, TypeVar
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster

from dtq.adapters.breaker import CircuitBreaker
from dtq.domain.errors import DtqError

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_CONNECTIONS = 100
SCRIPTS = (
    "enqueue",
    "join_turns",
    "lease",
    "extend",
    "claim_expired",
    "end_leases",
    "restore_leases",
    "take_tokens",
    "clock",
)


# Either client: they share the commands dtq uses (and RedisCluster routes each).
Client: TypeAlias = aioredis.Redis | RedisCluster
CLUSTER_SCHEME = "redis+cluster://"


def connect(dsn: str, timeout: float) -> Client:
    """A client whose pool waits (up to `timeout`) for a free connection when
    all are busy, instead of failing at once (a burst of worker
    registrations used to get UNAVAILABLE: MaxConnectionsError)."""
    if dsn.startswith(CLUSTER_SCHEME):
        return connect_cluster(dsn, timeout)
    pool = aioredis.BlockingConnectionPool.from_url(
        dsn,
        max_connections=MAX_CONNECTIONS,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        decode_responses=False,
    )
    return aioredis.Redis(connection_pool=pool)


def connect_cluster(dsn: str, timeout: float) -> RedisCluster:
    """A Redis Cluster client from `redis+cluster://[user:password@]h:p,h:p`."""
    rest = dsn[len(CLUSTER_SCHEME) :]
    auth, _, seeds = rest.rpartition("@")
    user, _, password = auth.partition(":") if auth else ("", "", "")
    nodes = [_node(seed) for seed in seeds.split("/", 1)[0].split(",") if seed]
    return RedisCluster(
        startup_nodes=nodes,
        username=unquote(user) or None,
        password=unquote(password) or None,
        max_connections=MAX_CONNECTIONS,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        require_full_coverage=False,  # one shard's failover stalls only its slots
        decode_responses=False,
    )


def _node(seed: str) -> ClusterNode:
    parts = urlsplit(f"//{seed}")
    return ClusterNode(parts.hostname or "localhost", parts.port or 6379)


# Redis, or the node of a slot, out of reach; in a cluster also a failover
# under way (CLUSTERDOWN, TRYAGAIN) or slots the client cannot place yet.
DOWN = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    OSError,
    rexc.ClusterDownError,
    rexc.TryAgainError,
    rexc.ClusterError,
    rexc.SlotNotCoveredError,
    rexc.RedisClusterUnreachableError,
)


class Batch:
    """A pipeline (not a transaction) that may PUBLISH. On one Redis the
    PUBLISH goes in the pipeline, as before. A cluster pipeline refuses it, so
    there it is sent once the pipeline ran (after the writes, as before), in
    the background: a cluster sends PUBLISH to one node, and while that node
    fails over the message would hold up the caller (a settle, and the
    heartbeats queued behind it) for seconds. Pub/sub may drop messages
    anyway: listeners re-check the truth when they reconnect."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.pipe: Any = client.pipeline(transaction=False)
        self._later: list[tuple[str, bytes]] = []

    def publish(self, channel: str, message: bytes) -> None:
        if isinstance(self.client, RedisCluster):
            self._later.append((channel, message))
        else:
            self.pipe.publish(channel, message)

    async def execute(self) -> list[Any]:
        out = list(await self.pipe.execute())
        if self._later:
            task = asyncio.get_running_loop().create_task(self._publish(self._later))
            _PUBLISHING.add(task)
            task.add_done_callback(_PUBLISHING.discard)
        return out

    async def _publish(self, messages: list[tuple[str, bytes]]) -> None:
        for channel, message in messages:
            try:
                await self.client.publish(channel, message)
            except rexc.RedisError as error:
                log.debug("publish_dropped", extra={"channel": channel, "error": repr(error)})


_PUBLISHING: set[asyncio.Task[None]] = set()  # strong references until done


def in_pipeline(pipe: object) -> Any:
    """A pipeline, as the `client` of a script call (a cluster pipeline too)."""
    return pipe


def _script(name: str) -> str:
    return resources.files("dtq.adapters").joinpath(f"lua/{name}.lua").read_text()


class RedisCalls:
    """Runs Redis operations: fails fast while Redis is known to be down, and
    turns losing Redis into UNAVAILABLE (naming no Python class)."""

    def __init__(self, client: Client) -> None:
        self.redis = client
        self.scripts = {name: client.register_script(_script(name)) for name in SCRIPTS}
        self.breaker = CircuitBreaker("redis")

    async def __call__(self, op: Callable[[], Awaitable[T]]) -> T:
        self.breaker.before()
        try:
            try:
                result = await op()
            except rexc.NoScriptError:
                # Only a cluster pipeline gets this (plain pipelines and calls
                # load scripts themselves): a promoted replica or a restarted
                # node has no scripts. Load them on every master, run again
                # (dtq's pipelines may run twice: each command in them may).
                await self.load_scripts()
                result = await op()
        except DOWN as error:
            self.breaker.failure()
            # The reply names no Python class; the cause stays chained for the log.
            raise DtqError.unavailable("redis", "Redis is unreachable") from error
        except rexc.ResponseError as error:
            if any(word in str(error) for word in ("LOADING", "MASTERDOWN", "CLUSTERDOWN")):
                self.breaker.failure()
                raise DtqError.unavailable("redis", "Redis is loading its data") from error
            self.breaker.release()
            raise
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.success()
        return result

    async def load_scripts(self) -> None:
        for script in self.scripts.values():
            await self.redis.script_load(script.script)

    async def ping(self) -> None:
        await self(self.redis.ping)


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
