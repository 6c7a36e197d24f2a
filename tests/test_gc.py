"""Tombstone and metadata garbage collection in the store (Keyspace.collect, store/gc.py).

Histories of real commands on three keyspaces, their deltas delivered to every replica, then a
``stable`` map (what the cluster would compute from every member's acknowledgements) and a GC
sweep in bounded slices. GC must forget exactly the tombstones whose every stamp is stable, keep
what clients see, keep the Merkle tree equal to a from-scratch one, and leave replicas that saw
the same writes and collected with the same ``stable`` with equal roots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import redis
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gossipkv.commands.session import Server, Session
from gossipkv.crdt.hlc import HLC
from gossipkv.store.buckets import BUCKET_COUNT
from gossipkv.store.digest import dataset_digest
from gossipkv.store.entry import Entry
from gossipkv.store.keyspace import Keyspace
from tests.servers import start_gossipkv
from tests.test_merkle import (
    EPOCH_MS,
    KEYS,
    FakeTime,
    check_tree,
    commands,
    decode,
    deliver_all,
    run,
    steps,
)

# More writes and removals than the general mix has, so that tombstones pile up.
writes = st.tuples(st.integers(0, 2), commands)
deletes = st.tuples(
    st.integers(0, 2), st.sampled_from([[b"DEL", k] for k in KEYS] + [[b"FLUSHALL"]])
)


def visible(ks: Keyspace) -> str:
    return dataset_digest(ks.live.items(), ks.now_ms())


def sweep(ks: Keyspace, stable: dict[str, int], budget: int) -> int:
    """One full GC pass in slices; the number of slices it took."""
    passes = ks.gc.passes
    slices = 0
    while ks.gc.passes == passes:
        work = ks.collect(stable, budget)
        assert work >= 1
        slices += 1
    return slices


def stamps_of(nodes: list[Any]) -> list[int]:
    out = []
    for node in nodes:
        for _, wire in node.wire:
            e = decode(wire)
            out.append(e.stamps())
    return sorted(set(out))


@settings(deadline=None, max_examples=80)
@given(st.lists(st.one_of(writes, writes, deletes, steps), min_size=20, max_size=80), st.data())
def test_gc_forgets_exactly_the_stable_tombstones_and_keeps_replicas_equal(
    mix: list[Any], data: st.DataObject
) -> None:
    time = FakeTime()
    nodes = run(mix, time, check_every_step=False)
    deliver_all(nodes)
    stamps = stamps_of(nodes) or [0]
    # A cut per node, from nothing stable to everything stable (half the time).
    cut = st.one_of(st.just(stamps[-1] + 1), st.sampled_from([-1, *stamps]))
    stable = {n.keyspace.node: data.draw(cut) for n in nodes}
    roots = set()
    for node in nodes:
        ks = node.keyspace
        before = visible(ks)
        gone = {k for k, e in ks.tombstones.items() if e.is_stable(stable)}
        kept = set(ks.tombstones) - gone
        sweep(ks, stable, budget=data.draw(st.integers(1, 50)))
        assert not gone & (set(ks.tombstones) | set(ks.live))
        assert kept <= set(ks.tombstones) | set(ks.live)
        assert not any(e.is_stable(stable) for e in ks.tombstones.values())
        event(f"tombstones forgotten: {min(len(gone), 2)}+")
        assert ks.gc.tombstones_collected == len(gone)
        assert visible(ks) == before
        check_tree(ks)
        roots.add(ks.merkle.root())
    assert len(roots) == 1
    # A second pass with the same ``stable`` finds nothing more to forget of what it kept
    # unstable, and changes nothing anyone reads.
    for node in nodes:
        ks = node.keyspace
        unstable = {k for k, e in ks.tombstones.items() if not e.is_stable(stable)}
        sweep(ks, stable, budget=1000)
        assert unstable <= set(ks.tombstones)
        check_tree(ks)


def keyspace(name: str, time: FakeTime) -> tuple[Keyspace, Session, list[tuple[bytes, bytes]]]:
    wire: list[tuple[bytes, bytes]] = []
    ks = Keyspace(name, HLC(wall_ms=time), lambda k, d: wire.append((k, msgpack.packb(d.encode()))))
    ks.now_ms = time
    return ks, Session(Server(ks)), wire


def test_a_tombstone_with_any_unstable_stamp_is_kept() -> None:
    time = FakeTime()
    a, sa, _ = keyspace("node-a", time)
    _, sb, wb = keyspace("node-b", time)
    sa.execute([b"SET", b"k", b"1"])
    time.ms += 1
    sb.execute([b"SADD", b"k2", b"m"])  # a second key, written on b
    for key, w in wb:
        a.merge(key, decode(w))
    time.ms += 1
    sa.execute([b"DEL", b"k", b"k2"])
    tomb_k, tomb_k2 = a.tombstones[b"k"], a.tombstones[b"k2"]
    t_k, t_k2 = tomb_k.stamps(), tomb_k2.stamps()
    assert t_k < t_k2
    # Stable up to k's writes only: k2 holds node-b's later add, so it stays.
    stable = {"node-a": t_k, "node-b": t_k}
    assert tomb_k.is_stable(stable) and not tomb_k2.is_stable(stable)
    sweep(a, stable, 64)
    assert b"k" not in a.tombstones and b"k2" in a.tombstones
    assert a.entry_hash(b"k") == 0 and a.state_of(b"k") is None
    assert a.gc.tombstones_collected == 1
    check_tree(a)
    # Once node-b's add is stable too, k2 goes.
    sweep(a, {"node-a": t_k2, "node-b": t_k2}, 64)
    assert not a.tombstones and len(a.tomb_buckets) == 0
    assert a.merkle.root() == 0
    assert a.gc.tombstones_collected == 2


def test_writes_after_gc_and_the_stability_assumption() -> None:
    """A write newer than ``stable`` merges after GC exactly as on a replica that kept the
    tombstone (what clients read agrees). A *stale* delta, one whose stamps ``stable`` covers,
    resurrects a forgotten key: this is why ``stable`` must mean that no such delta can
    still arrive (every member has merged every write up to it)."""
    time = FakeTime()
    a, sa, wa = keyspace("node-a", time)
    kept, _, _ = keyspace("node-k", time)
    sa.execute([b"SET", b"k", b"old"])
    stale = wa[-1]
    time.ms += 1
    sa.execute([b"DEL", b"k"])
    for key, w in wa:
        kept.merge(key, decode(w))
    stable = {"node-a": a.tombstones[b"k"].stamps()}
    sweep(a, stable, 10)
    assert b"k" not in a.tombstones
    time.ms += 1
    sa.execute([b"SET", b"k", b"new"])
    kept.merge(b"k", decode(wa[-1][1]))
    assert visible(a) == visible(kept)
    assert a.lookup(b"k") is not None and a.lookup(b"k").read() == b"new"  # type: ignore[union-attr]
    # The stale SET, were it delivered after GC, would bring "old" back on a key that had
    # been deleted — on a replica that forgot the tombstone.
    c, _, _ = keyspace("node-c", time)
    for key, w in wa[:2]:
        c.merge(key, decode(w))
    sweep(c, stable, 10)
    assert not c.live and not c.tombstones
    c.merge(stale[0], decode(stale[1]))
    assert c.lookup(b"k") is not None
    check_tree(c)


def test_gc_works_in_bounded_slices_and_resumes() -> None:
    time = FakeTime()
    ks, s, _ = keyspace("node-a", time)
    n = 20_000
    for i in range(n):
        ks.merge(b"key:%d" % i, Entry(EPOCH_MS << 16 | i, "node-a", b"v"))
    for i in range(0, n, 2):
        s.execute([b"DEL", b"key:%d" % i])
    assert len(ks.tombstones) == n // 2
    stable = {"node-a": 1 << 62}
    budget = 400
    largest = max(
        len(ks.buckets.sets[b]) + len(ks.tomb_buckets.sets[b]) for b in range(BUCKET_COUNT)
    )
    slices = 0
    passes = ks.gc.passes
    while ks.gc.passes == passes:
        work = ks.collect(stable, budget)
        # A slice stops once it has done ``budget``, finishing the bucket it is in.
        assert 1 <= work <= budget + largest + 1
        slices += 1
    assert slices >= (n + BUCKET_COUNT) // (budget + largest + 1)
    assert not ks.tombstones and len(ks.live) == n // 2
    assert ks.gc.tombstones_collected == n // 2 and ks.gc.cursor == 0
    check_tree(ks)


def test_gc_of_collection_metadata_rehashes_the_live_key() -> None:
    time = FakeTime()
    a, sa, wa = keyspace("node-a", time)
    b, _, _ = keyspace("node-b", time)
    for i in range(20):
        sa.execute([b"SADD", b"s", b"m%d" % i])
        time.ms += 1
    for i in range(0, 20, 2):
        sa.execute([b"SREM", b"s", b"m%d" % i])
        time.ms += 1
    for key, w in wa:
        b.merge(key, decode(w))
    stable = {"node-a": max(decode(w).stamps() for _, w in wa)}
    before = (visible(a), a.entry_hash(b"s"))
    sweep(a, stable, 5)
    sweep(b, stable, 5)
    check_tree(a)
    assert visible(a) == before[0]
    assert a.merkle.root() == b.merkle.root()
    if a.gc.elements_collected:
        assert a.entry_hash(b"s") != before[1]


def test_info_gc_section(tmp_path: Path) -> None:
    """INFO's Gc section on a fresh node, through redis-py in RESP2 and RESP3. The node may
    collect a tombstone at any moment once it is stable, so the count checked is tombstones
    kept plus tombstones collected."""
    server = start_gossipkv(tmp_path)
    try:
        for protocol in (2, 3):
            client = redis.Redis(port=server.port, protocol=protocol, socket_timeout=10)
            before = client.info("gc")
            for field in ("tombstones", "tombstones_collected", "elements_collected",
                          "gc_passes", "merkle_root", "suspect_leaves"):
                assert isinstance(before[field], int), field
            key = f"gc:info:{protocol}"
            client.set(key, "v")
            written = client.info("gc")
            assert written["merkle_root"] != before["merkle_root"]
            client.delete(key)
            after = client.info("gc")
            assert after["tombstones"] + after["tombstones_collected"] == (
                before["tombstones"] + before["tombstones_collected"] + 1
            )
            assert "tombstones" in client.info()  # in the default set, after Redis's sections
            assert client.info("keyspace") is not None
            client.close()
    finally:
        server.stop()


def test_a_key_level_context_goes_only_once_the_removal_itself_is_stable() -> None:
    """SET on a, DEL on b: a's SET being stable is not enough to drop the context entry that
    hides its value. A peer given the collected state instead of the DEL would keep the value
    under the same stamp, and the two replicas would differ for good."""
    time = FakeTime()
    a, sa, wa = keyspace("node-a", time)
    b, sb, _ = keyspace("node-b", time)
    sa.execute([b"SET", b"k", b"v"])
    for key, w in wa:
        b.merge(key, decode(w))
    set_ts = a.state_of(b"k").stamps()  # type: ignore[union-attr]
    time.ms += 5
    sb.execute([b"DEL", b"k"])
    tomb = b.state_of(b"k")
    assert tomb is not None and tomb.ctx is not None and "node-b" in tomb.ctx
    del_ts = tomb.ctx["node-b"]
    assert set_ts < del_ts
    # a's SET is stable, b's DEL is not: nothing may go yet.
    assert tomb.collect({"node-a": set_ts, "node-b": del_ts - 1}) == 0
    assert tomb.value == b"v" and tomb.ctx == {"node-a": set_ts, "node-b": del_ts}
    # Here is why: a has not seen the DEL. Had b dropped the entry hiding the value, its state
    # (value gone, same stamp) merged into a's would leave a's value standing.
    a.merge(b"k", tomb.copy())
    assert a.lookup(b"k") is None
    # Once the DEL itself is stable, the whole context goes and the register is made inert.
    assert tomb.collect({"node-a": del_ts, "node-b": del_ts}) == 2
    assert tomb.ctx is None and tomb.value is None and tomb.ts == set_ts
