"""The protocol every collection CRDT (hash, set, sorted set, list) implements, and their registry.

A collection object is both a key's state and a delta of it, like store.entry.Entry, which holds
it in its ``coll`` slot. The registry lets Entry.decode rebuild a collection from its kind name.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, Self


class Collection(Protocol):
    KIND: ClassVar[str]  # "hash" | "set" | "zset" | "list"

    def copy(self) -> Self: ...

    def merge(self, other: Self) -> None:
        """The join, in place; never keeps a reference to ``other``'s mutable parts."""

    def alive(self) -> bool:
        """Holds a visible element (an empty collection is a missing key, as in Redis)."""

    def removal(self) -> Self:
        """The delta that observed-removes everything this state shows."""

    def max_ts(self) -> int:
        """The greatest HLC ts inside; the clock observes it on merge, and it is the
        collection's stamp in the type-clash rule."""

    def encode(self) -> list[Any]:
        """msgpack-friendly and canonical: equal states encode equal."""

    @classmethod
    def decode(cls, data: list[Any]) -> Self: ...

    def value_digest(self) -> bytes:
        """20 bytes, Redis's DEBUG DIGEST-VALUE of the visible value (debug.c
        xorObjectDigest), the type mixed in first. Lists, whose elements are mixed in order,
        also provide ``mix_digest(start: bytes) -> bytes`` for the keyed dataset digest; the
        other kinds' element digests are XORed, so their keyed digest is derived from this."""


COLLECTIONS: dict[str, type[Collection]] = {}


def register(cls: type[Collection]) -> type[Collection]:
    """Class decorator / call: makes ``cls`` decodable by its KIND."""
    COLLECTIONS[cls.KIND] = cls
    return cls
