"""The contracts of the Redis adapters (dispatch queue, index, registry,
notifications), run again against a local Redis Cluster: 3 masters with a
replica each, started once for the session (tests/conftest.py)."""

from __future__ import annotations

import pytest

from dtq.dev.cluster import RedisCluster
from tests.integration.helpers import async_test, ready, redis_queue, token
from tests.integration.test_redis_notify import *  # noqa: F403 (the same tests, on the cluster)
from tests.integration.test_redis_queue import *  # noqa: F403


@pytest.fixture(scope="module")
def redis_url(redis_cluster: RedisCluster) -> str:
    """The cluster instead of the session's Redis db, for every test here."""
    return redis_cluster.url


@async_test
async def test_pipelines_reload_scripts_a_node_lost(redis_url: str) -> None:
    """A promoted replica or a restarted node has no scripts: a cluster
    pipeline then fails with NOSCRIPT, and the adapter loads them and runs it again."""
    async with redis_queue(redis_url) as q:
        await q.redis.script_flush()  # on every master
        first, second = ready(queue="a"), ready(queue="b")
        await q.enqueue([first, second])
        popped = [
            r.id for queue in ("a", "b") for r in (await q.lease(queue, ("t",), [token()], 30))[0]
        ]
    assert popped == [first.id, second.id]
