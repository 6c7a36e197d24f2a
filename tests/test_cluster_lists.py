"""Lists across a three-node cluster of real processes: a BLPOP on one node is woken by a push
replicated from another, and concurrent LPUSH/RPUSH/LINSERT/LPOP on all three nodes converge to
the same DEBUG DIGEST, keeping every concurrent push (docs/SEMANTICS.md, lists)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster_procs import (
    ClusterNode,
    start_cluster,
    stop_all,
    wait_converged,
    write_concurrently,
)
from tests.servers import wait_for


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ClusterNode]]:
    nodes = start_cluster(tmp_path_factory.mktemp("lists"), 3)
    yield nodes
    stop_all(nodes)


def test_blpop_on_one_node_is_woken_by_a_push_on_another(trio: list[ClusterNode]) -> None:
    a, b, _ = trio
    out: list[Any] = []
    with b.client() as waiter, b.client() as watcher, a.client() as pusher:
        t = threading.Thread(target=lambda: out.append(waiter.blpop(["jobs"], timeout=0)),
                             daemon=True)
        t.start()
        wait_for(lambda: int(watcher.info("clients")["blocked_clients"]) == 1,
                 what="the client on B to block")
        pusher.rpush("jobs", "from-a")
        t.join(20)
        assert out == [(b"jobs", b"from-a")]
    wait_converged(trio)
    with a.client() as c:
        assert c.exists("jobs") == 0  # B's pop replicated back to A


def test_concurrent_writers_converge_and_keep_every_push(trio: list[ClusterNode]) -> None:
    with trio[0].client() as c:
        c.rpush("shared", "base")
    wait_converged(trio)
    barrier = threading.Barrier(3)

    def writer(node: ClusterNode, tag: str) -> None:
        with node.client() as c:
            barrier.wait()
            for i in range(30):
                c.lpush("shared", f"{tag}-l{i}")
                c.rpush("shared", f"{tag}-r{i}")
                c.linsert("shared", "AFTER", "base", f"{tag}-i{i}")
                if i % 3 == 0:
                    c.lpop("shared")

    write_concurrently(trio, lambda n, _seed: writer(n, n.name), timeout=60)
    wait_converged(trio)
    lists = []
    for n in trio:
        with n.client() as c:
            lists.append(c.lrange("shared", 0, -1))
    assert lists[0] == lists[1] == lists[2]
    items = set(lists[0])
    for n in trio:  # every RPUSH and LINSERT survives (pops take from the left end)
        assert {f"{n.name}-r{i}".encode() for i in range(30)} <= items
        assert {f"{n.name}-i{i}".encode() for i in range(30)} <= items
    # Each node pushed 90 and popped 10 it saw; concurrent pops may take the same element.
    assert 3 * 90 + 1 - 30 <= len(lists[0]) <= 3 * 90 + 1
