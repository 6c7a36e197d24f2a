"""Sorted sets across real ``gossipkv serve`` processes: concurrent writers on three nodes converge
to one DEBUG DIGEST, and writes made apart (two nodes that only meet afterwards, so every write on
one is concurrent with every write on the other) merge by the rules of docs/SEMANTICS.md.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

from tests.cluster_procs import (
    ClusterNode,
    new_node,
    stop_all,
    wait_converged,
    write_concurrently,
)
from tests.servers import wait_for

ZSETS = [f"zset:{i}" for i in range(3)]
MEMBERS = [f"m{i}" for i in range(6)]
BOARD = "board"  # a zset whose members are only ever incremented



def zset_writer(node: ClusterNode, seed: int, ops: int, sums: Counter[str]) -> None:
    """ZADD/ZINCRBY/ZREM/ZPOPMIN/ZREMRANGEBYRANK on shared members, ZINCRBY on the board."""
    rng = random.Random(seed)
    with node.client() as c:
        for _ in range(ops):
            if rng.random() < 0.25:
                member = rng.choice(MEMBERS)
                by = rng.randint(1, 9)
                c.zincrby(BOARD, by, member)
                sums[member] += by
                continue
            key, member = rng.choice(ZSETS), rng.choice(MEMBERS)
            op = rng.randrange(6)
            if op == 0:
                c.zadd(key, {member: rng.randrange(100), "x": 1})
            elif op == 1:
                c.zrem(key, member, rng.choice(MEMBERS))
            elif op == 2:
                c.zincrby(key, rng.randint(-5, 5), member)
            elif op == 3:
                c.zadd(key, {member: rng.randrange(100)}, gt=True)
            elif op == 4:
                c.zpopmin(key)
            else:
                c.zremrangebyrank(key, 0, 0)


def test_concurrent_zset_writers_converge(trio: list[ClusterNode]) -> None:
    sums: list[Counter[str]] = [Counter() for _ in trio]
    write_concurrently(trio, lambda node, seed: zset_writer(node, seed, 600, sums[seed]))
    for node in trio:
        with node.client() as c:
            assert c.execute_command("WAIT", 2, 20000) == 2  # type: ignore[no-untyped-call]
    wait_converged(trio)
    expected = sum(sums, Counter())
    contents = []
    for node in trio:
        with node.client(decode_responses=True) as c:
            # Concurrent increments all count: the board is the sum of every acknowledged one.
            board = c.zrange(BOARD, 0, -1, withscores=True)
            assert {m: int(score) for m, score in board} == dict(expected), node.name
            contents.append({k: c.zrange(k, 0, -1, withscores=True) for k in ZSETS})
    assert contents[0] == contents[1] == contents[2]


def test_writes_made_apart_merge_by_the_rules(tmp_path: Path) -> None:
    a, b = new_node(tmp_path, 0), new_node(tmp_path, 1)
    nodes = [a, b]
    try:
        a.start()
        b.start()
        with a.client() as ca:
            ca.zadd("z", {"lww": 1, "kept": 5, "only-a": 1})
            ca.zincrby("z", 4, "n")
            written = time.time_ns() // 1_000_000
        # B's next write must carry a later HLC than A's: let the wall clock pass A's stamp.
        wait_for(lambda: time.time_ns() // 1_000_000 > written + 1, 5, "the clock to advance")
        with b.client() as cb:
            cb.zadd("z", {"lww": 2, "kept": 6, "only-b": 7})
            cb.zincrby("z", 5, "n")
            cb.zincrby("z", 0.5, "n")
            # B observed only its own write of "kept": A's stays.
            assert cb.zrem("z", "kept") == 1
            reply = cb.execute_command("MEET", "127.0.0.1", str(a.port))  # type: ignore[no-untyped-call]
            assert reply == b"OK"
        wait_converged(nodes)
        for node in nodes:
            with node.client(decode_responses=True) as c:
                assert c.zrange("z", 0, -1, withscores=True) == [
                    ("only-a", 1.0),
                    ("lww", 2.0),  # the later ZADD by (HLC, node id)
                    ("kept", 5.0),  # ZREM on B never saw A's ZADD: add wins
                    ("only-b", 7.0),
                    ("n", 9.5),  # concurrent increments all count
                ], node.name
    finally:
        stop_all(nodes)
