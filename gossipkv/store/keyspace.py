"""The keyspace and its one merge path.

Every change — a client write, a peer's delta, a state from anti-entropy or a snapshot — goes
through ``Keyspace.merge``. Client writes go through ``Keyspace.write``, which hands the delta to
the sink (replication) and then merges it. The live-key map, the tombstone map and the expiry
index are all maintained here and nowhere else, and so is the anti-entropy tree (store/merkle.py):
each merge XORs the key's old entry hash out of its leaf and the new one in.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import xxhash

from gossipkv.crdt.hlc import HLC
from gossipkv.store import gc
from gossipkv.store.buckets import Buckets
from gossipkv.store.entry import Entry
from gossipkv.store.expiry import ExpiryIndex
from gossipkv.store.merkle import (
    LEAF_SHIFT,
    NODE_SEEDS,
    Merkle,
    entry_hash,
    is_plain,
    keyed_hash,
    node_seed,
)

assert LEAF_SHIFT == 52  # spelled out on the write fast path

# A sink receives each local delta before it is merged; it must encode or copy it at once,
# because the keyspace may adopt the delta object as the key's state.
Sink = Callable[[bytes, Entry], None]


def _no_sink(key: bytes, delta: Entry) -> None:
    return None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_hash: Final = xxhash.xxh3_64_intdigest


class Keyspace:
    """Live keys, tombstoned keys, the expiry index, and the write/merge path over them."""

    def __init__(self, node: str, clock: HLC | None = None, sink: Sink | None = None) -> None:
        self.node = node
        # The counter actor: a node's running totals are versioned per process start, so an
        # empty restart under the same name counts afresh instead of replacing, with a newer
        # stamp, the total its previous run had already replicated (losing those increments).
        self.actor = f"{node}#{secrets.token_hex(4)}"
        self.clock = clock or HLC()
        self.sink: Sink = sink or _no_sink
        self._start_empty()
        self.on_suspect_read: Callable[[bytes], None] | None = None
        self.gc = gc.Collector()
        self.now_ms: Callable[[], int] = _now_ms
        self.expired_keys = 0
        self.keyspace_hits = 0
        self.keyspace_misses = 0
        self.on_change: list[Callable[[bytes, Entry], None]] = []

    def _start_empty(self) -> None:
        """The containers of an empty keyspace (at start, and when a rejoin drops it all)."""
        self.live: dict[bytes, Entry] = {}
        # Keys whose every write has been observed-removed. Kept so that a delayed delta
        # merges against the removal instead of resurrecting the key, until every stamp in it
        # is stable cluster-wide and GC forgets it (store/gc.py).
        self.tombstones: dict[bytes, Entry] = {}
        self.expiry = ExpiryIndex()
        # Live keys by hash prefix: SCAN cursors and RANDOMKEY without O(keyspace) work.
        self.buckets = Buckets()
        # Tombstoned keys by the same prefix: a Merkle leaf's keys without scanning tombstones.
        self.tomb_buckets = Buckets()
        self.merkle = Merkle()
        self.merkle.before_read = self.flush_tree
        self._leaves = self.merkle.written  # the same list, one attribute hop less per write
        # Entry hashes of the keys whose entry is not a plain string register (those hash in
        # O(1) from their dot): a write XORs the old hash out without re-digesting the state.
        # For a key in ``unhashed`` it is the hash its leaf holds, not its state's.
        self.hashes: dict[bytes, int] = {}
        # Keys whose collection writes have not reached their leaf yet (see flush_tree).
        self.unhashed: set[bytes] = set()
        # Read repair: leaves known to differ from some peer (kept by the anti-entropy code),
        # and what a read of a key in one of them calls.
        self.suspect: set[int] = set()

    def __len__(self) -> int:
        return len(self.live)

    def drop_all(self) -> Leftovers:
        """Forget every key, tombstone and expiry without writing a removal, and count under
        a new counter actor from now on, as an empty restart would.

        Only a node rejoining the cluster after the GC horizon does this (cluster/rejoin.py):
        its state may hold writes whose removals the cluster has collected, so it must be
        forgotten, never merged or removed (a removal would replicate and delete what the
        cluster holds); peers' snapshots then refill it through ``merge``. The swap is O(1);
        the old contents come back as Leftovers for the caller to free in slices, so that no
        event-loop turn is proportional to the keyspace.
        """
        old = Leftovers([
            self.live, self.tombstones, self.hashes, self.expiry.deadlines, self.expiry._heap,
            *self.buckets.sets, *self.tomb_buckets.sets,
        ])
        self._start_empty()
        self.gc.cursor = 0
        self.actor = f"{self.node}#{secrets.token_hex(4)}"
        return old

    # -- the one path -------------------------------------------------------------------------

    def merge(self, key: bytes, delta: Entry, local: bool = False) -> None:
        """Join a CRDT state into the key's state. The keyspace may adopt ``delta``.

        ``local``: the delta is this node's own write (Keyspace.write), so its stamps are
        already known to the clock."""
        live = self.live
        e = live.get(key)
        if e is not None:
            dc = delta.coll
            if dc is None:
                if (
                    delta.counter is None
                    and delta.exp is None
                    and delta.ctx is None
                    and e.counter is None
                    and e.ctx is None
                    and e.coll is None
                ):
                    # The common overwrite: a plain value onto a plain live value. Only the LWW
                    # register can change; liveness and the expiry index cannot. A plain register
                    # hashes from its dot (store/merkle.py), so the leaf changes in O(1) and only
                    # when the delta wins; one with an expiry register hashes by its digest.
                    ts = delta.ts
                    if ts > e.ts or (ts == e.ts and delta.node > e.node):
                        if e.exp is None:
                            seeds = NODE_SEEDS
                            kh = _hash(key)
                            try:
                                x = _hash(key, kh ^ e.ts ^ seeds[e.node]) ^ _hash(
                                    key, kh ^ ts ^ seeds[delta.node]
                                )
                            except KeyError:  # a node id not seen before
                                x = _hash(key, kh ^ e.ts ^ node_seed(e.node)) ^ _hash(
                                    key, kh ^ ts ^ node_seed(delta.node)
                                )
                            self._leaves[kh >> 52] ^= x
                            e.ts = ts
                            e.node = delta.node
                            e.value = delta.value
                        else:
                            old = self.hash_of(key, e)
                            e.ts = ts
                            e.node = delta.node
                            e.value = delta.value
                            self.rehash(key, e, old)
                    if ts > self.clock.last:
                        self.clock.last = ts
                    for hook in self.on_change:
                        hook(key, e)
                    return
            elif (
                (c := e.sole_coll()) is not None
                and type(c) is type(dc)
                and delta.sole_coll() is dc
            ):
                # A collection write onto a live pure collection key of its kind (every
                # data-type command): the entry is its collection, so its liveness is the
                # collection's (Entry.visible_coll). Its leaf is brought up to date when the
                # tree is next read (flush_tree): a hot key is hashed once, not per write.
                if key not in self.hashes:
                    self.hashes[key] = entry_hash(key, e)
                self.unhashed.add(key)
                c.merge(dc)
                if not local:  # a local delta's stamps came from this clock
                    clock = self.clock
                    ts = dc.max_ts()
                    if ts > clock.last:
                        clock.last = ts
                if c.alive():
                    if key in self.expiry.deadlines:
                        self.expiry.set(key, e.deadline())
                else:
                    self.tombstones[key] = e
                    del live[key]
                    self.expiry.set(key, 0)
                    self.buckets.discard(key)
                    self.tomb_buckets.add(key)
                for hook in self.on_change:
                    hook(key, e)
                return
        was_live = e is not None
        was_tomb = False
        if e is None:
            e = self.tombstones.pop(key, None)
            if e is None:
                e = delta
                if e.coll is not None:
                    e.settle()  # adopted as the key's state: no delta-only hints
                self.rehash(key, e, 0)
            else:
                was_tomb = True
                old = self.hash_of(key, e)
                e.merge(delta)
                self.rehash(key, e, old)
        else:
            old = self.hash_of(key, e)
            e.merge(delta)
            self.rehash(key, e, old)
        if delta.exp is None and delta.ctx is None and delta.counter is None and delta.coll is None:
            if delta.ts > self.clock.last:
                self.clock.last = delta.ts
        else:
            self.clock.observe(delta.stamps())
        if e.alive():
            if not was_live:
                self.buckets.add(key)
                if was_tomb:
                    self.tomb_buckets.discard(key)
                live[key] = e
                if e.exp is not None:
                    self.expiry.set(key, e.deadline())
            elif e.exp is not None or key in self.expiry.deadlines:
                self.expiry.set(key, e.deadline())
        else:
            self.tombstones[key] = e
            if was_live:
                del live[key]
                self.expiry.set(key, 0)
                self.buckets.discard(key)
            if not was_tomb:
                self.tomb_buckets.add(key)
        for hook in self.on_change:
            hook(key, e)

    def hash_of(self, key: bytes, e: Entry) -> int:
        """The entry hash ``e`` (the key's current state) contributes to the tree: cached for
        an entry that is not plain (its digest is not free), computed for a plain one."""
        h = self.hashes.get(key)
        return entry_hash(key, e) if h is None else h

    def rehash(self, key: bytes, e: Entry, old: int) -> None:
        """Record the key's new state ``e`` in the tree; ``old`` is what it contributed.

        Merge never turns a non-plain entry into a plain one (it only fills fields), so a
        plain entry here has no cached hash; GC, which can, drops the cached one first.
        """
        kh: int = _hash(key)
        new = keyed_hash(key, kh, e)
        if not is_plain(e):
            self.hashes[key] = new
        if new != old:
            self._leaves[kh >> 52] ^= old ^ new

    def write(self, key: bytes, delta: Entry) -> None:
        """A local client write: emitted to the sink, then merged like any other delta."""
        self.sink(key, delta)
        self.merge(key, delta, True)

    # -- reads ---------------------------------------------------------------------------------

    def lookup(self, key: bytes) -> Entry | None:
        """The live, unexpired entry of a key. An expired key is reaped on the way (lazy).

        A key in a leaf known to differ from a peer is handed to ``on_suspect_read`` first
        (read repair); with no suspect leaf that costs one truthiness test.
        """
        if self.suspect:
            self._suspect_read(key)
        e = self.live.get(key)
        if e is None:
            return None
        if self.expiry.deadlines:
            dl = self.expiry.deadlines.get(key)
            if dl is not None and dl <= self.now_ms():
                self.reap(key, e)
                return None
        return e

    def reap(self, key: bytes, e: Entry) -> None:
        """Remove an expired key as an observed-remove, replicated like a DEL."""
        self.expired_keys += 1
        self.remove(key, e)

    def expire_cycle(self, limit: int = 200) -> int:
        """Reap up to ``limit`` due keys; the caller repeats while it returns ``limit``."""
        due = self.expiry.due(self.now_ms(), limit)
        for key in due:
            e = self.live.get(key)
            if e is not None:
                self.reap(key, e)
        return len(due)

    def delete(self, key: bytes) -> bool:
        """DEL of one key as observed-remove; True when a live key was removed."""
        e = self.lookup(key)
        if e is None:
            return False
        self.remove(key, e)
        return True

    def remove(self, key: bytes, e: Entry) -> None:
        """Observed-remove of everything ``e`` shows, dated by a fresh stamp of this node so
        that GC keeps the tombstone until the removal itself has reached every member."""
        self.write(key, e.removal((self.clock.now(), self.node)))

    # -- anti-entropy --------------------------------------------------------------------------

    def _suspect_read(self, key: bytes) -> None:
        hook = self.on_suspect_read
        if hook is not None and _hash(key) >> LEAF_SHIFT in self.suspect:
            hook(key)

    def state_of(self, key: bytes) -> Entry | None:
        """The key's full state, live or tombstone, to ship to a peer. It is the keyspace's
        own object: encode it at once and never change it."""
        e = self.live.get(key)
        return self.tombstones.get(key) if e is None else e

    def entry_hash(self, key: bytes) -> int:
        """What the key's state contributes to its Merkle leaf; 0 for a key this node never
        saw."""
        e = self.state_of(key)
        if e is None:
            return 0
        return entry_hash(key, e) if key in self.unhashed else self.hash_of(key, e)

    def flush_tree(self) -> None:
        """Bring the leaves of the keys collection writes noted up to date. Called before
        every read of the tree and once a tick, so its work is bounded by the distinct keys
        written in a tick."""
        unhashed = self.unhashed
        if not unhashed:
            return
        hashes = self.hashes
        leaves = self._leaves
        for key in unhashed:
            was = hashes.get(key)
            if was is None:
                continue  # forgotten, or made plain by GC: its leaf was corrected then
            e = self.state_of(key)
            if e is None:
                continue
            kh = _hash(key)
            now = keyed_hash(key, kh, e)
            if now != was:
                hashes[key] = now
                leaves[kh >> LEAF_SHIFT] ^= was ^ now
        unhashed.clear()

    def leaf_pairs(self, leaf: int) -> list[tuple[bytes, int]]:
        """(key, entry hash) of every live or tombstoned key in a leaf; O(keys in the leaf)."""
        self.flush_tree()
        live = self.live
        hashes = self.hashes
        out: list[tuple[bytes, int]] = []
        for k in self.buckets.sets[leaf]:
            h = hashes.get(k)
            if h is None:  # plain registers are not cached; anything else is
                e = live[k]
                h = self.hash_of(k, e)
            out.append((k, h))
        tombstones = self.tombstones
        out.extend((k, self.hash_of(k, tombstones[k])) for k in self.tomb_buckets.sets[leaf])
        return out

    def rebuild(self) -> TreeRebuild:
        """A resumable recomputation of the tree from the states (see TreeRebuild)."""
        return TreeRebuild(self)

    async def verify_tree(self, budget: int = 2000) -> list[int]:
        """Rebuild the whole tree in slices of about ``budget`` entries, yielding to the event
        loop between slices; the leaves that disagreed with the incremental tree (corrected)."""
        job = TreeRebuild(self)
        while not job.done:
            job.step(budget)
            await asyncio.sleep(0)
        return job.mismatched

    def forget(self, key: bytes) -> None:
        """Drop a tombstone altogether (garbage collection): out of the map, index and tree."""
        e = self.tombstones.pop(key)
        self.tomb_buckets.discard(key)
        self.unhashed.discard(key)
        old = self.hashes.pop(key, None)
        if old is None:
            old = entry_hash(key, e)
        self._leaves[_hash(key) >> LEAF_SHIFT] ^= old

    def collect(
        self, stable: Mapping[str, int], budget: int, cstable: Mapping[str, int] | None = None
    ) -> int:
        """One slice of tombstone and metadata garbage collection (store/gc.py): visits about
        ``budget`` entries, stopping early at the end of a pass over the keyspace; returns the
        work done, so the caller yields between slices.

        ``stable`` maps node id -> HLC stamp such that every write of that node stamped at or
        below it has been merged by every member, and no state holding such a write that a
        member has not merged can still arrive (causal stability). ``cstable`` is the causal
        frontier (cluster/watermark.py): list tombstones wait for it; None holds them."""
        return self.gc.step(self, stable, budget, cstable)

    def collect_hot(
        self, stable: Mapping[str, int], cstable: Mapping[str, int] | None = None
    ) -> bool:
        """Collect once more from one key whose last collection stopped at its budget (a busy
        list queue); whether such keys remain."""
        self.gc.revisit(self, stable, cstable)
        return bool(self.gc.hot)


class Leftovers:
    """What ``Keyspace.drop_all`` took out, emptied a slice at a time by ``free``."""

    __slots__ = ("_piles",)

    def __init__(self, piles: list[Any]) -> None:
        self._piles = [p for p in piles if p]

    @property
    def done(self) -> bool:
        return not self._piles

    def free(self, budget: int) -> int:
        """Drop about ``budget`` items (an item's own size aside); the number dropped."""
        piles = self._piles
        dropped = 0
        while piles and dropped < budget:
            pile = piles[-1]
            n = min(len(pile), budget - dropped)
            if isinstance(pile, dict):
                for _ in range(n):
                    pile.popitem()
            elif isinstance(pile, set):
                for _ in range(n):
                    pile.pop()
            else:
                del pile[len(pile) - n:]
            dropped += n
            if not pile:
                piles.pop()
        return dropped


class TreeRebuild:
    """Recomputes the Merkle leaves from the keys' states from scratch, leaf by leaf.

    Each leaf is recomputed and compared with the incremental tree within one ``step``, so
    writes merged between steps never make a leaf look wrong; a leaf that differs is recorded
    in ``mismatched`` and replaced by the recomputed value, and the cached entry hashes of its
    keys are refreshed. Used to verify the incremental tree, and after loading state that did
    not come through ``merge``.
    """

    __slots__ = ("ks", "mismatched", "next_leaf")

    def __init__(self, ks: Keyspace) -> None:
        self.ks = ks
        self.next_leaf = 0
        self.mismatched: list[int] = []

    @property
    def done(self) -> bool:
        return self.next_leaf >= len(self.ks.merkle.written)  # its length alone: no flush

    def step(self, budget: int) -> int:
        """Recompute whole leaves until about ``budget`` entries were hashed (at least one
        leaf); the number of entries hashed plus leaves visited."""
        ks = self.ks
        leaves = ks.merkle.leaves
        hashes = ks.hashes
        work = 0
        while work < budget and self.next_leaf < len(leaves):
            leaf = self.next_leaf
            fresh = 0
            for keys, states in (
                (ks.buckets.sets[leaf], ks.live),
                (ks.tomb_buckets.sets[leaf], ks.tombstones),
            ):
                for key in keys:
                    e = states[key]
                    h = entry_hash(key, e)
                    if not is_plain(e):
                        hashes[key] = h
                    fresh ^= h
                work += len(keys)
            if leaves[leaf] != fresh:
                self.mismatched.append(leaf)
                leaves[leaf] = fresh
            self.next_leaf = leaf + 1
            work += 1
        return work
