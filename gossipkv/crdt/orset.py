"""The set type: an add-wins observed-remove set with dots and one causal context (ORSWOT).

Each member holds the dots of the adds that made it present, usually one; the set holds one
DotContext. The context implicitly covers every dot the members hold, so it stores only the dots
of removed adds (SREM, SPOP, DEL): a member is never kept as a tombstone. In a join a dot held by
one side survives unless the other side's context covers it, so SREM removes exactly the adds
it observed and an add it never saw wins (add-wins).

Every member added gets its own dot (one clock tick each): a removal context names the dots it
removed, and a dot shared by two members would remove both.

A delta names the members it touches (``scope``, as ORMap's): its context covers dots of those
members only, so merging it visits them instead of scanning the set. The scope travels with the
delta on the wire; a merge leaves the set it merged into with scope None. It is a hint, not
state: the digest ignores it, and a delta adopted as a key's state is read like any state.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Final

from gossipkv.crdt.causal import SEEDS, Dot, DotContext, combine, dot_bytes, hash_bytes
from gossipkv.crdt.collection import register

# A member's dots. One dot, the common case, is stored as one int, (ts << 16) | the node's
# index in this process's table of node ids: 36 bytes instead of a 56-byte tuple and its int.
# Several dots (concurrent adds) are a frozenset of (ts, node). Never on the wire as such.
Dots = int | frozenset[Dot]

_TYPE_SET: Final = (2).to_bytes(4, "big")  # Redis's OBJ_SET

_NODE_INDEX: Final[dict[str, int]] = {}
_NODE_OF: Final[list[str]] = []


def _node_index(node: str) -> int:
    i = _NODE_INDEX.get(node)
    if i is None:
        i = _NODE_INDEX[node] = len(_NODE_OF)
        _NODE_OF.append(node)
    return i


def _packed(ts: int, node: str) -> int:
    return ts << 16 | _node_index(node)


def _dot(d: int) -> Dot:
    return (d >> 16, _NODE_OF[d & 0xFFFF])


def _dots(d: Dots) -> Iterable[Dot]:
    return (_dot(d),) if type(d) is int else d  # type: ignore[return-value]


def _pack(dots: set[Dot]) -> Dots | None:
    if not dots:
        return None
    if len(dots) == 1:
        return _packed(*next(iter(dots)))
    return frozenset(dots)


_KIND_SEED: Final = 2
_Q: Final = struct.Struct(">Q").pack


def _member_hash(m: bytes, d: Dots) -> int:
    """The hash of one member's state: its name and its dots (one dot: its ts after the name,
    its node's hash as the seed)."""
    if type(d) is int:
        return hash_bytes(m + _Q(d >> 16), SEEDS[_NODE_OF[d & 0xFFFF]][0])
    return hash_bytes(m + b"".join(dot_bytes(*x) for x in sorted(_dots(d))) + b"%d" % len(m), 7)


def _sha1(data: bytes) -> int:
    return int.from_bytes(hashlib.sha1(data).digest(), "big")


