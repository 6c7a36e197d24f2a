"""The anti-entropy tree kept by Keyspace.merge, on real commands and real deltas.

Nodes are keyspaces driven through ``Session.execute``; each node's client writes are captured
on the wire (msgpack) and delivered to the others in random interleavings, so states carry
concurrent writes, removal contexts, expiries, counters and collections. After every step the
incremental tree must equal one computed from scratch from the states; replicas holding equal
states must have equal roots whatever order they merged the deltas in; and a walk down the tree
from the root must find exactly the keys that differ.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gossipkv.commands.all  # noqa: F401  (registers every command)
from gossipkv.commands.session import Server, Session
from gossipkv.crdt.hlc import HLC
from gossipkv.store.buckets import BUCKET_COUNT, bucket_of
from gossipkv.store.entry import Entry
from gossipkv.store.keyspace import Keyspace
from gossipkv.store.merkle import DEPTH, FANOUT, entry_hash

EPOCH_MS = 1_700_000_000_000
KEYS = [b"k1", b"k2", b"k3", b"h", b"s"]
VALUES = [b"v", b"10", b"-5", b"x y", b""]


class FakeTime:
    def __init__(self) -> None:
        self.ms = EPOCH_MS

    def __call__(self) -> int:
        return self.ms


class Node:
    """A keyspace with a session; its client writes are kept as wire deltas."""

    def __init__(self, name: str, time: FakeTime) -> None:
        self.wire: list[tuple[bytes, bytes]] = []
        self.keyspace = Keyspace(name, HLC(wall_ms=time), self._capture)
        self.keyspace.now_ms = time
        self.session = Session(Server(self.keyspace))
        self.delivered: dict[str, int] = {}  # peer name -> how many of our deltas it merged

    def _capture(self, key: bytes, delta: Entry) -> None:
        self.wire.append((key, msgpack.packb(delta.encode())))


def decode(wire: bytes) -> Entry:
    return Entry.decode(msgpack.unpackb(wire))


def scratch_leaves(ks: Keyspace) -> list[int]:
    """The leaves computed from nothing but the states."""
    leaves = [0] * BUCKET_COUNT
    for states in (ks.live, ks.tombstones):
        for key, e in states.items():
            leaves[bucket_of(key)] ^= entry_hash(key, e)
    return leaves


def check_tree(ks: Keyspace) -> None:
    """The incremental tree, cached hashes and per-leaf indexes equal what the states give."""
    assert ks.merkle.leaves == scratch_leaves(ks)
    for index, states in ((ks.buckets, ks.live), (ks.tomb_buckets, ks.tombstones)):
        assert len(index) == len(states)
        for key in states:
            assert key in index.sets[bucket_of(key)]
    root = 0
    for h in ks.merkle.leaves:
        root ^= h
    assert ks.merkle.root() == root
    for key in [*ks.live, *ks.tombstones]:
        assert ks.entry_hash(key) == entry_hash(key, ks.state_of(key))  # type: ignore[arg-type]


def state(ks: Keyspace) -> tuple[dict[bytes, Any], dict[bytes, Any]]:
    return (
        {k: e.encode() for k, e in sorted(ks.live.items())},
        {k: e.encode() for k, e in sorted(ks.tombstones.items())},
    )


# -- the command mix ----------------------------------------------------------------------------

keys = st.sampled_from(KEYS)
values = st.sampled_from(VALUES)
small = st.integers(1, 40).map(lambda n: b"%d" % n)
members = st.sampled_from([b"a", b"b", b"c"])


def cmd(*parts: Any) -> Any:
    return st.tuples(*[p if isinstance(p, st.SearchStrategy) else st.just(p) for p in parts]).map(
        lambda t: [x if isinstance(x, bytes) else str(x).encode() for x in t]
    )


commands = st.one_of(
    cmd(b"SET", keys, values),
    cmd(b"SET", keys, values, b"PX", small),
    cmd(b"INCRBY", keys, st.integers(-9, 9)),
    cmd(st.sampled_from([b"DEL", b"GETDEL"]), keys),
    cmd(b"PEXPIRE", keys, small),
    cmd(b"PERSIST", keys),
    cmd(b"HSET", keys, members, values),
    cmd(b"HDEL", keys, members),
    cmd(b"HINCRBY", keys, members, st.integers(-3, 3)),
    cmd(b"SADD", keys, members),
    cmd(b"SREM", keys, members),
    cmd(b"ZADD", keys, st.integers(0, 5), members),
    cmd(b"ZREM", keys, members),
    cmd(b"RPUSH", keys, members),
    cmd(b"LPOP", keys),
    cmd(b"FLUSHALL"),
)

# A step: (node index, command) runs a command; (from, to, count) delivers deltas.
steps = st.one_of(
    st.tuples(st.integers(0, 2), commands),
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(1, 6)),
    st.tuples(st.just(-1), st.integers(1, 3000)),  # the clock moves
)


def run(mix: list[Any], time: FakeTime, check_every_step: bool = True) -> list[Node]:
    nodes = [Node(f"node-{c}", time) for c in "abc"]
    for step in mix:
        if step[0] == -1:
            time.ms += step[1]
            continue
        if len(step) == 2:
            node = nodes[step[0]]
            node.session.execute(step[1])
            touched = [node]
        else:
            src, dst, count = nodes[step[0]], nodes[step[1]], step[2]
            if src is dst:
                continue
            name = dst.keyspace.node
            start = src.delivered.get(name, 0)
            for key, wire in src.wire[start : start + count]:
                dst.keyspace.merge(key, decode(wire))
            src.delivered[name] = min(len(src.wire), start + count)
            touched = [dst]
        if check_every_step:
            for node in touched:
                check_tree(node.keyspace)
    return nodes


def deliver_all(nodes: list[Node]) -> None:
    for src in nodes:
        for dst in nodes:
            if src is not dst:
                for key, wire in src.wire[src.delivered.get(dst.keyspace.node, 0) :]:
                    dst.keyspace.merge(key, decode(wire))
                src.delivered[dst.keyspace.node] = len(src.wire)


@settings(deadline=None, max_examples=150)
@given(st.lists(steps, min_size=5, max_size=50), st.randoms())
def test_incremental_tree_equals_a_rebuild_and_orders_agree(
    mix: list[Any], rnd: random.Random
) -> None:
    time = FakeTime()
    nodes = run(mix, time)
    deliver_all(nodes)
    for node in nodes:
        check_tree(node.keyspace)
    # Replicas converge; their roots agree, and with the states.
    first = nodes[0].keyspace
    for node in nodes[1:]:
        assert state(node.keyspace) == state(first)
        assert node.keyspace.merkle.root() == first.merkle.root()
    # Two fresh replicas fed every delta in different orders, with duplicates.
    wire = [item for node in nodes for item in node.wire]
    roots = set()
    for name in ("x", "y"):
        order = wire + rnd.sample(wire, len(wire) // 3)
        rnd.shuffle(order)
        fresh = Keyspace(name, HLC(wall_ms=time))
        fresh.now_ms = time
        for key, delta in order:
            fresh.merge(key, decode(delta))
        check_tree(fresh)
        assert state(fresh) == state(first)
        roots.add(fresh.merkle.root())
    assert roots == {first.merkle.root()}


@settings(deadline=None, max_examples=40)
@given(st.lists(steps, min_size=20, max_size=80))
def test_a_tree_is_equal_only_when_states_are(mix: list[Any]) -> None:
    """Replicas that have not merged everything yet differ in root exactly where their
    states differ, and the walk down the tree names every differing key."""
    nodes = run(mix, FakeTime(), check_every_step=False)
    a, b = nodes[0].keyspace, nodes[1].keyspace
    sa, sb = state(a), state(b)
    differing = {
        k
        for part in (0, 1)
        for k in set(sa[part]) | set(sb[part])
        if (sa[0] | sa[1]).get(k) != (sb[0] | sb[1]).get(k)
    }
    found, _ = walk(a, b)
    assert found == differing
    assert (a.merkle.root() == b.merkle.root()) == (not differing)


def walk(a: Keyspace, b: Keyspace) -> tuple[set[bytes], int]:
    """The anti-entropy descent: children only where hashes differ, then the leaves' pairs.
    The keys whose entry hashes differ, and how many inner nodes were compared."""
    found: set[bytes] = set()
    compared = 0
    if a.merkle.root() == b.merkle.root():
        return found, compared
    frontier = [(0, 0)]
    while frontier:
        level, index = frontier.pop()
        compared += 1
        ca, cb = a.merkle.children(level, index), b.merkle.children(level, index)
        for i, (x, y) in enumerate(zip(ca, cb, strict=True)):
            if x == y:
                continue
            child = index * FANOUT + i
            if level + 1 < DEPTH:
                frontier.append((level + 1, child))
            else:
                pa, pb = dict(a.leaf_pairs(child)), dict(b.leaf_pairs(child))
                found |= {k for k in pa.keys() | pb.keys() if pa.get(k) != pb.get(k)}
    return found, compared


def populated(name: str, n: int, time: FakeTime) -> tuple[Keyspace, Session]:
    ks = Keyspace(name, HLC(wall_ms=time))
    ks.now_ms = time
    for i in range(n):
        ks.merge(b"key:%d" % i, Entry(EPOCH_MS << 16 | i, "node-a", b"v%d" % i))
    return ks, Session(Server(ks))


def test_walk_finds_the_few_differing_keys_among_many() -> None:
    time = FakeTime()
    a, sa = populated("node-a", 20_000, time)
    b, sb = populated("node-b", 20_000, time)
    assert a.merkle.root() == b.merkle.root() and a.merkle.root() != 0
    assert walk(a, b) == (set(), 0)
    sa.execute([b"SET", b"key:17", b"changed"])  # a newer value on one side
    sb.execute([b"DEL", b"key:4242"])  # a tombstone on the other
    sb.execute([b"HSET", b"only-b", b"f", b"v"])  # a key one side never saw
    found, compared = walk(a, b)
    assert found == {b"key:17", b"key:4242", b"only-b"}
    # Only the paths to three leaves were descended: root, and at most 3 per level below.
    assert compared <= 1 + 3 * (DEPTH - 1)
    assert a.entry_hash(b"only-b") == 0 and a.state_of(b"only-b") is None
    gone = b.state_of(b"key:4242")
    assert gone is not None and not gone.alive()
    assert b.entry_hash(b"key:4242") == entry_hash(b"key:4242", gone) != 0
    # Shipping the full states both ways, through the one merge path, heals the difference.
    for key in found:
        for src, dst in ((a, b), (b, a)):
            e = src.state_of(key)
            if e is not None:
                dst.merge(key, decode(msgpack.packb(e.encode())))
    assert a.merkle.root() == b.merkle.root()
    assert walk(a, b) == (set(), 0)


def test_leaf_pairs_list_live_and_tombstoned_keys_of_the_leaf_only() -> None:
    time = FakeTime()
    ks, s = populated("node-a", 3000, time)
    s.execute([b"DEL", b"key:5"])
    leaf = ks.merkle.leaf_of(b"key:5")
    assert leaf == bucket_of(b"key:5")
    pairs = dict(ks.leaf_pairs(leaf))
    expected = {k for k in [*ks.live, *ks.tombstones] if bucket_of(k) == leaf}
    assert set(pairs) == expected and b"key:5" in pairs
    assert all(pairs[k] == ks.entry_hash(k) for k in pairs)
    assert ks.tomb_buckets.sets[leaf] == {b"key:5"} and len(ks.tomb_buckets) == 1
    # Coming back to life moves it back to the live index.
    s.execute([b"SET", b"key:5", b"again"])
    assert len(ks.tomb_buckets) == 0 and b"key:5" in ks.buckets.sets[leaf]
    check_tree(ks)


def test_children_shape_and_bounds() -> None:
    ks, _ = populated("node-a", 500, FakeTime())
    m = ks.merkle
    assert (m.depth, m.fanout) == (3, 16) and FANOUT**DEPTH == BUCKET_COUNT
    level1 = m.children(0, 0)
    assert len(level1) == FANOUT
    for level in range(DEPTH):
        for index in (0, FANOUT**level - 1):
            kids = m.children(level, index)
            x = 0
            for h in kids:
                x ^= h
            assert x == m.node(level, index)
    assert m.children(2, 255) == m.leaves[-16:]
    with pytest.raises(IndexError):
        m.children(3, 0)
    with pytest.raises(IndexError):
        m.children(1, 16)


def test_a_write_after_reading_the_tree_shows_in_the_next_read() -> None:
    ks, s = populated("node-a", 100, FakeTime())
    before = (ks.merkle.root(), ks.merkle.children(0, 0))
    s.execute([b"SET", b"key:1", b"new"])
    after = (ks.merkle.root(), ks.merkle.children(0, 0))
    assert before[0] != after[0]
    assert sum(x != y for x, y in zip(before[1], after[1], strict=True)) == 1
    check_tree(ks)


def test_collection_writes_reach_their_leaf_at_the_next_read() -> None:
    """A collection write leaves its leaf as it was until the tree is read; a key's own
    entry hash is its state's at once; GC and forgetting in between keep the tree right."""
    time = FakeTime()
    ks, s = populated("node-a", 200, time)
    for i in range(50):
        s.execute([b"ZADD", b"z", b"%d" % i, b"m%d" % i])
        s.execute([b"SADD", b"s", b"m%d" % i])
    written = list(ks.merkle.written)
    s.execute([b"ZADD", b"z", b"7", b"new"])
    s.execute([b"SREM", b"s", b"m3"])
    assert ks.unhashed == {b"z", b"s"}
    assert ks.merkle.written == written  # nothing hashed yet
    for key in (b"z", b"s"):
        assert ks.entry_hash(key) == entry_hash(key, ks.state_of(key))  # type: ignore[arg-type]
    assert ks.merkle.leaves != written and not ks.unhashed  # the read brought them in
    check_tree(ks)
    # A pending key emptied, collected and forgotten before the next read.
    s.execute([b"SADD", b"gone", b"x"])
    s.execute([b"SADD", b"gone", b"y"])
    s.execute([b"SREM", b"gone", b"x", b"y"])
    s.execute([b"ZADD", b"z", b"1", b"m1"])
    assert b"gone" in ks.tombstones and b"gone" in ks.unhashed
    far = {"node-a": 2**62}
    for _ in range(3):
        ks.collect(far, 10_000, far)
    assert b"gone" not in ks.tombstones and b"gone" not in ks.unhashed
    check_tree(ks)


