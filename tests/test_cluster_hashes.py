"""Hashes across real ``gossipkv serve`` processes: concurrent writers on three nodes converge to
one DEBUG DIGEST, and writes made apart (two nodes that only meet afterwards, so every write on
one is concurrent with every write on the other) merge by the rules of docs/SEMANTICS.md.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import redis

from tests.cluster_procs import (
    ClusterNode,
    new_node,
    stop_all,
    wait_converged,
    write_concurrently,
)
from tests.servers import wait_for

HASHES = [f"hash:{i}" for i in range(3)]
FIELDS = [f"f{i}" for i in range(6)]
TALLY = "tally"  # a hash whose fields are only ever incremented



def hash_writer(node: ClusterNode, seed: int, ops: int, sums: Counter[str]) -> None:
    """HSET/HDEL/HINCRBY/HINCRBYFLOAT on shared fields, HINCRBY on the tally; sums the acked."""
    rng = random.Random(seed)
    with node.client() as c:
        for _ in range(ops):
            if rng.random() < 0.25:
                field = rng.choice(FIELDS)
                by = rng.randint(1, 9)
                c.hincrby(TALLY, field, by)
                sums[field] += by
                continue
            key, field = rng.choice(HASHES), rng.choice(FIELDS)
            op = rng.randrange(5)
            try:
                if op == 0:
                    c.hset(key, mapping={field: f"{node.name}-{rng.randrange(100)}", "x": "1"})
                elif op == 1:
                    c.hdel(key, field, rng.choice(FIELDS))
                elif op == 2:
                    c.hincrby(key, field, rng.randint(-5, 5))
                elif op == 3:
                    c.hincrbyfloat(key, field, 0.25)
                else:
                    c.hset(key, field, rng.randrange(1000))
            except redis.ResponseError as e:  # an increment of a field holding a name
                assert "hash value is not" in str(e)


def test_concurrent_hash_writers_converge(trio: list[ClusterNode]) -> None:
    sums: list[Counter[str]] = [Counter() for _ in trio]
    write_concurrently(trio, lambda node, seed: hash_writer(node, seed, 600, sums[seed]))
    for node in trio:
        with node.client() as c:
            assert c.execute_command("WAIT", 2, 20000) == 2  # type: ignore[no-untyped-call]
    wait_converged(trio)
    expected = sum(sums, Counter())
    contents = []
    for node in trio:
        with node.client(decode_responses=True) as c:
            # Concurrent increments all count: the tally is the sum of every acknowledged one.
            assert c.hgetall(TALLY) == {f: str(n) for f, n in expected.items()}, node.name
            contents.append({k: c.hgetall(k) for k in HASHES})
    assert contents[0] == contents[1] == contents[2]


def test_writes_made_apart_merge_by_the_rules(tmp_path: Path) -> None:
    a, b = new_node(tmp_path, 0), new_node(tmp_path, 1)
    nodes = [a, b]
    try:
        a.start()
        b.start()
        with a.client() as ca:
            ca.hset("h", mapping={"lww": "from-a", "only-a": "1", "kept": "from-a"})
            ca.hincrby("h", "n", 3)
            ca.hincrby("h", "c", 10)
            written = time.time_ns() // 1_000_000
        # B's next write must carry a later HLC than A's: let the wall clock pass A's stamp.
        wait_for(lambda: time.time_ns() // 1_000_000 > written + 1, 5, "the clock to advance")
        with b.client() as cb:
            cb.hset("h", mapping={"lww": "from-b", "only-b": "1", "kept": "from-b", "gone": "x"})
            cb.hincrby("h", "n", 5)
            cb.hincrbyfloat("h", "n", 0.5)
            cb.hincrby("h", "c", 1)
            # B observed only its own writes of these fields: A's stay.
            assert cb.hdel("h", "kept", "gone", "c") == 3
            reply = cb.execute_command("MEET", "127.0.0.1", str(a.port))  # type: ignore[no-untyped-call]
            assert reply == b"OK"
        wait_converged(nodes)
        for node in nodes:
            with node.client(decode_responses=True) as c:
                got = c.hgetall("h")
                assert got == {
                    "lww": "from-b",  # the later write by (HLC, node id)
                    "only-a": "1",
                    "only-b": "1",
                    "kept": "from-a",  # HDEL on B never saw A's write: add wins
                    "n": "8.5",  # concurrent increments all count
                    "c": "10",  # HDEL reset only the increment it observed
                }, node.name
                assert Decimal(got["n"]) == Decimal(3) + 5 + Decimal("0.5")
    finally:
        stop_all(nodes)
