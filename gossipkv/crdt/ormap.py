"""The hash: an observed-remove map of fields, each an LWW register or a counter (DESIGN.md).

A field's presence is its dots: every HSET of a field writes the value under a fresh dot
(ts, node), one per field, and observes (removes) the dots it replaces, so one writer leaves one
dot per field. Concurrent HSETs leave one dot each; the field reads the value of the greatest dot
(last writer wins by (HLC, node id)) and the next write observes them all. HDEL observes the
field's dots: a concurrent HSET it never saw keeps its dot, so the field survives (add wins).
One causal context per hash records every dot it has seen, so removed writes leave no trace.

HINCRBY/HINCRBYFLOAT move a per-field counter (crdt/counter.py): concurrent increments all
count; HSET and HDEL reset only the increments they observed, so an increment concurrent with
them lands on top. A counter's floor must outlive the field to judge an increment still in
flight, so a field that ever counted keeps its counter after HDEL until ``collect`` finds its
actors settled (the causal frontier has passed the resets that covered them); a field left with
neither writes nor counter then goes.

A delta names the fields it touches (``scope``): its context covers dots of those fields only,
so merging it visits those fields instead of the whole hash. ``scope`` None (states) means any
field may be concerned. It is a hint, not state: merging with scope None is the same join, and a
merge leaves the map it merged into with scope None, so states carry no scope (a delta adopted
as a key's state keeps its own until its first merge).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Final

import msgpack

from gossipkv.crdt.causal import SEEDS, DotContext, combine, dot_bytes, hash_bytes
from gossipkv.crdt.collection import register
from gossipkv.crdt.counter import Counter
from gossipkv.crdt.numeric import (
    Number,
    add,
    format_number,
    normalize,
    parse_float,
    parse_int,
)

# A register write: (HLC ts, node, value). Its dot is (ts, node).
Reg = tuple[int, str, bytes]

_TYPE_HASH: Final = (4).to_bytes(4, "big")  # Redis's OBJ_HASH, as debug.c mixes it in
_KIND_SEED: Final = 4
_QI: Final = struct.Struct(">QI").pack
# Fields a collect call looks at when it scans a hash for settled counters (ORMap.collect).
_SCAN_CHUNK: Final = 16384


class Field:
    """A field with several live writes or a counter; a lone write is stored as a bare Reg."""

    __slots__ = ("counter", "regs")

    def __init__(self, regs: list[Reg], counter: Counter | None) -> None:
        self.regs = regs
        self.counter = counter


FieldState = Reg | Field


def _regs(fs: FieldState) -> list[Reg]:
    return [fs] if isinstance(fs, tuple) else fs.regs


def _counter(fs: FieldState) -> Counter | None:
    return None if isinstance(fs, tuple) else fs.counter


def _pack(regs: list[Reg], counter: Counter | None) -> FieldState | None:
    """The smallest form of a field: None when nothing is left of it."""
    if counter is None:
        if len(regs) == 1:
            return regs[0]
        if not regs:
            return None
    regs.sort()
    return Field(regs, counter)


def _field_hash(name: bytes, fs: FieldState) -> int:
    """The hash of one field's state: its name, its writes, its counter."""
    if type(fs) is tuple:  # one write: ts and name length packed, its node as the seed
        r: Reg = fs
        return hash_bytes(_QI(r[0], len(name)) + name + r[2], SEEDS[r[1]][0])
    head = b"%d:" % len(name) + name
    f: Field = fs  # type: ignore[assignment]
    parts = [head]
    for r in sorted(f.regs):
        parts.append(dot_bytes(r[0], r[1]) + b"%d:" % len(r[2]) + r[2])
    if f.counter is not None:
        parts.append(msgpack.packb(f.counter.encode()))
    return hash_bytes(b"|".join(parts))


def _replace(
    fields: dict[bytes, FieldState], name: bytes, old: FieldState | None,
    packed: FieldState | None, h: int | None,
) -> int | None:
    """Put ``packed`` (None: nothing left) in place of field ``name``, whose state was ``old``
    (None: already hashed out); returns the digest ``h`` kept up to date."""
    if h is not None and old is not None:
        h ^= _field_hash(name, old)
    if packed is None:
        del fields[name]
    else:
        fields[name] = packed
        if h is not None:
            h ^= _field_hash(name, packed)
    return h


def _number(value: bytes | None) -> Number | None:
    if value is None:
        return 0
    i = parse_int(value)
    return i if i is not None else parse_float(value)


class _Scan:
    """A scan of a hash for settled counters, spread over collect calls."""

    __slots__ = ("at", "names")

    def __init__(self, names: list[bytes]) -> None:
        self.names = names
        self.at = 0


