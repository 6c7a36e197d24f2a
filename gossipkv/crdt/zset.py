"""The sorted set: add-wins membership with dots; scores LWW for ZADD, added up for ZINCRBY.

Each member holds a few *records*, one per write no later write has observed:
``(ts, node, amount, is_set)``. The record's (ts, node) is its dot. ZADD writes a set-record that
replaces every record it observed; ZINCRBY writes an increment record and replaces nothing; ZREM
replaces the observed records with nothing. The causal context (``ctx``) holds the dots a state has
seen removed or replaced; the dots of its live records are seen too, implicitly, so a string of
fresh adds costs no context at all. The join is the ORSWOT one: keep a record both states hold,
or that the other state holds and never saw removed.

The visible score is the newest live set-record's amount (0 without one) plus every live increment,
in dot order. So concurrent ZINCRBYs all count, an increment concurrent with a ZADD lands on top of
it, and a ZREM concurrent with a ZINCRBY keeps the member with only the increment it did not see.

A delta (``delta=True``) lists every member whose records it changes, removed ones with no records,
and its context covers only the dots of those members: merging it costs O(delta). A full state
lists only live members; merging one scans the receiver (anti-entropy, snapshots).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Final, Self

from gossipkv.crdt.causal import SEEDS, Dot, DotContext, combine, dot_bytes, hash_bytes
from gossipkv.crdt.collection import register
from gossipkv.crdt.sortedbytes import SortedBytes

Record = tuple[int, str, float, bool]  # (HLC ts, node, amount, is_set)
Records = tuple[Record, ...]  # sorted by dot: the order increments are summed in
# How a member's records are stored: a lone record as itself (no 1-tuple around it: most
# members have one record, and a tuple costs 48 bytes), several as a tuple of records.
Stored = Record | Records


def _unpack(stored: Stored) -> Records:
    if stored and type(stored[0]) is int:
        return (stored,)
    return stored  # type: ignore[return-value]


def _pack(records: Records) -> Stored:
    return records[0] if len(records) == 1 else records

_ZSET_TYPE: Final = (3).to_bytes(4, "big")  # Redis's OBJ_ZSET
_KIND_SEED: Final = 3
_QDB: Final = struct.Struct(">Qd?").pack


def _member_hash(member: bytes, records: Records) -> int:
    """The hash of one member's state: its name and its live records (one record: packed
    after the name, its node as the seed)."""
    if len(records) == 1:
        r = records[0]
        return hash_bytes(member + _QDB(r[0], r[2], r[3]), SEEDS[r[1]][0])
    parts = [b"%d:" % len(member), member]
    for r in records:
        parts.append(dot_bytes(r[0], r[1]) + _DOUBLE.pack(r[2]) + (b"s" if r[3] else b"i"))
    return hash_bytes(b"".join(parts))


def _stored_score(stored: Stored) -> float:
    """The visible score of a member as stored (non-empty): a lone record's own amount."""
    if type(stored[0]) is int:
        return stored[2]
    return score_of(stored)  # type: ignore[arg-type]


def score_of(records: Records) -> float:
    """The visible score of a member's live records (there is at least one)."""
    if len(records) == 1:
        return records[0][2]
    base: Record | None = None
    for r in records:
        if r[3] and (base is None or (r[0], r[1]) > (base[0], base[1])):
            base = r
    total = base[2] if base is not None else None
    for r in records:
        if not r[3]:
            total = r[2] if total is None else total + r[2]
    return total if total is not None else 0.0


