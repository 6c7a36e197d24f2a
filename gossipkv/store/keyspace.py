"""The keyspace and its one merge path.

Every change — a client write, a peer's delta, a state from anti-entropy or a snapshot — goes
through ``Keyspace.merge``. Client writes go through ``Keyspace.write``, which hands the delta to
the sink (replication) and then merges it. The live-key map, the tombstone map and the expiry
index are all maintained here and nowhere else.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gossipkv.crdt.hlc import HLC
from gossipkv.store.buckets import Buckets
from gossipkv.store.entry import Entry
from gossipkv.store.expiry import ExpiryIndex

# A sink receives each local delta before it is merged; it must encode or copy it at once,
# because the keyspace may adopt the delta object as the key's state.
Sink = Callable[[bytes, Entry], None]


def _no_sink(key: bytes, delta: Entry) -> None:
    return None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Keyspace:
    """Live keys, tombstoned keys, the expiry index, and the write/merge path over them."""

    def __init__(self, node: str, clock: HLC | None = None, sink: Sink | None = None) -> None:
        self.node = node
        self.clock = clock or HLC()
        self.sink: Sink = sink or _no_sink
        self.live: dict[bytes, Entry] = {}
        # Keys whose every write has been observed-removed. Kept so that a delayed delta
        # merges against the removal instead of resurrecting the key (GC comes with gossip).
        self.tombstones: dict[bytes, Entry] = {}
        self.expiry = ExpiryIndex()
        # Live keys by hash prefix: SCAN cursors and RANDOMKEY without O(keyspace) work.
        self.buckets = Buckets()
        self.now_ms: Callable[[], int] = _now_ms
        self.expired_keys = 0
        self.keyspace_hits = 0
        self.keyspace_misses = 0
        self.on_change: list[Callable[[bytes, Entry], None]] = []

    def __len__(self) -> int:
        return len(self.live)

    # -- the one path -------------------------------------------------------------------------

    def merge(self, key: bytes, delta: Entry) -> None:
        """Join a CRDT state into the key's state. The keyspace may adopt ``delta``."""
        live = self.live
        e = live.get(key)
        if (
            e is not None
            and delta.counter is None
            and delta.exp is None
            and delta.ctx is None
            and e.counter is None
            and e.ctx is None
            and delta.coll is None
            and e.coll is None
        ):
            # The common overwrite: a plain value onto a plain live value. Only the LWW
            # register can change; liveness and the expiry index cannot.
            ts = delta.ts
            if ts > e.ts or (ts == e.ts and delta.node > e.node):
                e.ts = ts
                e.node = delta.node
                e.value = delta.value
            if ts > self.clock.last:
                self.clock.last = ts
            for hook in self.on_change:
                hook(key, e)
            return
        if e is None:
            e = self.tombstones.pop(key, None)
            if e is None:
                e = delta
            else:
                e.merge(delta)
        else:
            e.merge(delta)
        if delta.exp is None and delta.ctx is None and delta.counter is None and delta.coll is None:
            if delta.ts > self.clock.last:
                self.clock.last = delta.ts
        else:
            self.clock.observe(delta.stamps())
        if e.alive():
            if key not in live:
                self.buckets.add(key)
            live[key] = e
            if e.exp is not None or key in self.expiry.deadlines:
                self.expiry.set(key, e.deadline())
        else:
            if live.pop(key, None) is not None:
                self.expiry.set(key, 0)
                self.buckets.discard(key)
            self.tombstones[key] = e
        for hook in self.on_change:
            hook(key, e)

    def write(self, key: bytes, delta: Entry) -> None:
        """A local client write: emitted to the sink, then merged like any other delta."""
        self.sink(key, delta)
        self.merge(key, delta)

    # -- reads ---------------------------------------------------------------------------------

    def lookup(self, key: bytes) -> Entry | None:
        """The live, unexpired entry of a key. An expired key is reaped on the way (lazy)."""
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
        self.write(key, e.removal())

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
        self.write(key, e.removal())
        return True
