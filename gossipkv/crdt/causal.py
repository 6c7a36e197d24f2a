"""Dots and causal contexts of the dot-based collections (delta-state CRDTs, Almeida et al.;
Riak's ORSWOT).

A dot names one write: (HLC ts, node). A collection keeps, per element, the dots of the adds that
made it present, and one context per key: the dots it has seen. In a join, a dot held by one side
only survives unless the other side's context covers it (the other side saw it and removed it),
so removals need no per-element tombstone: the context alone remembers them.

A context is a version vector ``vv`` (node -> ts: every dot of that node up to ts is covered)
plus a ``cloud`` of single dots outside it. Deltas carry exact dots in the cloud: HLC dots are
sparse, so "all of node n's dots up to ts" is only known once every node has seen them (causal
stability); the vector is where such knowledge is folded in (``collect``), and cloud dots it
covers are dropped.

Digests: every collection keeps an order-independent 64-bit digest of its state as the XOR of
per-part hashes (``dot_hash``, ``hash_bytes``), updated where a part changes, so the digest of a
large collection costs O(change) per write, never a rescan.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import xxhash

Dot = tuple[int, str]  # (HLC ts, node id)

hash_bytes: Final = xxhash.xxh3_64_intdigest
# A dot's ts as 8 big-endian bytes: the signed format gives the same bytes as the unsigned one
# of ``ts & (2**64 - 1)`` for every ts an HLC makes, without a big-integer AND per dot.
_Q: Final = struct.Struct(">q").pack
_NODE_BYTES: Final[dict[str, bytes]] = {}


def node_bytes(node: str) -> bytes:
    """A node id's UTF-8 bytes, NUL-terminated (ids are few: the encoding is cached)."""
    b = _NODE_BYTES.get(node)
    if b is None:
        b = _NODE_BYTES[node] = node.encode() + b"\0"
    return b


def dot_bytes(ts: int, node: str) -> bytes:
    """A dot's canonical bytes, for hashing."""
    return _Q(ts) + node_bytes(node)


class _Seeds(dict[str, tuple[int, int, int]]):
    """Node id -> its seeds. Subscripting is one C-level lookup (no Python call per hashed
    part, as a lookup function would cost); an id not seen before is hashed on the miss."""

    def __missing__(self, node: str) -> tuple[int, int, int]:
        b = node.encode()
        s = self[node] = (hash_bytes(b, 1), hash_bytes(b, 2), hash_bytes(b, 3))
        return s


# Three independent 64-bit hashes of each node id (cached: ids are few), so that a part's hash
# can take up to three nodes as a seed instead of hashing their bytes each time.
SEEDS: Final = _Seeds()


def node_seeds(node: str) -> tuple[int, int, int]:
    """``SEEDS[node]``, for callers off the hot paths."""
    return SEEDS[node]


def dot_hash(dot: Dot, seed: int = 0) -> int:
    return hash_bytes(_Q(dot[0]), SEEDS[dot[1]][0] ^ seed)


def dots_hash(dots: Iterable[Dot], seed: int) -> int:
    h = 0
    seeds = SEEDS
    for ts, node in dots:
        h ^= hash_bytes(_Q(ts), seeds[node][0] ^ seed)
    return h


_SEED_VV: Final = 0x5656  # vector entries and cloud dots hash apart
_SEED_CLOUD: Final = 0xC10D


_QQ: Final = struct.Struct(">QQ").pack


def combine(kind: int, elements: int, ctx: int = 0) -> int:
    """One 64-bit digest of a collection's part digests."""
    return hash_bytes(_QQ(elements, ctx), kind)


