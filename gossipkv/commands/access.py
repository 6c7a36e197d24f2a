"""How collection commands reach their key: type-checked lookup, and the write of a delta.

Every collection command reads through ``lookup_coll`` (WRONGTYPE for a key of another kind, as
Redis's lookupKeyReadOrReply + checkType) and writes through ``write_coll``, so the delta goes the
one path (Keyspace.write) and replicates like any other. A removal that empties its key is
dated with a fresh stamp of this node in the key-level context (see Entry.removal), so that the
tombstone it leaves is kept until that removal has reached every member.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

import xxhash

from gossipkv.commands import errors
from gossipkv.commands.replies import ErrorReply
from gossipkv.crdt.ormap import ORMap
from gossipkv.crdt.orset import ORSet
from gossipkv.crdt.rga import RGA
from gossipkv.crdt.zset import ZSet
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
    if coll is None or type(coll) is not cls:
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
    e = ks.live.get(key)
    if (
        e is not None
        and not e.ts  # no string part: the stamp must cover nothing the delta does not remove
        and e.counter is None
        and (c := e.coll) is not None
        # a lone collection with no string part is the visible one (Entry.visible_coll)
        and _empties(e.visible_coll() if type(c) is dict else c, delta)
    ):
        ks.write(key, Entry(coll=delta, ctx={ks.node: ks.clock.now()}))  # type: ignore[arg-type]
        return
    # positional: cheaper than keywords on every collection write
    ks.write(key, Entry(0, "", None, None, None, None, delta))  # type: ignore[arg-type]


def _empties(cur: object, delta: object) -> bool:
    """Whether ``delta`` removes every element ``cur`` shows and adds none: O(1), from the
    counts a removal delta names (a hash's dead counter fields make it answer no)."""
    if type(cur) is not type(delta):  # class identity: cheaper than isinstance per kind
        return False
    if type(delta) is ORSet and type(cur) is ORSet:
        return (
            not delta.members and delta.scope is not None
            and len(delta.scope) >= len(cur.members)
        )
    if type(delta) is RGA and type(cur) is RGA:
        return not delta.elements and bool(delta.gone) and len(delta.gone) >= len(cur)
    if type(delta) is ZSet and type(cur) is ZSet:
        # a state lists its live members only, so its dict's size is its length
        n = len(cur) if cur.delta else len(cur.members)
        return len(delta.members) >= n and not any(delta.members.values())
    if type(delta) is ORMap and type(cur) is ORMap:
        return (
            delta.scope is not None
            and len(delta.scope) >= len(cur.fields)
            and all(v is None for _, v in delta.items())
        )
    return False


def delete_key(s: Session, key: bytes) -> bool:
    """Observed-remove the whole key (its collection included), as DEL does."""
    return s.server.keyspace.delete(key)


def scan_page(cursor: int, count: int, names: Iterable[bytes]) -> tuple[int, list[bytes]]:
    """One page of SSCAN/ZSCAN over a large collection: names ordered by their 64-bit hash,
    the cursor being the hash to resume at, so that a name present for the whole iteration is
    returned exactly once whatever changes in between (as HSCAN pages a large hash). O(n log n)
    per call: the collection keeps no order by hash."""
    ordered = sorted((xxhash.xxh3_64_intdigest(n), n) for n in names)
    start = bisect_left(ordered, (cursor,))
    end = min(start + count, len(ordered))
    while end < len(ordered) and ordered[end][0] == ordered[end - 1][0]:
        end += 1  # names of one hash share a page
    return (ordered[end][0] if end < len(ordered) else 0), [n for _, n in ordered[start:end]]