class ZSet:
    """A sorted set's CRDT state or delta, with an index of ``sort_key``s for ranges."""

    KIND: ClassVar[str] = "zset"
    __slots__ = ("_h", "ctx", "delta", "index", "members")

    def __init__(self, delta: bool = False) -> None:
        self.members: dict[bytes, Stored] = {}
        # Only states keep the index: a delta is small, short-lived and never ranged over.
        self.index: SortedBytes = _NO_INDEX if delta else SortedBytes()
        # A delta's context names only dots it removes: most deltas share the empty one.
        self.ctx = _NO_CTX if delta else DotContext()
        self.delta = delta
        # XOR of the live members' hashes, once first asked for; then kept up to date.
        self._h: int | None = None

    # -- reads (ranks and ranges on states only) ---------------------------------------------

    def __len__(self) -> int:
        if self.delta:
            return sum(1 for r in self.members.values() if r)
        return len(self.index)

    def score(self, member: bytes) -> float | None:
        stored = self.members.get(member)
        if not stored:
            return None
        return _stored_score(stored)

    def records(self, member: bytes) -> Records:
        """The member's live records, oldest dot first (none for a missing member)."""
        return _unpack(self.members.get(member, ()))

    def rank(self, member: bytes) -> int | None:
        score = self.score(member)
        if score is None:
            return None
        return int(self.index.index(sort_key(score, member)))

    def at(self, start: int, stop: int) -> Iterator[tuple[float, bytes]]:
        """Entries by rank, ``start`` included, ``stop`` excluded (both within range)."""
        return map(_entry, self.index.islice(start, stop))

    def entry(self, rank: int) -> tuple[float, bytes]:
        """The (score, member) at ``rank`` (negative counts from the end)."""
        return _entry(self.index[rank])

    def bisect_score(self, score: float, after: bool) -> int:
        """The rank of the first entry whose score is >= ``score`` (> when ``after``)."""
        if after:
            if score == math.inf:
                return len(self.index)
            score = math.nextafter(score, math.inf)
        return int(self.index.bisect_left(_score_bytes(score)))

    def members_by_rank(self, rank: int) -> bytes:
        return self.index[rank][_KEY_AT:]

    def bisect_lex(self, member: bytes, after: bool) -> int:
        """The rank of the first entry whose member is >= ``member`` (> when ``after``).

        Meaningful when every score is equal, as Redis's lex ranges are.
        """
        index = self.index
        lo, hi = 0, len(index)
        while lo < hi:
            mid = (lo + hi) // 2
            m = index[mid][_KEY_AT:]
            if m < member or (after and m == member):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def alive(self) -> bool:
        if self.delta:
            return any(self.members.values())
        return bool(self.index)

    def items(self) -> Iterator[tuple[float, bytes]]:
        return map(_entry, self.index)

    # -- the join --------------------------------------------------------------------------------

    def copy(self) -> Self:
        """A state equal to this one (a delta's copy is read as a state)."""
        c = type(self)()
        c.members = {m: r for m, r in self.members.items() if r}
        c.index = self.index.copy() if not self.delta else c._build_index()
        c.ctx = self.ctx.copy()
        c._h = self._h
        return c

    def merge(self, other: Self) -> None:
        """Join ``other`` in place (ORSWOT): O(other) for a delta, O(self + other) otherwise."""
        if self.delta:
            self._to_state()
        ctx, octx = self.ctx, other.ctx
        members = self.members
        for member, stored in other.members.items():
            mine_stored = members.get(member, ())
            if mine_stored == stored:
                continue
            # _unpack, inlined: a lone record is stored bare
            mine: Records = (
                (mine_stored,)  # type: ignore[assignment]
                if mine_stored and type(mine_stored[0]) is int
                else mine_stored
            )
            theirs: Records = (
                (stored,)  # type: ignore[assignment]
                if stored and type(stored[0]) is int
                else stored
            )
            kept: Records
            if not mine:  # a new member: what the other side has that was not removed here
                if not ctx.vv and not ctx.cloud:  # DotContext.__bool__, inlined
                    kept = theirs
                elif len(theirs) == 1:
                    kept = () if _seen(ctx, theirs[0]) else theirs
                else:
                    kept = tuple(r for r in theirs if not _seen(ctx, r))
            elif not theirs:  # a removal: what it did not observe stays
                if len(mine) == 1:
                    r = mine[0]  # _seen(octx, r), inlined
                    seen = r[0] <= octx.vv.get(r[1], -1) or (r[0], r[1]) in octx.cloud
                    kept = () if seen else mine
                else:
                    kept = tuple(r for r in mine if not _seen(octx, r))
            elif len(mine) == 1 and len(theirs) == 1:  # the common update: one record each
                m0, t0 = mine[0], theirs[0]
                if _seen(octx, m0):
                    kept = () if _seen(ctx, t0) else theirs
                elif _seen(ctx, t0):
                    kept = mine
                else:
                    kept = (m0, t0) if m0 < t0 else (t0, m0)
            else:
                merged = [r for r in mine if r in theirs or not _seen(octx, r)]
                merged.extend(r for r in theirs if r not in mine and not _seen(ctx, r))
                merged.sort()
                kept = tuple(merged)
            if kept != mine:
                self._set(member, mine, kept)
        if not other.delta:
            for member, stored in list(self.members.items()):
                if member in other.members or not stored:
                    continue
                mine = _unpack(stored)
                rest = tuple(r for r in mine if not _seen(octx, r))
                if len(rest) != len(mine):
                    self._set(member, mine, rest)
        if octx.vv or octx.cloud:
            ctx.join(octx)

    def settle(self) -> None:
        """Make a delta that became a key's state (the keyspace adopts the first delta of a
        missing key) a state with its index, so that ranks and ranges can be read."""
        if self.delta:
            self._to_state()

    def _to_state(self) -> None:
        """A join's result is a state: removed members are no longer listed. Reading a delta
        as a state is always sound (its context covers only dots of members it lists), it only
        makes merging it cost a scan."""
        self.delta = False
        for member in [m for m, r in self.members.items() if not r]:
            del self.members[member]
        self.index = self._build_index()
        if self.ctx is _NO_CTX:
            self.ctx = DotContext()

    def _build_index(self) -> SortedBytes:
        return SortedBytes(
            sort_key(score_of(_unpack(r)), m) for m, r in self.members.items() if r
        )

    def _set(self, member: bytes, old: Records, new: Records) -> None:
        h = self._h
        if h is not None:
            if old:
                h ^= _member_hash(member, old)
            if new:
                h ^= _member_hash(member, new)
            self._h = h
        # sort_key and score_of inlined for the lone record: this runs on every change
        if old:
            self.index.remove(
                _score_bytes(old[0][2] if len(old) == 1 else score_of(old)) + member
            )
        if new:
            if len(new) == 1:
                self.members[member] = new[0]
                self.index.add(_score_bytes(new[0][2]) + member)
            else:
                self.members[member] = new
                self.index.add(_score_bytes(score_of(new)) + member)
        else:
            self.members.pop(member, None)

    # -- mutators: each returns the delta of one write ------------------------------------------

    def add(
        self, member: bytes, score: float, ts: int, node: str, into: ZSet | None = None
    ) -> ZSet:
        """ZADD: the member's score becomes ``score``, replacing every record seen.

        Each mutator extends ``into`` when given, so one command makes one delta; the dot
        (ts, node) must be fresh for every record.
        """
        d = ZSet(delta=True) if into is None else into
        stored = self.members.get(member)
        if stored:  # a new member observes nothing: the delta keeps the shared empty context
            d._observe(stored)
        d.members[member] = (ts, node, score, True)  # a lone record is stored bare (_pack)
        return d

    def incr(self, member: bytes, by: float, ts: int, node: str, into: ZSet | None = None) -> ZSet:
        """ZINCRBY: one more increment record; earlier records stay, so concurrent ones add up.

        The records of one member grow with its increments until a ZADD or ZREM replaces them.
        """
        d = ZSet(delta=True) if into is None else into
        d._put(member, (*_unpack(d.members.get(member, ())), (ts, node, by, False)))
        return d

    def remove(self, members: Iterable[bytes], into: ZSet | None = None) -> ZSet:
        """ZREM and friends: observed-remove of the given members' records."""
        d = ZSet(delta=True) if into is None else into
        mine = self.members
        listed = d.members
        for member in members:
            stored = mine.get(member)
            if stored:
                d._observe(stored)
                listed[member] = ()  # _put(member, ()), inlined
        return d

    def pop(self, rank: int) -> tuple[ZSet, bytes, float]:
        """ZPOPMIN and ZPOPMAX of one entry: the delta that removes the member at ``rank``
        (negative counts from the end; within range), with that member and its score."""
        member = self.index[rank][_KEY_AT:]
        stored = self.members[member]
        d = ZSet(delta=True)
        d._observe(stored)
        d.members[member] = ()
        return d, member, _stored_score(stored)

    def _put(self, member: bytes, records: Records) -> None:
        """Delta building: list ``member`` with ``records``."""
        self.members[member] = _pack(records)

    def removal(self, stamp: tuple[int, str] | None = None) -> Self:
        """The delta that observed-removes every member this state shows."""
        d = type(self)(delta=True)
        for member, stored in self.members.items():
            if stored:
                d._observe(stored)
                d.members[member] = ()
        return d

    def restamp(self, now: Callable[[], int], node: str) -> ZSet:
        """The same members and scores under fresh set-records (RENAME's copy at the target,
        whose context may already cover this key's own dots)."""
        d = ZSet(delta=True)
        for member, stored in self.members.items():
            if stored:
                d._put(member, ((now(), node, score_of(_unpack(stored)) + 0.0, True),))
        return d

    def _observe(self, stored: Stored) -> None:
        """Delta building: the context covers the dots of a member's (non-empty) records."""
        ctx = self.ctx
        first = stored[0]
        if type(first) is int:  # a lone record, stored bare
            dot: Dot = (first, stored[1])  # type: ignore[assignment]
            if ctx is _NO_CTX:
                self.ctx = DotContext(None, {dot})  # a new context has seen nothing else
            else:
                ctx.add(dot)
            return
        if ctx is _NO_CTX:
            ctx = self.ctx = DotContext()
        records: Records = stored  # type: ignore[assignment]
        for r in records:
            ctx.add((r[0], r[1]))

    # -- bookkeeping -----------------------------------------------------------------------------

    def max_ts(self) -> int:
        ctx = self.ctx
        m = ctx.max_ts() if ctx.vv or ctx.cloud else 0
        for stored in self.members.values():
            if not stored:
                continue
            first = stored[0]
            if type(first) is int:  # a lone record (see Stored): no 1-tuple built
                if first > m:
                    m = first
                continue
            for r in stored:
                ts: int = r[0]  # type: ignore[index,assignment]
                if ts > m:
                    m = ts
        return m

    def encode(self) -> list[Any]:
        return [
            self.delta,
            [[m, [list(r) for r in _unpack(recs)]] for m, recs in sorted(self.members.items())],
            self.ctx.encode(),
        ]

    @classmethod
    def decode(cls, data: Sequence[Any]) -> Self:
        delta, members, ctx = data
        z = cls(bool(delta))
        for m, recs in members:
            z.members[m] = _pack(tuple((r[0], r[1], float(r[2]), bool(r[3])) for r in recs))
        if not z.delta:
            z.index = z._build_index()
        z.ctx = DotContext.decode(ctx)
        return z

    def digest(self) -> int:
        """A stable 64-bit hash of the state: live members' records and the context (not
        whether it is still a delta, nor a delta's removed-member markers)."""
        h = self._h
        if h is None:
            h = 0
            for member, stored in self.members.items():
                if stored:
                    h ^= _member_hash(member, _unpack(stored))
            if not self.delta:
                self._h = h  # a delta's records are never edited in place by _set
        return combine(_KIND_SEED, h, self.ctx.digest())

    def collect(self, stable: Mapping[str, int], cstable: Mapping[str, int] | None = None) -> int:
        """Causal-stability GC: the context's stable replaced or removed dots fold into its
        vector."""
        if self.ctx is _NO_CTX:
            return 0
        return self.ctx.collect(stable)

    def stable_in(
        self, stable: Mapping[str, int], cstable: Mapping[str, int] | None = None
    ) -> bool:
        """Every record's dot and every context dot is covered by ``stable``."""
        for stored in self.members.values():
            for r in _unpack(stored):
                if r[0] > stable.get(r[1], -1):
                    return False
        return self.ctx.stable_in(stable)

    def value_digest(self) -> bytes:
        """Redis's xorObjectDigest of a zset (debug.c): the type mixed, then per element
        SHA1-mix(member, "%.17g" score) XORed in (order-independent)."""
        digest = _mix(0, _ZSET_TYPE)
        for member, stored in self.members.items():
            if not stored:
                continue
            score = score_of(_unpack(stored))
            element = _mix(_mix(0, member), b"%.17g" % score)
            digest ^= _sha1(element.to_bytes(20, "big"))
        return digest.to_bytes(20, "big")


