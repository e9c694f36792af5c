"""A free Redis logical database (1-15) for one benchmark run, claimed in db 0
the way the test suite claims one, so runs and test sessions never share."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import redis

CLAIM = "dtq-test:claimed"  # the test suite's registry of Redis databases in use


@contextlib.contextmanager
def free_redis_db(base: str, owner: str) -> Iterator[str]:
    registry = redis.Redis.from_url(f"{base}/0")
    try:
        for db in range(1, 16):
            if registry.set(f"{CLAIM}:{db}", f"{owner}-{os.getpid()}", nx=True, ex=7200):
                client = redis.Redis.from_url(f"{base}/{db}")
                client.flushdb()
                try:
                    yield f"{base}/{db}"
                finally:
                    client.flushdb()
                    client.close()
                    registry.delete(f"{CLAIM}:{db}")
                return
        raise RuntimeError("no free Redis database (1-15)")
    finally:
        registry.close()
