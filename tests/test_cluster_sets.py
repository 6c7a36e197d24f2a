"""Sets on a three-node cluster: concurrent SADD/SREM of the same members on every node converge
to one DEBUG DIGEST, and the outcome follows add-wins (docs/SEMANTICS.md)."""

from __future__ import annotations

import random

from tests.cluster_procs import (
    ClusterNode,
    wait_converged,
    write_concurrently,
)

MEMBERS = [f"m{i}" for i in range(12)]
KEYS = [f"set:{i}" for i in range(4)]



def writer(node: ClusterNode, seed: int, ops: int) -> None:
    rnd = random.Random(seed)
    with node.client() as c:
        pipe = c.pipeline(transaction=False)
        for _ in range(ops):
            key = rnd.choice(KEYS)
            members = rnd.sample(MEMBERS, rnd.randint(1, 3))
            roll = rnd.random()
            if roll < 0.55:
                pipe.sadd(key, *members)
            elif roll < 0.9:
                pipe.srem(key, *members)
            elif roll < 0.95:
                pipe.spop(key)
            else:
                pipe.delete(key)
            if len(pipe) >= 20:
                pipe.execute()
        pipe.execute()


def test_concurrent_sadd_srem_converge(trio: list[ClusterNode]) -> None:
    write_concurrently(trio, lambda node, seed: writer(node, seed, 600))
    wait_converged(trio)
    views = []
    for node in trio:
        with node.client() as c:
            views.append({k: sorted(c.smembers(k)) for k in KEYS})
    assert views[0] == views[1] == views[2]


def test_add_wins_over_a_concurrent_srem(trio: list[ClusterNode]) -> None:
    """Once every node has seen {x}, an SREM x on one node concurrent with an SADD x on another
    leaves x: the remove took only the add it had observed."""
    a, b, c3 = trio
    with a.client() as ca:
        ca.sadd("k", "x", "y")
    wait_converged(trio)
    with b.client() as cb, c3.client() as cc:
        # Pipelined on both sides before either hears of the other.
        pb = cb.pipeline(transaction=False)
        pb.srem("k", "x", "y")
        pc = cc.pipeline(transaction=False)
        pc.srem("k", "x")
        pc.sadd("k", "x")
        pb.execute()
        pc.execute()
    wait_converged(trio)
    for node in trio:
        with node.client() as cl:
            assert sorted(cl.smembers("k")) == [b"x"]