_NO_INDEX: Final[SortedBytes] = SortedBytes()  # the shared, never mutated, index of deltas
_DOUBLE: Final = struct.Struct(">d")
_pack_d: Final = _DOUBLE.pack
_unpack_d: Final = _DOUBLE.unpack
_INVERT: Final = bytes(255 - b for b in range(256))  # bytes.translate table: every bit flipped
_KEY_AT: Final = 9  # where the member starts in an index entry


def _score_bytes(score: float) -> bytes:
    """9 bytes that sort as the score does: 1 and the IEEE 754 bytes for a score >= 0, 0 and the
    bytes inverted for a negative one (whose bytes sort in reverse). -0 sorts as 0, which Redis
    treats it as. One pack and no integer arithmetic: this runs on every ZADD and ZPOPMIN."""
    if score >= 0.0:
        return b"\x01" + _pack_d(score + 0.0)
    return b"\x00" + _pack_d(score).translate(_INVERT)


def sort_key(score: float, member: bytes) -> bytes:
    """The index's entry: one bytes object whose memcmp order is Redis's (score, member) order,
    so each comparison in the index is a single memcmp rather than a tuple comparison."""
    return _score_bytes(score) + member


def _entry(key: bytes) -> tuple[float, bytes]:
    if key[0]:
        score: float = _DOUBLE.unpack_from(key, 1)[0]
    else:
        score = _unpack_d(key[1:_KEY_AT].translate(_INVERT))[0]
    return score, key[_KEY_AT:]


_NO_CTX: Final = DotContext()  # the shared, never mutated, context of deltas that remove nothing


def _seen(ctx: DotContext, r: Record) -> bool:
    """``ctx`` saw the record's dot removed (DotContext.contains, inlined for the join)."""
    return r[0] <= ctx.vv.get(r[1], -1) or (r[0], r[1]) in ctx.cloud


_LLONG_HALF: Final = float((2**63 - 1) // 2)


def d2string(score: float) -> bytes:
    """Redis 7.0's d2string (util.c): how listpacks, ZSCAN and digests spell a score."""
    if math.isinf(score):
        return b"inf" if score > 0 else b"-inf"
    if score == 0:
        return b"-0" if math.copysign(1.0, score) < 0 else b"0"
    if -_LLONG_HALF <= score <= _LLONG_HALF and score == int(score):
        return b"%d" % int(score)
    return b"%.17g" % score


def _sha1(data: bytes) -> int:
    return int.from_bytes(hashlib.sha1(data).digest(), "big")


def _mix(digest: int, data: bytes) -> int:
    """Redis's mixDigest: XOR SHA1(data) in, then hash the result."""
    return _sha1((digest ^ _sha1(data)).to_bytes(20, "big"))


register(ZSet)
