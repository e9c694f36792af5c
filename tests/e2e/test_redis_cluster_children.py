"""Child tasks on a Redis Cluster (3 masters, 3 replicas): the tests of
tests/e2e/test_flows.py that submit children (indexed by the same enqueue
script, in the queue's slot) and cancel a tree (its running descendants' leases
dropped and their workers told, its pending ones unindexed), against the cluster."""

from __future__ import annotations

import pytest

from dtq.dev.cluster import RedisCluster
from tests.e2e.test_flows import (  # noqa: F401 (fixtures and tests, run again here)
    client,
    test_a_retried_parent_gets_its_children_back_not_new_ones,
    test_a_tree_of_children_has_one_root,
    test_cancelling_a_parent_cancels_its_children_running_or_not,
    worker,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean", "manager")]


@pytest.fixture(scope="module")
def redis_url(redis_cluster: RedisCluster) -> str:
    """The cluster instead of the session's Redis, for the server and manager here."""
    return redis_cluster.url
