"""The set type: an add-wins observed-remove set with dots and one causal context (ORSWOT).

Each member holds the dots of the adds that made it present, usually one; the set holds one
DotContext. The context implicitly covers every dot the members hold, so it stores only the dots
of removed adds (SREM, SPOP, DEL): a member is never kept as a tombstone. In a join a dot held by
one side survives unless the other side's context covers it, so SREM removes exactly the adds
it observed and an add it never saw wins (add-wins).

Every member added gets its own dot (one clock tick each): a removal context names the dots it
removed, and a dot shared by two members would remove both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

from gossipkv.crdt.causal import Dot, DotContext
from gossipkv.crdt.collection import register

Dots = Dot | frozenset[Dot]  # one dot, the common case, stored without a container

_TYPE_SET = (2).to_bytes(4, "big")  # Redis's OBJ_SET


def _dots(d: Dots) -> Iterable[Dot]:
    return (d,) if d.__class__ is tuple else d  # type: ignore[return-value]


def _pack(dots: set[Dot]) -> Dots | None:
    if not dots:
        return None
    if len(dots) == 1:
        return next(iter(dots))
    return frozenset(dots)


def _sha1(data: bytes) -> int:
    return int.from_bytes(hashlib.sha1(data).digest(), "big")


class ORSet:
    """A set's state, and equally a delta of it."""

    KIND: ClassVar[str] = "set"
    __slots__ = ("_pool", "ctx", "members", "scope")

    def __init__(
        self, members: dict[bytes, Dots] | None = None, ctx: DotContext | None = None
    ) -> None:
        self.members: dict[bytes, Dots] = members if members is not None else {}
        self.ctx = ctx if ctx is not None else DotContext()
        # Members to draw random picks from (SPOP, SRANDMEMBER): built on the first pick and
        # kept while merges only remove, so a run of pops costs O(1) each, not a copy each.
        self._pool: list[bytes] | None = None
        # On a local SREM/SPOP delta only: the members whose dots its context names, so that
        # merging it touches those members instead of scanning the set. Never encoded; a
        # delta from the wire has none and is merged by the full scan, with the same result.
        self.scope: list[bytes] | None = None

    # -- the join ------------------------------------------------------------------------------

    def copy(self) -> ORSet:
        return ORSet(dict(self.members), self.ctx.copy())  # Dots are immutable

    def merge(self, other: ORSet) -> None:
        if other.members:
            self._pool = None  # it may add members the pool lacks
        mine = self.members
        ctx = self.ctx
        octx = other.ctx
        theirs = other.members
        for m, od in theirs.items():
            d = mine.get(m)
            if d is None:
                if od.__class__ is tuple:
                    if not ctx.contains(od):
                        mine[m] = od
                else:
                    packed = _pack({x for x in _dots(od) if not ctx.contains(x)})
                    if packed is not None:
                        mine[m] = packed
            elif d != od:
                ds = set(_dots(d))
                os_ = set(_dots(od))
                kept = (ds & os_) | {x for x in os_ - ds if not ctx.contains(x)}
                kept |= {x for x in ds - os_ if not octx.contains(x)}
                packed = _pack(kept)
                if packed is None:
                    del mine[m]
                else:
                    mine[m] = packed
        if octx:
            gone: list[bytes] = []
            scope = other.scope
            candidates = (
                ((m, mine[m]) for m in scope if m in mine) if scope is not None else mine.items()
            )
            for m, d in candidates:
                if m in theirs:
                    continue
                if d.__class__ is tuple:
                    if octx.contains(d):
                        gone.append(m)
                else:
                    kept = {x for x in _dots(d) if not octx.contains(x)}
                    if len(kept) != len(d):
                        packed = _pack(kept)
                        if packed is None:
                            gone.append(m)
                        else:
                            mine[m] = packed
            for m in gone:
                del mine[m]
            ctx.join(octx)

    # -- what a reader sees ---------------------------------------------------------------------

    def alive(self) -> bool:
        return bool(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, member: object) -> bool:
        return member in self.members

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.members)

    def random_member(self, randrange: Callable[[int], int]) -> bytes:
        """A uniformly random member of a non-empty set, amortised O(1) over a run of picks."""
        members = self.members
        if not members:
            raise ValueError("no member to pick from an empty set")
        pool = self._pool
        if pool is None:
            pool = self._pool = list(members)
        while pool:
            i = randrange(len(pool))
            m = pool[i]
            if m in members:
                return m
            pool[i] = pool[-1]  # removed since the pool was built: drop it for good
            pool.pop()
        self._pool = None
        return self.random_member(randrange)

    # -- mutators: each returns a delta ---------------------------------------------------------

    def add(self, now: Callable[[], int], node: str, members: Iterable[bytes]) -> ORSet:
        """SADD: a fresh dot for each member not present yet (present ones need no write)."""
        delta: dict[bytes, Dots] = {}
        mine = self.members
        for m in members:
            if m not in mine and m not in delta:
                delta[m] = (now(), node)
        return ORSet(delta)

    def remove(self, members: Iterable[bytes]) -> ORSet:
        """SREM: observed-remove; the context names exactly the dots this replica saw."""
        cloud: set[Dot] = set()
        mine = self.members
        members = list(members)
        for m in members:
            d = mine.get(m)
            if d is not None:
                cloud.update(_dots(d))
        delta = ORSet(None, DotContext(None, cloud))
        delta.scope = list(dict.fromkeys(m for m in members if m in mine))
        return delta

    def removal(self) -> ORSet:
        cloud: set[Dot] = set()
        for d in self.members.values():
            cloud.update(_dots(d))
        return ORSet(None, DotContext(None, cloud))

    def restamp(self, now: Callable[[], int], node: str) -> ORSet:
        """The same members under fresh dots (RENAME, SMOVE-like copies to another key)."""
        return ORSet({m: (now(), node) for m in self.members})

    # -- wire form, clock, digest ---------------------------------------------------------------

    def max_ts(self) -> int:
        m = self.ctx.max_ts()
        for d in self.members.values():
            for ts, _ in _dots(d):
                if ts > m:
                    m = ts
        return m

    def encode(self) -> list[Any]:
        return [
            sorted([m, sorted([t, n] for t, n in _dots(d))] for m, d in self.members.items()),
            self.ctx.encode(),
        ]

    @classmethod
    def decode(cls, data: list[Any]) -> ORSet:
        rows, ctx = data
        members: dict[bytes, Dots] = {}
        for m, dots in rows:
            packed = _pack({(t, n) for t, n in dots})
            if packed is not None:
                members[m] = packed
        return cls(members, DotContext.decode(ctx))

    def value_digest(self) -> bytes:
        """Redis's set digest: mix(0, type), then every member XORed in."""
        typed = _sha1((_sha1(_TYPE_SET)).to_bytes(20, "big"))
        out = typed
        for m in self.members:
            out ^= _sha1(m)
        return out.to_bytes(20, "big")


register(ORSet)