class ORMap:
    """field -> FieldState, the causal context of the whole hash, and a delta's scope."""

    KIND: ClassVar[str] = "hash"
    __slots__ = ("_counted", "_h", "_scan", "ctx", "fields", "scope")

    def __init__(
        self,
        fields: dict[bytes, FieldState] | None = None,
        ctx: DotContext | None = None,
        scope: frozenset[bytes] | None = None,
    ) -> None:
        self.fields: dict[bytes, FieldState] = fields if fields is not None else {}
        self.ctx = ctx if ctx is not None else DotContext()
        self.scope = scope
        # XOR of the fields' hashes, once first asked for; then kept up to date by merge.
        self._h: int | None = None
        # Some field may hold a counter: set by merge, cleared when a scan for settled counters
        # starts and set again by each counter it finds, so that a hash that never counted is
        # not scanned every pass.
        self._counted = True
        # The scan under way: the names to visit, and how many were visited (see collect).
        self._scan: _Scan | None = None

    # -- the join -------------------------------------------------------------------------------

    def copy(self) -> ORMap:
        fields: dict[bytes, FieldState] = {}
        for name, fs in self.fields.items():
            if isinstance(fs, tuple):
                fields[name] = fs
            else:
                c = fs.counter
                fields[name] = Field(list(fs.regs), c.copy() if c is not None else None)
        out = ORMap(fields, self.ctx.copy(), self.scope)
        out._h = self._h
        out._counted = self._counted or self._scan is not None
        return out

    def settle(self) -> None:
        """A delta became a key's state: drop its scope hint."""
        self.scope = None

    def merge(self, other: ORMap) -> None:
        """ORSWOT's join per field: a write stays if both sides hold it, or if the side that
        lacks it never saw it; counters join as counters."""
        mine = self.fields
        ctx = self.ctx
        octx = other.ctx
        ofields = other.fields
        h = self._h
        for name, ofs in ofields.items():
            fs = mine.get(name)
            if fs is not None and type(fs) is tuple and fs == ofs:
                continue  # the same write on both sides
            if h is not None and fs is not None:
                h ^= _field_hash(name, fs)  # before _join_field may change its counter
            packed: FieldState | None
            if fs is None:
                if isinstance(ofs, tuple):  # a new field's one write: the common case
                    packed = None if ctx.contains((ofs[0], ofs[1])) else ofs
                else:
                    kept = [r for r in ofs.regs if not ctx.contains((r[0], r[1]))]
                    oc = ofs.counter
                    if oc is not None:
                        self._counted = True
                    packed = _pack(kept, oc.copy() if oc is not None else None)
            elif type(fs) is tuple and type(ofs) is tuple:
                # The common overwrite: one write each side (a dot names one write, so
                # different writes have different dots).
                keep = not octx.contains((fs[0], fs[1]))
                okeep = not ctx.contains((ofs[0], ofs[1]))
                if keep and okeep:
                    packed = Field(sorted((fs, ofs)), None)
                else:
                    packed = ofs if okeep else fs if keep else None
            else:
                if _counter(ofs) is not None:
                    self._counted = True
                was_dead = not isinstance(fs, tuple) and _read(fs) is None
                packed = _join_field(fs, ctx, ofs, octx)
                if was_dead:  # a field that comes back goes last, as Redis appends it
                    del mine[name]
            if packed is None:
                mine.pop(name, None)
            else:
                mine[name] = packed
                if h is not None:
                    h ^= _field_hash(name, packed)
        unnamed = mine if other.scope is None else other.scope
        for name in [n for n in unnamed if n not in ofields and n in mine]:
            fs = mine[name]
            regs = _regs(fs)
            kept = [r for r in regs if not octx.contains((r[0], r[1]))]
            if len(kept) != len(regs):
                h = _replace(mine, name, fs, _pack(kept, _counter(fs)), h)
        self._h = h
        if octx.vv or octx.cloud:  # a write to new fields observed nothing
            ctx.join(octx)
        self.scope = None  # what was merged into is a state now, no longer one write's delta

    # -- what a reader sees -------------------------------------------------------------------

    def get(self, name: bytes) -> bytes | None:
        """The field's value as HGET reads it, or None when the field is absent."""
        fs = self.fields.get(name)
        if fs is None:
            return None
        if isinstance(fs, tuple):
            return fs[2]
        return _read(fs)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for name, fs in self.fields.items():
            if isinstance(fs, tuple):
                yield name, fs[2]
            else:
                v = _read(fs)
                if v is not None:
                    yield name, v

    def names(self) -> list[bytes]:
        return [name for name, _ in self.items()]

    def __len__(self) -> int:
        n = 0
        for fs in self.fields.values():
            if isinstance(fs, tuple) or _read(fs) is not None:
                n += 1
        return n

    def alive(self) -> bool:
        for fs in self.fields.values():  # noqa: SIM110 (a loop: no generator on the hot path)
            if type(fs) is tuple or _read(fs) is not None:  # type: ignore[arg-type]
                return True
        return False

    def exact_number(self, name: bytes) -> Number | None:
        """The exact number a field reads as (0 when absent), None when it is not a number."""
        fs = self.fields.get(name)
        if fs is None:
            return 0
        regs = _regs(fs)
        base = _number(max(regs)[2] if regs else None)
        if base is None:
            return None
        c = _counter(fs)
        pending = c.pending() if c is not None else None
        return base if pending is None else add(base, pending)

    # -- deltas ---------------------------------------------------------------------------------

    def assign(self, tick: Callable[[], int], node: str, values: dict[bytes, bytes]) -> ORMap:
        """HSET: each field's write, under its own dot, observes the field's current writes
        and resets its increments. ``tick`` gives a fresh HLC timestamp per field."""
        dfields: dict[bytes, FieldState] = {}
        cloud: set[tuple[int, str]] = set()
        fields = self.fields
        for name, value in values.items():
            reg = (tick(), node, value)
            fs = fields.get(name)
            if fs is None:
                dfields[name] = reg
            elif type(fs) is tuple:
                cloud.add((fs[0], fs[1]))
                dfields[name] = reg
            else:
                for r in fs.regs:  # type: ignore[union-attr]
                    cloud.add((r[0], r[1]))
                c = fs.counter  # type: ignore[union-attr]
                dfields[name] = reg if c is None else Field([reg], c.reset((reg[0], node)))
        return ORMap(dfields, DotContext(None, cloud), frozenset(values))

    def remove(self, names: Iterable[bytes], stamp: tuple[int, str] | None = None) -> ORMap:
        """HDEL: observe the fields' writes and reset their increments; ``stamp``, a fresh
        (HLC, node) of the remover, dates the resets (an undated one is never collected)."""
        delta = ORMap()
        dctx = delta.ctx
        seen: list[bytes] = []
        for name in names:
            fs = self.fields.get(name)
            if fs is None:
                continue
            seen.append(name)
            for r in _regs(fs):
                dctx.add((r[0], r[1]))
            c = _counter(fs)
            if c is not None:
                delta.fields[name] = Field([], c.reset(stamp))
        delta.scope = frozenset(seen)
        return delta

    def increment(self, ts: int, node: str, name: bytes, by: Number) -> ORMap:
        """HINCRBY/HINCRBYFLOAT: the node's running total for the field moves by ``by``; the
        field's current writes stay, and the counter adds to their value, as INCR on a string."""
        fs = self.fields.get(name)
        c = _counter(fs) if fs is not None else None
        counter = (c if c is not None else Counter()).increment(node, ts, by)
        t = counter.totals[node]
        if type(t[1]) is not int:
            counter.totals[node] = (ts, normalize(t[1]), t[2])
        return ORMap({name: Field([], counter)}, scope=frozenset((name,)))

    def removal(self, stamp: tuple[int, str] | None = None) -> ORMap:
        """The delta that observed-removes everything this state shows (DEL, expiry)."""
        delta = ORMap(ctx=self.ctx.copy())
        for name, fs in self.fields.items():
            for r in _regs(fs):
                delta.ctx.add((r[0], r[1]))
            c = _counter(fs)
            if c is not None:
                delta.fields[name] = Field([], c.reset(stamp))
        return delta

    def max_ts(self) -> int:
        """The context holds the dots of removed writes, the fields those of live ones, so
        merges only raise this (collecting a settled counter may lower it; a key in a type
        clash, whose rule compares it, keeps its counters). O(fields): the keyspace asks it of
        deltas."""
        m = self.ctx.max_ts()
        for fs in self.fields.values():
            if isinstance(fs, tuple):
                if fs[0] > m:
                    m = fs[0]
                continue
            for r in fs.regs:
                if r[0] > m:
                    m = r[0]
            if fs.counter is not None:
                for t in fs.counter.totals.values():
                    if t[0] > m:
                        m = t[0]
        return m

    # -- wire form and digests -----------------------------------------------------------

    def encode(self) -> list[Any]:
        """Canonical (fields sorted by name, writes by dot), then the scope hint of a delta."""
        rows: list[Any] = []
        for name in sorted(self.fields):
            fs = self.fields[name]
            c = _counter(fs)
            rows.append(
                [name, [list(r) for r in sorted(_regs(fs))], c.encode() if c is not None else None]
            )
        scope = sorted(self.scope) if self.scope is not None else None
        return [rows, self.ctx.encode(), scope]

    @classmethod
    def decode(cls, data: Sequence[Any]) -> ORMap:
        rows, ctx, scope = data
        fields: dict[bytes, FieldState] = {}
        for name, regs, counter in rows:
            packed = _pack(
                [(r[0], r[1], r[2]) for r in regs],
                Counter.decode(counter) if counter is not None else None,
            )
            if packed is not None:
                fields[name] = packed
        return cls(
            fields, DotContext.decode(ctx), frozenset(scope) if scope is not None else None
        )

    def digest(self) -> int:
        """A stable 64-bit hash of the state (fields, writes, counters, context; not the
        scope hint)."""
        h = self._h
        if h is None:
            h = 0
            for name, fs in self.fields.items():
                h ^= _field_hash(name, fs)
            self._h = h
        return combine(_KIND_SEED, h, self.ctx.digest())

    def collect(self, stable: Mapping[str, int], cstable: Mapping[str, int] | None = None) -> int:
        """Causal-stability GC: the context's stable removed dots fold into its vector, and
        the fields' counters drop the actors the causal frontier has settled (Counter.settled;
        None holds them); a field left with neither writes nor counter goes.

        A hash that may hold a counter is scanned for them _SCAN_CHUNK fields per call, from a
        list of its names taken when the scan starts, so that no call is O(fields) however
        large the hash: fields removed meanwhile are skipped, fields added meanwhile wait for
        the next scan. A scan that finds no counter leaves the hash unscanned until a merge
        brings one."""
        n = self.ctx.collect(stable)
        if cstable is None:
            return n
        scan = self._scan
        if scan is None:
            if not self._counted:
                return n
            self._counted = False
            scan = self._scan = _Scan(list(self.fields))
        names = scan.names
        end = min(scan.at + _SCAN_CHUNK, len(names))
        fields = self.fields
        todo: list[tuple[bytes, Field, Counter, list[str]]] = []
        for i in range(scan.at, end):
            name = names[i]
            fs = fields.get(name)
            if fs is None or type(fs) is tuple:
                continue
            f: Field = fs  # type: ignore[assignment]
            c = f.counter
            if c is None:
                continue
            self._counted = True
            gone = c.settled(stable, cstable)
            if gone:
                todo.append((name, f, c, gone))
        scan.at = end
        if end == len(names):
            self._scan = None
        h = self._h
        for name, f, c, gone in todo:
            if h is not None:
                h ^= _field_hash(name, f)  # before forget changes the counter it hashes
            c.forget(gone)
            n += len(gone)
            h = _replace(fields, name, None, _pack(f.regs, None if c.empty() else c), h)
        self._h = h
        return n

    def stable_in(
        self, stable: Mapping[str, int], cstable: Mapping[str, int] | None = None
    ) -> bool:
        """Every stamp here is covered by ``stable``, and every field's counter is wholly
        settled (Counter.forgettable; never without ``cstable``)."""
        for fs in self.fields.values():
            c = _counter(fs)
            if c is not None and (cstable is None or not c.forgettable(stable, cstable)):
                return False
            for r in _regs(fs):
                if r[0] > stable.get(r[1], -1):
                    return False
        return self.ctx.stable_in(stable)

    def value_digest(self) -> bytes:
        """Redis's DEBUG DIGEST-VALUE of a hash (debug.c): the type mixed in, then the XOR over
        fields of SHA1(mix(mix(0, field), value))."""
        out = _mix(0, _TYPE_HASH)
        for name, value in self.items():
            ele = _mix(_mix(0, name), value)
            out ^= int.from_bytes(hashlib.sha1(ele.to_bytes(20, "big")).digest(), "big")
        return out.to_bytes(20, "big")