class ORSet:
    """A set's state, and equally a delta of it."""

    KIND: ClassVar[str] = "set"
    __slots__ = ("_h", "_pool", "ctx", "members", "scope")

    def __init__(
        self,
        members: dict[bytes, Dots] | None = None,
        ctx: DotContext | None = None,
        scope: frozenset[bytes] | None = None,
    ) -> None:
        self.members: dict[bytes, Dots] = members if members is not None else {}
        self.ctx = ctx if ctx is not None else DotContext()
        # Members to draw random picks from (SPOP, SRANDMEMBER): built on the first pick, then
        # merges append the members they add and picks drop the removed ones they meet, so
        # pops cost O(1) each, not a copy each. A member removed and re-added before a pick
        # met it is in twice until then (a slight bias, never a wrong pick).
        self._pool: list[bytes] | None = None
        # On a delta: the members whose dots its context names (see the module's docstring).
        self.scope = scope
        # XOR of the members' hashes, once first asked for; then kept up to date by merge.
        self._h: int | None = None

    # -- the join ------------------------------------------------------------------------------

    def copy(self) -> ORSet:
        c = ORSet(dict(self.members), self.ctx.copy(), self.scope)  # Dots are immutable
        c._h = self._h
        return c

    def settle(self) -> None:
        """A delta became a key's state: drop its scope hint."""
        self.scope = None

    def merge(self, other: ORSet) -> None:
        pool = self._pool  # new members join it, so pops never rebuild it after adds
        h = self._h
        mine = self.members
        ctx = self.ctx
        octx = other.ctx
        theirs = other.members
        for m, od in theirs.items():
            d = mine.get(m)
            if d is None:
                if type(od) is int:
                    if not ctx.contains(_dot(od)):
                        mine[m] = od
                        if h is not None:
                            h ^= _member_hash(m, od)
                        if pool is not None:
                            pool.append(m)
                else:
                    packed = _pack({x for x in _dots(od) if not ctx.contains(x)})
                    if packed is not None:
                        mine[m] = packed
                        if h is not None:
                            h ^= _member_hash(m, packed)
                        if pool is not None:
                            pool.append(m)
            elif d != od:
                ds = set(_dots(d))
                os_ = set(_dots(od))
                kept = (ds & os_) | {x for x in os_ - ds if not ctx.contains(x)}
                kept |= {x for x in ds - os_ if not octx.contains(x)}
                packed = _pack(kept)
                if h is not None:
                    h ^= _member_hash(m, d)
                if packed is None:
                    del mine[m]
                else:
                    mine[m] = packed
                    if h is not None:
                        h ^= _member_hash(m, packed)
        ovv = octx.vv
        ocloud = octx.cloud
        if ovv or ocloud:  # DotContext.__bool__, inlined
            gone: list[bytes] = []
            scope = other.scope
            for m in mine if scope is None else scope:
                d = mine.get(m)
                if d is None or m in theirs:
                    continue
                if type(d) is int:  # octx.contains(_dot(d)), inlined: one dot, packed
                    ts: int = d >> 16
                    node = _NODE_OF[d & 0xFFFF]
                    if ts <= ovv.get(node, -1) or (ts, node) in ocloud:
                        gone.append(m)
                else:
                    kept = {x for x in _dots(d) if not octx.contains(x)}
                    if len(kept) != len(d):  # type: ignore[arg-type]
                        packed = _pack(kept)
                        if packed is None:
                            gone.append(m)
                        else:
                            if h is not None:
                                h ^= _member_hash(m, d) ^ _member_hash(m, packed)
                            mine[m] = packed
            for m in gone:
                if h is not None:
                    h ^= _member_hash(m, mine[m])
                del mine[m]
            ctx.join(octx)
        self._h = h
        self.scope = None  # what was merged into is a state now

    # -- what a reader sees ---------------------------------------------------------------------

    def alive(self) -> bool:
        return bool(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, member: object) -> bool:
        return member in self.members

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.members)

    def random_member(self, randrange: Callable[[int], int], take: bool = False) -> bytes:
        """A uniformly random member of a non-empty set, amortised O(1) over a run of picks.

        With ``take`` (SPOP, whose caller removes the member from the set) the pick leaves
        the pick pool at once, so a run of pops draws only live members."""
        members = self.members
        if not members:
            raise ValueError("no member to pick from an empty set")
        pool = self._pool
        if pool is None:
            pool = self._pool = list(members)
        while pool:
            i = randrange(len(pool))
            m = pool[i]
            live = m in members
            if live and not take:
                return m
            pool[i] = pool[-1]  # taken, or removed since the pool was built: gone for good
            pool.pop()
            if live:
                return m
        self._pool = None
        return self.random_member(randrange, take)

    # -- mutators: each returns a delta ---------------------------------------------------------

    def add(self, now: Callable[[], int], node: str, members: Iterable[bytes]) -> ORSet:
        """SADD: a fresh dot for each member not present yet (present ones need no write)."""
        delta: dict[bytes, Dots] = {}
        mine = self.members
        ix = _node_index(node)
        for m in members:
            if m not in mine and m not in delta:
                delta[m] = now() << 16 | ix
        return ORSet(delta)

    def remove(self, members: Iterable[bytes]) -> ORSet:
        """SREM: observed-remove; the context names exactly the dots this replica saw."""
        cloud: set[Dot] = set()
        mine = self.members
        seen: list[bytes] = []
        for m in members:
            d = mine.get(m)
            if d is not None:
                if type(d) is int:
                    cloud.add((d >> 16, _NODE_OF[d & 0xFFFF]))
                else:
                    cloud.update(d)  # type: ignore[arg-type]
                seen.append(m)
        return ORSet(None, DotContext(None, cloud), frozenset(seen))

    def removal(self, stamp: tuple[int, str] | None = None) -> ORSet:
        cloud: set[Dot] = set()
        for d in self.members.values():
            cloud.update(_dots(d))
        return ORSet(None, DotContext(None, cloud))  # it names every member: a scan costs the same

    def restamp(self, now: Callable[[], int], node: str) -> ORSet:
        """The same members under fresh dots (RENAME, SMOVE-like copies to another key)."""
        ix = _node_index(node)
        return ORSet({m: now() << 16 | ix for m in self.members})

    # -- wire form, clock, digest ---------------------------------------------------------------

    def max_ts(self) -> int:
        ctx = self.ctx
        m = ctx.max_ts() if ctx.vv or ctx.cloud else 0
        for d in self.members.values():
            if type(d) is int:  # one packed dot: no tuple built (the keyspace asks deltas)
                ts: int = d >> 16
                if ts > m:
                    m = ts
                continue
            for ts, _ in d:  # type: ignore[union-attr]
                if ts > m:
                    m = ts
        return m

    def encode(self) -> list[Any]:
        """Canonical members and context, then a delta's scope (None on a state)."""
        return [
            sorted([m, sorted([t, n] for t, n in _dots(d))] for m, d in self.members.items()),
            self.ctx.encode(),
            sorted(self.scope) if self.scope is not None else None,
        ]

    @classmethod
    def decode(cls, data: Sequence[Any]) -> ORSet:
        rows, ctx = data[:2]
        members: dict[bytes, Dots] = {}
        for m, dots in rows:
            packed = _pack({(t, n) for t, n in dots})
            if packed is not None:
                members[m] = packed
        scope = data[2] if len(data) > 2 else None
        return cls(members, DotContext.decode(ctx), frozenset(scope) if scope is not None else None)

    def digest(self) -> int:
        """A stable 64-bit hash of the state (members, dots, context; not the scope hint)."""
        h = self._h
        if h is None:
            h = 0
            for m, d in self.members.items():
                h ^= _member_hash(m, d)
            self._h = h
        return combine(_KIND_SEED, h, self.ctx.digest())

    def collect(self, stable: Mapping[str, int], cstable: Mapping[str, int] | None = None) -> int:
        """Causal-stability GC: the context's stable removed dots fold into its vector."""
        return self.ctx.collect(stable)

    def stable_in(
        self, stable: Mapping[str, int], cstable: Mapping[str, int] | None = None
    ) -> bool:
        """Every dot here (members' and context's) is covered by ``stable``."""
        for d in self.members.values():
            for ts, node in _dots(d):
                if ts > stable.get(node, -1):
                    return False
        return self.ctx.stable_in(stable)

    def value_digest(self) -> bytes:
        """Redis's set digest: mix(0, type), then every member XORed in."""
        typed = _sha1((_sha1(_TYPE_SET)).to_bytes(20, "big"))
        out = typed
        for m in self.members:
            out ^= _sha1(m)
        return out.to_bytes(20, "big")


register(ORSet)
