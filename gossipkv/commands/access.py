"""How collection commands reach their key: type-checked lookup, and the write of a delta.

Every collection command reads through ``lookup_coll`` (WRONGTYPE for a key of another kind, as
Redis's lookupKeyReadOrReply + checkType) and writes through ``write_coll``, so the delta goes the
one path (Keyspace.write) and replicates like any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from gossipkv.commands import errors
from gossipkv.commands.replies import ErrorReply
from gossipkv.store.entry import Entry

if TYPE_CHECKING:
    from gossipkv.commands.session import Session

C = TypeVar("C")


def lookup_coll(s: Session, key: bytes, cls: type[C]) -> C | None:
    """The live collection of kind ``cls`` at ``key``; None when the key is missing."""
    e = s.server.keyspace.lookup(key)
    if e is None:
        return None
    coll = e.visible_coll()
    if coll is None or coll.__class__ is not cls:
        raise ErrorReply(errors.WRONGTYPE)
    return coll


def lookup_read(s: Session, key: bytes, cls: type[C]) -> C | None:
    """lookup_coll for read commands: counts the keyspace hit or miss as Redis does."""
    ks = s.server.keyspace
    coll = lookup_coll(s, key, cls)
    if coll is None:
        ks.keyspace_misses += 1
    else:
        ks.keyspace_hits += 1
    return coll


def write_coll(s: Session, key: bytes, delta: object, creating: bool = False) -> None:
    """Write a collection delta through the one path.

    ``creating`` is accepted for the design's vocabulary; the type-clash stamp of a collection
    is its newest dot (Entry.kind), so a creating write needs nothing more than its fresh dots.
    """
    ks = s.server.keyspace
    ks.write(key, Entry(coll=delta))  # type: ignore[arg-type]


def delete_key(s: Session, key: bytes) -> bool:
    """Observed-remove the whole key (its collection included), as DEL does."""
    return s.server.keyspace.delete(key)