async def test_rebuild_in_slices_finds_and_corrects_a_damaged_leaf() -> None:
    time = FakeTime()
    ks, s = populated("node-a", 5000, time)
    s.execute([b"SADD", b"set", b"a", b"b"])
    assert await ks.verify_tree(budget=300) == []
    damaged = ks.merkle.leaf_of(b"key:9")
    ks.merkle.leaves[damaged] ^= 0x5A5A
    assert await ks.verify_tree(budget=300) == [damaged]
    check_tree(ks)
    # Writes between slices never make a leaf look wrong: each leaf is compared in one step.
    job = ks.rebuild()
    i = 0
    while not job.done:
        assert job.step(200) >= 1
        s.execute([b"SET", b"key:%d" % (i * 97 % 5000), b"w%d" % i])
        s.execute([b"SREM" if i % 2 else b"SADD", b"set", b"m%d" % (i % 7)])
        i += 1
    assert i > 10 and job.mismatched == []
    check_tree(ks)


def test_read_repair_hook_fires_for_reads_in_suspect_leaves_only() -> None:
    ks, s = populated("node-a", 100, FakeTime())
    s.execute([b"HSET", b"h", b"f", b"v"])
    seen: list[bytes] = []
    ks.on_suspect_read = seen.append
    s.execute([b"GET", b"key:1"])
    assert seen == []  # no suspect leaf: nothing to do
    ks.suspect.add(ks.merkle.leaf_of(b"key:1"))
    ks.suspect.add(ks.merkle.leaf_of(b"h"))
    ks.suspect.add(ks.merkle.leaf_of(b"missing"))
    other = next(b"key:%d" % i for i in range(100) if ks.merkle.leaf_of(b"key:%d" % i)
                 not in ks.suspect)
    s.execute([b"GET", b"key:1"])
    s.execute([b"GET", other])
    s.execute([b"HGET", b"h", b"f"])  # collection commands read through the same lookup
    s.execute([b"GET", b"missing"])  # a key this node lacks may be what the peer holds
    assert seen == [b"key:1", b"h", b"missing"]
    ks.suspect.clear()
    s.execute([b"GET", b"key:1"])
    assert seen == [b"key:1", b"h", b"missing"]


