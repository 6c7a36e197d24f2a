"""The anti-entropy index: a fixed-shape XOR hash tree over every key's full state.

Shape: the leaves are the 4096 buckets of store/buckets.py (the top 12 bits of xxh3_64(key)),
fanout 16, so the levels below the root hold 16, 256 and 4096 nodes. Every node is the XOR of
its children, and a leaf is the XOR of the entry hashes of its keys, live and tombstoned alike.
XOR makes the tree independent of the order keys were written in, and lets one write update it
by XORing out the key's old entry hash and XORing in the new one.

Entry hash: a 64-bit pure function of (key, full CRDT state), so that replicas holding equal
states agree on it. A plain string entry (no counter, expiry, removal context or collection) is
determined by its LWW dot, so its hash is xxh3_64(key) seeded with
``xxh3_64(key) ^ ts ^ xxh3_64(node)``; anything else is xxh3_64(key) seeded with
``xxh3_64(key) ^ Entry.state_digest()`` (see entry_hash for why the key's hash is in the seed).

Per-write cost: the keyspace XORs the change into the leaf only (one list store); the upper
levels are recomputed from the leaves when the tree is read and the leaves changed since the
last read (4096 XORs, about 0.15 ms), so a write never pays for the levels an exchange reads
a few times a second. A collection write does not even touch its leaf: the keyspace notes the
key and rehashes its state when the tree is next read (``before_read``), or at the next tick,
so a hot key written thousands of times a second is hashed once per read, not once per write.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce
from operator import xor
from typing import Final

import xxhash

from gossipkv.store.buckets import BUCKET_BITS, BUCKET_COUNT
from gossipkv.store.entry import Entry

FANOUT: Final = 16
DEPTH: Final = 3  # levels below the root: 16, 256, 4096 nodes
LEAF_SHIFT: Final = 64 - BUCKET_BITS
assert FANOUT**DEPTH == BUCKET_COUNT

_hash: Final = xxhash.xxh3_64_intdigest


# xxh3_64 of each node id seen, filled by node_seed (a cluster has few ids). A plain dict, not
# a subclass with __missing__: subscripting an exact dict is the fast path on every SET.
NODE_SEEDS: Final[dict[str, int]] = {}


def node_seed(node: str) -> int:
    seed = NODE_SEEDS.get(node)
    if seed is None:
        seed = NODE_SEEDS[node] = _hash(node.encode("utf-8", "surrogatepass"))
    return seed


def is_plain(e: Entry) -> bool:
    """A bare LWW string register: its dot determines its whole state."""
    return e.counter is None and e.exp is None and e.ctx is None and e.coll is None


def entry_hash(key: bytes, e: Entry) -> int:
    """The key's contribution to its leaf, computed from scratch.

    xxh3 of a short input folds its seed in linearly (input XOR a function of the seed), so a
    seed made of the dot alone lets keys and stamps that differ in the same few bits collide
    (a pipelined burst: y12 at ts+12, y16 at ts+16). Mixing xxh3_64(key) into the seed makes
    the seeds of two different keys differ at random, whatever their stamps.
    """
    return keyed_hash(key, _hash(key), e)


def keyed_hash(key: bytes, kh: int, e: Entry) -> int:
    """entry_hash for a caller that already holds ``kh``, xxh3_64(key)."""
    if is_plain(e):
        plain: int = _hash(key, kh ^ e.ts ^ node_seed(e.node))
        return plain
    h: int = _hash(key, kh ^ e.state_digest())
    return h


def leaf_of(key: bytes) -> int:
    """The leaf (and SCAN bucket) of a key."""
    leaf: int = _hash(key) >> LEAF_SHIFT
    return leaf


def _nothing_pending() -> None:
    return None


class Merkle:
    """The tree. ``written`` is the leaves' list, which Keyspace.merge writes; everything else
    reads through ``leaves``/``root``/``children``/``node``, which first call ``before_read``
    (the keyspace's rehash of the keys it has noted) and bring the upper levels up to date."""

    __slots__ = ("_levels", "_seen", "before_read", "written")

    depth = DEPTH
    fanout = FANOUT

    def __init__(self) -> None:
        self.written: list[int] = [0] * BUCKET_COUNT
        self.before_read: Callable[[], None] = _nothing_pending
        # The leaves the upper levels were computed from (shares the int objects, so an
        # unchanged tree compares equal in a couple of microseconds).
        self._seen: list[int] = list(self.written)
        # _levels[d] is level d (0 = the root, a one-element list), for d < DEPTH.
        self._levels: list[list[int]] = [[0] * FANOUT**d for d in range(DEPTH)]

    @property
    def leaves(self) -> list[int]:
        """The leaves, up to date (the list itself: a repair may correct one in place)."""
        self.before_read()
        return self.written

    @staticmethod
    def leaf_of(key: bytes) -> int:
        """The leaf (and SCAN bucket) of a key."""
        return leaf_of(key)

    def _refresh(self) -> None:
        leaves = self.leaves
        if leaves == self._seen:
            return
        below = leaves
        for d in range(DEPTH - 1, -1, -1):
            below = [reduce(xor, below[i : i + FANOUT]) for i in range(0, len(below), FANOUT)]
            self._levels[d] = below
        self._seen = list(leaves)

    def root(self) -> int:
        self._refresh()
        return self._levels[0][0]

    def node(self, level: int, index: int) -> int:
        """The hash of node ``index`` at ``level`` (0 = root, ``depth`` = the leaves)."""
        if level == DEPTH:
            return self.leaves[index]
        self._refresh()
        return self._levels[level][index]

    def children(self, level: int, index: int) -> list[int]:
        """The hashes of the ``fanout`` children of node ``index`` at ``level`` (< depth)."""
        if not 0 <= level < DEPTH or not 0 <= index < FANOUT**level:
            raise IndexError(f"no inner node {index} at level {level}")
        first = index * FANOUT
        if level == DEPTH - 1:
            return self.leaves[first : first + FANOUT]
        self._refresh()
        return self._levels[level + 1][first : first + FANOUT]
