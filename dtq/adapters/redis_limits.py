"""RateBuckets on Redis: one token bucket per tenant (take_tokens.lua), in the
tenant's own hash slot, shared by every server replica."""

from __future__ import annotations

from dtq.adapters import redis_keys as keys
from dtq.adapters.redis_conn import RedisCalls


class RedisBuckets:
    """Redis implementation of `RateBuckets`."""

    def __init__(self, calls: RedisCalls) -> None:
        self._call = calls
        self._script = calls.scripts["take_tokens"]

    async def take(self, tenant: str, n: int, rate: float, burst: int) -> float:
        key = keys.submit_bucket(tenant)
        args: list[int | str] = [n, repr(float(rate)), burst]
        taken, wait_ms = await self._call(lambda: self._script(keys=[key], args=args))
        return 0.0 if int(taken) else int(wait_ms) / 1000
