"""Garbage collection of tombstones and of removed-element metadata, in bounded slices.

A tombstone (a key whose every write was observed-removed) is kept so that a late delta merges
against the removal instead of resurrecting the key; collections keep removal metadata (dot
contexts, list tombstones) for the same reason. Once every stamp in a state is *stable* (every
member has merged every write up to it, and none of them can still send an older state) no late
delta can need that memory any more, so it can go: a stable tombstone is forgotten altogether
(and XORed out of the Merkle tree), and a live entry drops what ``Entry.collect`` finds
collectable. The cluster computes ``stable`` from what every member has acknowledged, and
``cstable`` (the causal frontier, which a list tombstone waits for: an insert naming it may
have been made before its maker merged the removal; and so does a counter's floor, for an
increment made before its maker merged the reset) from what every member has merged.

The sweep walks the Merkle leaves (the hash-prefix buckets) in order, a slice at a time, so its
work per call is bounded and no dict is iterated across a yield.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from gossipkv.store.buckets import BUCKET_COUNT
from gossipkv.store.merkle import is_plain

if TYPE_CHECKING:
    from gossipkv.store.entry import Entry
    from gossipkv.store.keyspace import Keyspace


# Elements one collect call dropped from a key past which the key is visited again before the
# next pass: a call drops a bounded number (a list's budget), so a busy queue may have more.
HOT: Final = 1024


class Collector:
    """The sweep's position and its counters (shown by INFO, section Gc)."""

    __slots__ = ("cursor", "elements_collected", "hot", "passes", "tombstones_collected")

    def __init__(self) -> None:
        self.cursor = 0  # the next bucket to visit
        self.passes = 0  # full passes over the keyspace completed
        self.tombstones_collected = 0
        self.elements_collected = 0
        # Keys whose last collect dropped HOT elements or more, oldest first (a dict: a key
        # found hot again by the next pass is not listed twice).
        self.hot: dict[bytes, None] = {}

    def step(
        self, ks: Keyspace, stable: Mapping[str, int], budget: int,
        cstable: Mapping[str, int] | None = None,
    ) -> int:
        """Visit whole buckets until about ``budget`` entries were looked at (at least one
        bucket) or a pass ends; the entries plus buckets visited."""
        work = 0
        tomb_sets = ks.tomb_buckets.sets
        live_sets = ks.buckets.sets
        tombstones = ks.tombstones
        live = ks.live
        while True:
            b = self.cursor
            work += len(tomb_sets[b])
            for key in list(tomb_sets[b]):
                e = tombstones[key]
                if e.is_stable(stable, cstable):
                    ks.forget(key)
                    self.tombstones_collected += 1
                else:
                    self._collect(ks, key, e, stable, cstable)
            keys = live_sets[b]
            for key in list(keys):
                e = live[key]
                if not is_plain(e):  # a plain register keeps no removal metadata
                    self._collect(ks, key, e, stable, cstable)
            work += len(keys) + 1
            self.cursor = b + 1
            if self.cursor == BUCKET_COUNT:
                self.cursor = 0
                self.passes += 1
                return work
            if work >= budget:
                return work

    def _collect(
        self, ks: Keyspace, key: bytes, e: Entry, stable: Mapping[str, int],
        cstable: Mapping[str, int] | None,
    ) -> None:
        old = ks.hash_of(key, e)
        n = e.collect(stable, cstable)
        if n:
            self.elements_collected += n
            ks.hashes.pop(key, None)  # the entry may have become plain
            ks.rehash(key, e, old)
            if n >= HOT:
                self.hot[key] = None

    def revisit(
        self, ks: Keyspace, stable: Mapping[str, int], cstable: Mapping[str, int] | None,
    ) -> None:
        """Collect once more from the hot key visited longest ago (one key: a call is bounded
        by the collections' own budgets), so that a queue popped faster than one call a pass
        can keep up while the caller has time to spare."""
        if not self.hot:
            return
        key = next(iter(self.hot))
        del self.hot[key]
        e = ks.live.get(key)
        if e is None:
            e = ks.tombstones.get(key)
        if e is not None:
            self._collect(ks, key, e, stable, cstable)
