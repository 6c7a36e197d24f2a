"""The keyspace's collection-write fast path keeps the tree, the cached entry hashes, liveness,
the tombstones and the clock exactly as the general merge path would.

Every data-type command below writes a delta onto a live pure collection key of its kind, the
case Keyspace.merge handles without going through Entry.merge; popping the last element must
still leave a tombstone, and a replica fed the same deltas through decode must agree.
"""

from __future__ import annotations

import random
from typing import Any

import gossipkv.commands.all  # noqa: F401  # registers the commands
from gossipkv.commands.session import Server, Session
from gossipkv.crdt.hlc import HLC
from gossipkv.store.entry import Entry
from gossipkv.store.keyspace import Keyspace
from gossipkv.store.merkle import entry_hash


def _tree_matches_states(ks: Keyspace) -> None:
    for key in [*ks.live, *ks.tombstones]:
        e = ks.state_of(key)
        assert e is not None
        assert ks.entry_hash(key) == entry_hash(key, e)
    job = ks.rebuild()
    while not job.done:
        job.step(10**6)
    assert job.mismatched == []


def _commands(rnd: random.Random) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    for _ in range(400):
        m = b"m%d" % rnd.randrange(12)
        out.append(
            rnd.choice(
                [
                    [b"SADD", b"s", m],
                    [b"SPOP", b"s"],
                    [b"SREM", b"s", m],
                    [b"HSET", b"h", m, b"v%d" % rnd.randrange(3)],
                    [b"HDEL", b"h", m],
                    [b"ZADD", b"z", b"%d" % rnd.randrange(5), m],
                    [b"ZPOPMIN", b"z"],
                    [b"ZPOPMAX", b"z"],
                    [b"LPUSH", b"l", m],
                    [b"RPUSH", b"l", m],
                    [b"LPOP", b"l"],
                    [b"RPOP", b"l"],
                    [b"DEL", rnd.choice([b"s", b"h", b"z", b"l"])],
                ]
            )
        )
    return out


def test_fast_path_agrees_with_a_rebuild_and_with_a_replica() -> None:
    rnd = random.Random(7)
    wire: list[tuple[bytes, Any]] = []
    ks = Keyspace("n1", sink=lambda key, d: wire.append((key, d.encode())))
    replica = Keyspace("n2")
    s = Session(Server(ks))
    for i, argv in enumerate(_commands(rnd)):
        s.execute(argv)
        if i % 25 == 0:
            _tree_matches_states(ks)
    _tree_matches_states(ks)
    for key, enc in wire:
        replica.merge(key, Entry.decode(enc))
    _tree_matches_states(replica)
    assert replica.merkle.root() == ks.merkle.root()
    assert {k: e.encode() for k, e in ks.live.items()} == {
        k: e.encode() for k, e in replica.live.items()
    }
    assert set(ks.tombstones) == set(replica.tombstones)


def test_popping_the_last_element_leaves_a_tombstone() -> None:
    ks = Keyspace("n1")
    s = Session(Server(ks))
    for add, pop, key in (
        ([b"SADD", b"s", b"a"], [b"SPOP", b"s"], b"s"),
        ([b"ZADD", b"z", b"1", b"a"], [b"ZPOPMIN", b"z"], b"z"),
        ([b"LPUSH", b"l", b"a"], [b"LPOP", b"l", b"5"], b"l"),
        ([b"HSET", b"h", b"f", b"v"], [b"HDEL", b"h", b"f"], b"h"),
    ):
        s.execute(add)
        s.execute(add)  # a second write onto the live key
        s.execute(pop)
        assert key not in ks.live and key in ks.tombstones
        assert key in ks.tomb_buckets.sets[ks.merkle.leaf_of(key)]
        # A removal with no key-level context (as a peer's may be) empties it on the fast path.
        other = key + b"2"
        s.execute([add[0], other, *add[2:]])
        coll = ks.live[other].coll
        assert coll is not None and not isinstance(coll, dict)
        ks.write(other, Entry(coll=coll.removal()))
        assert other not in ks.live and other in ks.tombstones
        assert other in ks.tomb_buckets.sets[ks.merkle.leaf_of(other)]
        assert other not in ks.buckets.sets[ks.merkle.leaf_of(other)]
    _tree_matches_states(ks)


def test_a_peer_collection_delta_moves_the_clock() -> None:
    a = Keyspace("a", HLC(wall_ms=lambda: 1))
    b = Keyspace("b", HLC(wall_ms=lambda: 1))
    wire: list[tuple[bytes, Any]] = []
    a.sink = lambda key, d: wire.append((key, d.encode()))
    sa, sb = Session(Server(a)), Session(Server(b))
    sb.execute([b"SADD", b"s", b"x"])
    for _ in range(50):
        sa.execute([b"SADD", b"s", b"y%d" % len(wire)])
    before = b.clock.last
    for key, enc in wire:
        b.merge(key, Entry.decode(enc))  # onto b's live set: the fast path
    assert b.clock.last >= a.clock.last > before


def test_a_type_clash_state_merges_onto_a_type_clash_state() -> None:
    """Full states of a key that clashes (two collection kinds, no string part) join part by
    part, on either side of the keyspace's collection fast path."""
    a, b = Keyspace("a"), Keyspace("b")
    Session(Server(a)).execute([b"SADD", b"k", b"x"])
    Session(Server(b)).execute([b"ZADD", b"k", b"1", b"y"])
    sa, sb = a.state_of(b"k"), b.state_of(b"k")
    assert sa is not None and sb is not None
    a.merge(b"k", Entry.decode(sb.encode()))
    b.merge(b"k", Entry.decode(sa.encode()))
    ea = a.state_of(b"k")
    assert ea is not None and isinstance(ea.coll, dict)
    a.merge(b"k", Entry.decode(ea.encode()))  # a clash state onto a clash state
    b.merge(b"k", Entry.decode(ea.encode()))
    _tree_matches_states(a)
    _tree_matches_states(b)
    assert a.merkle.root() == b.merkle.root()