class DotContext:
    """The dots a replica (or a delta) has seen."""

    __slots__ = ("_h", "_hv", "cloud", "vv")

    def __init__(self, vv: dict[str, int] | None = None, cloud: set[Dot] | None = None) -> None:
        self.vv: dict[str, int] = vv if vv is not None else {}
        self.cloud: set[Dot] = cloud if cloud is not None else set()
        # XOR of the cloud's dot hashes once first asked for, then kept up to date.
        self._h: int | None = None
        # The vector's hash once asked for, until the vector changes (digest runs on every
        # collection write; the vector changes only when a join or a collection raises it).
        self._hv: int | None = None

    def contains(self, dot: Dot) -> bool:
        return dot[0] <= self.vv.get(dot[1], -1) or dot in self.cloud

    def add(self, dot: Dot) -> None:
        if dot[0] > self.vv.get(dot[1], -1) and dot not in self.cloud:
            self.cloud.add(dot)
            if self._h is not None:
                self._h ^= dot_hash(dot, _SEED_CLOUD)

    def join(self, other: DotContext) -> None:
        """In place: the union of what both have seen. O(other) unless ``other`` carries a
        vector, whose entries may cover dots of this cloud."""
        vv = self.vv
        raised = False
        ovv = other.vv
        if ovv:  # most deltas name removed dots only
            for node, ts in ovv.items():
                if ts > vv.get(node, -1):
                    vv[node] = ts
                    raised = True
                    self._hv = None
        ocloud = other.cloud
        if len(ocloud) == 1:  # a delta removing one element: no sets built
            cloud = self.cloud
            for dot in ocloud:
                if dot[0] > vv.get(dot[1], -1):
                    n = len(cloud)
                    cloud.add(dot)  # hashes the dot once: a membership test first would twice
                    if len(cloud) != n and self._h is not None:
                        self._h ^= dot_hash(dot, _SEED_CLOUD)
        elif ocloud:
            cloud = self.cloud
            if vv:
                new = {d for d in ocloud if d not in cloud and d[0] > vv.get(d[1], -1)}
            else:
                new = ocloud - cloud
            if new:
                cloud |= new
                if self._h is not None:
                    self._h ^= dots_hash(new, _SEED_CLOUD)
        if raised and self.cloud:
            self.compact()

    def compact(self) -> int:
        """Drop cloud dots the vector already covers; returns how many."""
        vv = self.vv
        if not vv or not self.cloud:
            return 0
        covered = [d for d in self.cloud if d[0] <= vv.get(d[1], -1)]
        if covered:
            self.cloud.difference_update(covered)
            if self._h is not None:
                self._h ^= dots_hash(covered, _SEED_CLOUD)
        return len(covered)

    def collect(self, stable: Mapping[str, int]) -> int:
        """Fold in causal stability: every dot of node n up to ``stable[n]`` has reached every
        replica, so a replica lacking one removed it, and the cloud's stable dots can be summed
        up by the vector. The vector is raised only as far as the greatest dot it replaces,
        so a context with nothing to drop does not change. Returns the dots dropped."""
        top: dict[str, int] = {}
        for ts, node in self.cloud:
            if ts <= stable.get(node, -1) and ts > top.get(node, -1):
                top[node] = ts
        if not top:
            return 0
        vv = self.vv
        for node, ts in top.items():
            if ts > vv.get(node, -1):
                vv[node] = ts
                self._hv = None
        return self.compact()

    def stabilize(self, node: str, ts: int) -> int:
        """``collect`` for one node."""
        return self.collect({node: ts})

    def copy(self) -> DotContext:
        c = DotContext(dict(self.vv), set(self.cloud))
        c._h = self._h
        c._hv = self._hv
        return c

    def max_ts(self) -> int:
        vv = self.vv
        m = max(vv.values()) if vv else 0
        for ts, _ in self.cloud:
            if ts > m:
                m = ts
        return m

    def digest(self) -> int:
        """Order-independent 64-bit hash of the vector and the cloud."""
        h = self._h
        if h is None:
            h = self._h = dots_hash(self.cloud, _SEED_CLOUD)
        if not self.vv:
            return h
        hv = self._hv
        if hv is None:
            hv = 0
            for node, ts in self.vv.items():
                hv ^= hash_bytes(dot_bytes(ts, node), _SEED_VV)
            self._hv = hv
        return h ^ hv

    def stable_in(self, stable: Mapping[str, int]) -> bool:
        """Every dot named here is covered by ``stable``."""
        for node, ts in self.vv.items():
            if ts > stable.get(node, -1):
                return False
        return all(ts <= stable.get(node, -1) for ts, node in self.cloud)

    def __bool__(self) -> bool:
        return bool(self.vv) or bool(self.cloud)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, DotContext) and self.vv == other.vv and self.cloud == other.cloud
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DotContext({self.vv!r}, {sorted(self.cloud)!r})"

    def encode(self) -> list[Any]:
        """Canonical: [[node, ts]... sorted, [[ts, node]... sorted]]."""
        return [sorted([n, t] for n, t in self.vv.items()), sorted([t, n] for t, n in self.cloud)]

    @classmethod
    def decode(cls, data: Sequence[Any]) -> DotContext:
        vv, cloud = data
        return cls({n: t for n, t in vv}, {(t, n) for t, n in cloud})


def stamps_stable(dots: Iterable[Dot], stable: Mapping[str, int]) -> bool:
    """Every (ts, node) of ``dots`` is covered by ``stable``."""
    return all(ts <= stable.get(node, -1) for ts, node in dots)
