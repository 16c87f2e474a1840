"""A 6-node Redis Cluster (3 primaries, 3 replicas) per test process, flushed for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_cluster import Cluster, start_cluster
from tracker.settings import Settings


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(redis_cluster: Cluster) -> Cluster:
    redis_cluster.wait_healthy()  # a failover test may have left it promoting a replica
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture
def cluster_settings(settings: Settings, cluster: Cluster) -> Settings:
    """Production settings on the cluster: three click shards and three conversion shards."""
    return settings.with_(redis_url=cluster.url, stream_shards=3, conversion_shards=3)
