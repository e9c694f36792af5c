"""The contracts of the Redis adapters (dispatch queue, index, registry,
notifications), run again against a local Redis Cluster: 3 masters with a
replica each, started once for the session (tests/conftest.py)."""

from __future__ import annotations

import pytest

from dtq.dev.cluster import RedisCluster
from tests.integration.test_redis_notify import *  # noqa: F403 (the same tests, on the cluster)
from tests.integration.test_redis_queue import *  # noqa: F403


@pytest.fixture(scope="module")
def redis_url(redis_cluster: RedisCluster) -> str:
    """The cluster instead of the session's Redis db, for every test here."""
    return redis_cluster.url