def _mix(digest: int, data: bytes) -> int:
    """Redis's mixDigest (as store/digest.py; crdt/ may not import store/)."""
    h = int.from_bytes(hashlib.sha1(data).digest(), "big")
    return int.from_bytes(hashlib.sha1((digest ^ h).to_bytes(20, "big")).digest(), "big")


def _read(f: Field) -> bytes | None:
    """A field's visible value: the newest write plus increments no reset observed.

    A non-numeric value with increments pending reads as the value alone (DESIGN.md).
    """
    value = max(f.regs)[2] if f.regs else None
    c = f.counter
    pending = c.pending() if c is not None else None
    if pending is None:
        return value
    base = _number(value)
    if base is None:
        return value
    return format_number(add(base, pending))


def _join_field(
    fs: FieldState, ctx: DotContext, ofs: FieldState, octx: DotContext
) -> FieldState | None:
    if fs == ofs:
        return fs
    regs = _regs(fs)
    oregs = _regs(ofs)
    odots = {(r[0], r[1]) for r in oregs}
    dots = {(r[0], r[1]) for r in regs}
    kept = [r for r in regs if (r[0], r[1]) in odots or not octx.contains((r[0], r[1]))]
    kept += [r for r in oregs if (r[0], r[1]) not in dots and not ctx.contains((r[0], r[1]))]
    c = _counter(fs)
    oc = _counter(ofs)
    if oc is not None:
        if c is None:
            c = oc.copy()
        else:
            c.merge(oc)
    return _pack(kept, c)


register(ORMap)
