"""RateBuckets on Redis: one token bucket per tenant (take_tokens.lua), in the
tenant's own hash slot, shared by every server replica.

Concurrent takes share one round trip (a group commit, as enqueue does): the
takes of one tenant go in one script call, served in arrival order, and
several tenants' calls in one pipeline. Alone, a take goes out at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dtq.adapters import redis_keys as keys
from dtq.adapters.group_commit import GroupCommit
from dtq.adapters.redis_conn import RedisCalls, in_pipeline

Take = tuple[str, int, float, int]  # tenant, n, rate, burst


class RedisBuckets:
    """Redis implementation of `RateBuckets`."""

    def __init__(self, calls: RedisCalls) -> None:
        self._call = calls
        self._script = calls.scripts["take_tokens"]
        self._taking = GroupCommit[Take, float](self._flush, max_inflight=1)

    async def take(self, tenant: str, n: int, rate: float, burst: int) -> float:
        return await self._taking((tenant, n, rate, burst))

    async def _flush(self, takes: list[Take]) -> list[float | BaseException]:
        groups: dict[tuple[str, float, int], list[int]] = {}
        for i, (tenant, _, rate, burst) in enumerate(takes):
            groups.setdefault((tenant, rate, burst), []).append(i)

        def args(group: tuple[str, float, int], members: Sequence[int]) -> list[Any]:
            return [repr(float(group[1])), group[2], *(takes[i][1] for i in members)]

        async def run() -> list[Any]:
            if len(groups) == 1:
                ((group, members),) = groups.items()
                key = keys.submit_bucket(group[0])
                return [await self._script(keys=[key], args=args(group, members))]
            pipe = self._call.redis.pipeline(transaction=False)
            for group, members in groups.items():
                key = keys.submit_bucket(group[0])
                await self._script(keys=[key], args=args(group, members), client=in_pipeline(pipe))
            return list(await pipe.execute())

        replies = await self._call(run)
        out: list[float | BaseException] = [0.0] * len(takes)
        for members, waits in zip(groups.values(), replies, strict=True):
            for i, wait_ms in zip(members, waits, strict=True):
                out[i] = int(wait_ms) / 1000
        return out
