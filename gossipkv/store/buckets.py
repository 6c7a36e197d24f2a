"""A fixed-shape index of live keys by hash prefix, for SCAN and RANDOMKEY (and the Merkle leaves).

A key's bucket is the top ``BUCKET_BITS`` bits of xxh3_64(key); the anti-entropy tree uses the
same prefix for its leaves, so a leaf and a bucket hold the same keys.

SCAN cursors follow Redis's dictScan. Redis indexes by the *low* bits of a hash and walks bucket
indexes in reverse-binary order, so that a cursor stays valid when the table doubles or halves
between two calls. Indexing by the *top* bits is the same scheme mirrored: Redis's bucket ``c``
of a 2**k table is our hash prefix ``reverse_k(c)``, and Redis's reverse-binary walk becomes a
walk through prefixes in increasing order; a cursor names the prefix below which everything was
returned. The walk reads the fixed buckets through a *virtual* table of 2**k buckets sized to the
keyspace as Redis sizes its dict (the next power of two, at least 4): a virtual bucket is the run
of 2**(BUCKET_BITS-k) fixed buckets sharing a k-bit prefix. So a small keyspace is walked in as
few calls as Redis needs, and k may change between calls exactly as Redis's table size does, with
Redis's guarantee: every key live for a whole iteration is returned (a shrink may repeat some).
For the same reason a cursor stays valid if BUCKET_BITS grows later.
"""

from __future__ import annotations

import random
from itertools import islice
from typing import Final

import xxhash

BUCKET_BITS: Final = 12
BUCKET_COUNT: Final = 1 << BUCKET_BITS
_SHIFT: Final = 64 - BUCKET_BITS

_hash: Final = xxhash.xxh3_64_intdigest


def bucket_of(key: bytes) -> int:
    """The bucket (hash prefix) of a key."""
    b: int = _hash(key) >> _SHIFT
    return b


def _reverse(v: int, bits: int) -> int:
    out = 0
    for _ in range(bits):
        out = (out << 1) | (v & 1)
        v >>= 1
    return out


# Bit reversal of BUCKET_BITS bits; reversing k < BUCKET_BITS bits is _REVERSED[v] >> (BITS - k).
_REVERSED: Final = [_reverse(i, BUCKET_BITS) for i in range(BUCKET_COUNT)]
_MIN_LEVEL: Final = 2  # Redis's smallest dict has 4 buckets


def scan_level(size: int) -> int:
    """log2 of the virtual table a keyspace of ``size`` keys is walked through."""
    return min(BUCKET_BITS, max(_MIN_LEVEL, (size - 1).bit_length()))


class Buckets:
    """Live keys grouped by hash prefix, plus the list of non-empty buckets for random picks.

    ``occupied`` holds each non-empty bucket once, and ``_slot`` its position there, so that
    adding, removing and picking a random non-empty bucket are all O(1).
    """

    __slots__ = ("_rng", "_slot", "occupied", "sets", "size")

    def __init__(self) -> None:
        self.sets: list[set[bytes]] = [set() for _ in range(BUCKET_COUNT)]
        self.occupied: list[int] = []
        self._slot: dict[int, int] = {}
        self._rng = random.Random()
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, key: bytes) -> None:
        b: int = _hash(key) >> _SHIFT
        keys = self.sets[b]
        n = len(keys)
        keys.add(key)
        if len(keys) == n:
            return
        self.size += 1
        if not n:
            self._slot[b] = len(self.occupied)
            self.occupied.append(b)

    def discard(self, key: bytes) -> None:
        b: int = _hash(key) >> _SHIFT
        keys = self.sets[b]
        if key not in keys:
            return
        keys.discard(key)
        self.size -= 1
        if not keys:
            # Swap-remove the bucket from the occupied list.
            pos = self._slot.pop(b)
            last = self.occupied.pop()
            if last != b:
                self.occupied[pos] = last
                self._slot[last] = pos

    def clear(self) -> None:
        for keys in self.sets:
            keys.clear()
        self.occupied.clear()
        self._slot.clear()
        self.size = 0

    def scan(self, cursor: int, count: int) -> tuple[int, list[bytes]]:
        """One SCAN step as Redis's takes it: whole (virtual) buckets until ``count`` keys are
        gathered or ``10 * count`` more buckets were visited; the next cursor and the keys."""
        if not self.size:
            return 0, []
        level = scan_level(self.size)
        shift = BUCKET_BITS - level
        last = (1 << level) - 1
        sets = self.sets
        out: list[bytes] = []
        budget = count * 10
        prefix = _REVERSED[cursor & last] >> shift
        while True:
            if shift:
                first = prefix << shift
                for b in range(first, first + (1 << shift)):
                    out.extend(sets[b])
            else:
                out.extend(sets[prefix])
            if prefix == last:
                return 0, out
            prefix += 1
            cursor = _REVERSED[prefix] >> shift
            if budget == 0 or len(out) >= count:
                return cursor, out
            budget -= 1

    def random_key(self) -> bytes | None:
        """A random non-empty bucket, then a random key in it; None when the index is empty.

        Keys in small buckets are picked more often, as with Redis's chained buckets.
        """
        occupied = self.occupied
        if not occupied:
            return None
        rng = self._rng
        keys = self.sets[occupied[rng.randrange(len(occupied))]]
        return next(islice(keys, rng.randrange(len(keys)), None))