def test_run_on_a_real_event_loop_yields_between_slices() -> None:
    """verify_tree hands the loop back between slices: a task scheduled alongside it runs
    before the rebuild ends."""
    ks, _ = populated("node-a", 4000, FakeTime())
    progress: list[int] = []

    async def main() -> None:
        async def observer() -> None:
            job_started.set()
            progress.append(len(progress))

        job_started = asyncio.Event()
        verify = asyncio.ensure_future(ks.verify_tree(budget=100))
        watch = asyncio.ensure_future(observer())
        await asyncio.wait_for(job_started.wait(), 10)
        assert not verify.done()
        assert await verify == []
        await watch

    asyncio.run(main())
    assert progress == [0]


def test_keys_and_stamps_that_differ_alike_do_not_cancel_out() -> None:
    """xxh3 folds a short input's seed in linearly: with the dot alone as seed, y12 written at
    ts+12 and y16 at ts+16 hashed the same and, missing together, cancelled out of the tree.
    A pipelined burst of one node (consecutive keys, consecutive stamps) and the same burst
    from several nodes give distinct entry hashes, and every missing pair shows in the root."""
    ts = 117658742498656253
    entries = [
        (b"%s%d" % (prefix, i), Entry(ts + i + shift, node, b"v"))
        for prefix in (b"y", b"key:", b"a-much-longer-key-name-for-the-17-to-128-byte-path:")
        for i in range(300)
        for shift, node in ((0, "ap-3"), (1 << 16, "eu-1"), (7, "us-2"))
    ]
    hashes = [entry_hash(k, e) for k, e in entries]
    assert len(set(hashes)) == len(hashes)
    full, missing = Keyspace("eu-1"), Keyspace("us-2")
    for i in range(50):
        k = b"y%d" % i
        full.merge(k, Entry(ts + i, "ap-3", b"v-" + k))
        if k not in (b"y12", b"y16"):
            missing.merge(k, Entry(ts + i, "ap-3", b"v-" + k))
    assert full.merkle.root() != missing.merkle.root()
    assert walk(full, missing)[0] == {b"y12", b"y16"}
