"""The protocol every collection CRDT (hash, set, sorted set, list) implements, and their registry.

A collection object is both a key's state and a delta of it, like store.entry.Entry, which holds
it in its ``coll`` slot. The registry lets Entry.decode rebuild a collection from its kind name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final, Protocol, Self


class Collection(Protocol):
    KIND: ClassVar[str]  # "hash" | "set" | "zset" | "list"

    def copy(self) -> Self: ...

    def merge(self, other: Self) -> None:
        """The join, in place; never keeps a reference to ``other``'s mutable parts."""

    def alive(self) -> bool:
        """Holds a visible element (an empty collection is a missing key, as in Redis)."""

    def removal(self, stamp: tuple[int, str] | None = None) -> Self:
        """The delta that observed-removes everything this state shows. ``stamp``, a fresh
        (HLC, node) of the remover, dates the removal where the kind keeps tombstones (a
        list, whose tombstones are collected once their removal is causally stable)."""

    def max_ts(self) -> int:
        """The greatest HLC ts inside; the clock observes it on merge, and it is the
        collection's stamp in the type-clash rule."""

    def encode(self) -> list[Any]:
        """msgpack-friendly and canonical: equal states encode equal."""

    @classmethod
    def decode(cls, data: Sequence[Any]) -> Self: ...

    def settle(self) -> None:
        """This object, built as a delta, is now a key's state: drop delta-only hints (a
        scope), so that it encodes as the same state reached by merging would."""

    def digest(self) -> int:
        """A stable 64-bit hash of the whole CRDT state (everything merge looks at, removal
        metadata included; no local caches or delta hints): equal states hash equal whatever
        the order of merges. Kept up to date per change, so it is O(1) after a write."""

    def collect(self, stable: Mapping[str, int], cstable: Mapping[str, int] | None = None) -> int:
        """Causal-stability GC. ``stable[node] = ts``: every write of ``node`` stamped up to
        ts has reached every replica. Drops removal metadata no delivery can need any more
        and returns how many items went; merging anything every replica had seen changes
        nothing visible afterwards, and replicas that saw the same writes and collect with
        the same vectors keep equal digests. ``cstable`` is the causal frontier (see
        cluster/watermark.py), which only a list's tombstones need; None: unknown."""

    def stable_in(
        self, stable: Mapping[str, int], cstable: Mapping[str, int] | None = None
    ) -> bool:
        """Every stamp in this state is covered by ``stable`` and nothing in it still judges
        a write in flight (a removed key holding it may be forgotten). ``cstable`` is the causal
        frontier, which a hash's counters need; None: unknown."""

    def value_digest(self) -> bytes:
        """20 bytes, Redis's DEBUG DIGEST-VALUE of the visible value (debug.c
        xorObjectDigest), the type mixed in first. Lists, whose elements are mixed in order,
        also provide ``mix_digest(start: bytes) -> bytes`` for the keyed dataset digest; the
        other kinds' element digests are XORed, so their keyed digest is derived from this."""


COLLECTIONS: Final[dict[str, type[Collection]]] = {}


def register(cls: type[Collection]) -> type[Collection]:
    """Class decorator / call: makes ``cls`` decodable by its KIND."""
    COLLECTIONS[cls.KIND] = cls
    return cls
