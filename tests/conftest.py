"""Shared fixtures: one gossipkv node and one redis-server per test session, both real processes.

Tests that need an empty dataset call FLUSHALL themselves (``gkv_client``/``redis_client`` do).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.cluster_procs import ClusterNode, start_cluster, stop_all
from tests.servers import ServerProcess, start_gossipkv, start_redis


@pytest.fixture(scope="session")
def gkv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_gossipkv(tmp_path_factory.mktemp("gkv"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_ref(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A second redis-server: what Redis answers twice is deterministic enough to compare."""
    server = start_redis(tmp_path_factory.mktemp("redis-twin"))
    yield server
    server.stop()


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def gkv_client(request: pytest.FixtureRequest, gkv: ServerProcess) -> Iterator[redis.Redis]:
    """redis-py against gossipkv, in RESP2 and RESP3, on an empty dataset."""
    client = redis.Redis(port=gkv.port, protocol=request.param, socket_timeout=10)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def redis_client(redis_ref: ServerProcess) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_ref.port, socket_timeout=10)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[list[ClusterNode]]:
    """Three real nodes started from the CLI, formed into one cluster (local profile)."""
    nodes = start_cluster(tmp_path, 3)
    yield nodes
    stop_all(nodes)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running; excluded from nothing by default")


