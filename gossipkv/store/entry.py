"""One key's replicated state: a string register, its counter, its expiry, its removals.

An Entry is both a key's state and a delta: a client write builds a small Entry holding only
what it changes, and ``merge`` joins it into the key's state exactly as it joins a peer's delta
or a full state from anti-entropy. The join is commutative, associative and idempotent.

- (ts, node, value): the string value, last writer wins by (HLC, node id).
- counter: increments not yet observed by a reset (see crdt/counter.py).
- exp: the expiry, an LWW register (ts, node, deadline ms); deadline 0 means none.
- ctx: the key-level observed-remove context of DEL/UNLINK/FLUSHALL/expiry reaping: a register
  or expiry whose stamp it covers is removed; a concurrent write it never saw survives.
- coll: a collection CRDT (hash, set, sorted set, list) when the key holds one, else None; plain
  strings pay one empty slot and nothing else.

Type clash (DESIGN.md): a key may hold a string part and collections of several kinds at once,
after concurrent writes created it as different types on different nodes. Merge keeps every
part (so it stays a plain join and replicas converge whatever the order of delivery); what a
client sees is decided by a function of the state: among the parts that hold something, the one
whose newest write is latest by HLC (a collection on a tie with the string, then by kind name).
The others stay hidden until a removal that observed them clears them; no per-key stamp object
is needed, and a plain string pays one empty slot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgpack
import xxhash

from gossipkv.crdt import context as causal
from gossipkv.crdt.collection import COLLECTIONS, Collection
from gossipkv.crdt.counter import Counter
from gossipkv.crdt.numeric import (
    Number,
    add,
    format_number,
    normalize,
    parse_float,
    parse_int,
    subtract,
)
from gossipkv.crdt.register import wins

Expiry = tuple[int, str, int]  # (HLC ts, node, absolute deadline in ms; 0 = persistent)


class Entry:
    __slots__ = ("coll", "counter", "ctx", "exp", "node", "ts", "value")

    def __init__(
        self,
        ts: int = 0,
        node: str = "",
        value: bytes | None = None,
        counter: Counter | None = None,
        exp: Expiry | None = None,
        ctx: causal.Context | None = None,
        coll: Collection | dict[str, Collection] | None = None,
    ) -> None:
        self.ts = ts
        self.node = node
        self.value = value
        self.counter = counter
        self.exp = exp
        self.ctx = ctx
        self.coll = coll

    def copy(self) -> Entry:
        return Entry(
            self.ts,
            self.node,
            self.value,
            self.counter.copy() if self.counter is not None else None,
            self.exp,
            dict(self.ctx) if self.ctx is not None else None,
            _copy_coll(self.coll),
        )

    def sole_coll(self) -> Collection | None:
        """The collection when this entry is nothing else (every data-type write's delta and
        an untouched collection key): merge, stamps and digest then defer to it alone."""
        c = self.coll
        if (
            c is not None
            and not self.ts
            and self.counter is None
            and self.exp is None
            and self.ctx is None
            and type(c) is not dict
        ):
            return c  # type: ignore[return-value]
        return None

    # -- the join ----------------------------------------------------------------------------

    def merge(self, d: Entry) -> None:
        """Join ``d`` into this state. Never keeps a reference to ``d``'s mutable parts."""
        sole = d.sole_coll()
        if sole is not None and type(self.coll) is type(sole):
            self.coll.merge(sole)  # a collection write: the common case
            return
        dc = d.coll
        if d.ts and wins(d.ts, d.node, self.ts, self.node):
            self.ts = d.ts
            self.node = d.node
            self.value = d.value
        if d.counter is not None:
            if self.counter is None:
                self.counter = d.counter.copy()
            else:
                self.counter.merge(d.counter)
        if d.exp is not None and (self.exp is None or wins(d.exp[0], d.exp[1], *self.exp[:2])):
            self.exp = d.exp
        if d.ctx is not None:
            if self.ctx is None:
                self.ctx = dict(d.ctx)
            else:
                causal.join(self.ctx, d.ctx)
        if dc is not None:
            if isinstance(dc, dict):
                for x in dc.values():
                    self._merge_coll(x)
            else:
                self._merge_coll(dc)

    def _merge_coll(self, x: Collection) -> None:
        c = self.coll
        if c is None:
            self.coll = _settled(x.copy())
        elif isinstance(c, dict):
            cur = c.get(x.KIND)
            if cur is None:
                c[x.KIND] = _settled(x.copy())
            else:
                cur.merge(x)
        elif type(c) is type(x):
            c.merge(x)
        else:  # two collection kinds clash: keep both, visibility decides
            self.coll = {c.KIND: c, x.KIND: _settled(x.copy())}

    def colls(self) -> list[Collection]:
        """Every collection part, visible or hidden."""
        c = self.coll
        if c is None:
            return []
        if isinstance(c, dict):
            return list(c.values())
        return [c]

    def coll_of(self, kind: str) -> Collection | None:
        """The collection part of one kind, visible or not."""
        for c in self.colls():
            if kind == c.KIND:
                return c
        return None

    # -- the type-clash rule -------------------------------------------------------------------

    def _string_stamp(self) -> int:
        m = self.ts
        c = self.counter
        if c is not None:
            for t in c.totals.values():
                if t[0] > m:
                    m = t[0]
        return m

    def _string_alive(self) -> bool:
        if self.has_value():
            return True
        c = self.counter
        return c is not None and c.pending() is not None

    def visible_coll(self) -> Collection | None:
        """The collection a client sees, or None when the key is a string (or missing)."""
        c = self.coll
        if c is None:
            return None
        if not isinstance(c, dict) and not self.ts and self.counter is None:
            return c  # the common case: a pure collection key
        best: Collection | None = None
        for x in self.colls():
            if x.alive() and (
                best is None or (x.max_ts(), x.KIND) > (best.max_ts(), best.KIND)
            ):
                best = x
        if best is None:
            # Nothing in any collection: the string shows if it holds something; else the
            # key is empty, and the (empty) collection part stands for it.
            return None if self._string_alive() else self.colls()[0]
        if self._string_alive() and self._string_stamp() > best.max_ts():
            return None
        return best

    def kind(self) -> str:
        """What TYPE answers for a live entry."""
        c = self.visible_coll()
        return "string" if c is None else c.KIND

    # -- what a reader sees ------------------------------------------------------------------

    def has_value(self) -> bool:
        """The register holds a value no removal has observed."""
        ctx = self.ctx
        return self.value is not None and (ctx is None or self.ts > ctx.get(self.node, -1))

    def alive(self) -> bool:
        if self.coll is not None:
            vc = self.visible_coll()
            if vc is not None:
                return vc.alive()
        return self._string_alive()

    def deadline(self) -> int:
        """The visible expiry deadline in ms, 0 for none."""
        exp = self.exp
        if exp is None or causal.covers(self.ctx, exp[0], exp[1]):
            return 0
        return exp[2]

    def read(self) -> bytes:
        """The string value a client reads: the register plus increments no reset observed.

        A non-numeric value with increments pending reads as the value alone (DESIGN.md).
        Only call on a live entry.
        """
        c = self.counter
        pending = c.pending() if c is not None else None
        value = self.value if self.has_value() else None
        if pending is None:
            return value if value is not None else b"0"
        base = self.numeric_base(value)
        if base is None:
            return value or b""
        return format_number(add(base, pending))

    @staticmethod
    def numeric_base(value: bytes | None) -> Number | None:
        if value is None:
            return 0
        i = parse_int(value)
        if i is not None:
            return i
        return parse_float(value)

    # -- deltas ------------------------------------------------------------------------------

    def removal(self, stamp: tuple[int, str] | None = None, date_key: bool = True) -> Entry:
        """The observed-remove delta that deletes everything this state shows.

        ``stamp`` (a fresh (HLC ts, node) of the remover) goes into the key-level context
        unless ``date_key`` is false: the remover has seen all its own writes, so it covers
        nothing more, but it dates the removal, so that ``is_stable`` holds the tombstone until
        the removal itself has reached every member (an unstamped removal is as old as the
        newest write it saw). It always dates a list's removed elements (RGA.collect) and the
        counters' floors (Counter.settled waits for the causal frontier to pass it).
        """
        ctx: causal.Context = {}
        if stamp is not None and date_key:
            causal.observe(ctx, stamp[0], stamp[1])
        if self.value is not None:
            causal.observe(ctx, self.ts, self.node)
        if self.exp is not None:
            causal.observe(ctx, self.exp[0], self.exp[1])
        counter = self.counter.reset(stamp) if self.counter is not None else None
        parts = [x.removal(stamp) for x in self.colls()]
        coll: Any = None
        if len(parts) == 1:
            coll = parts[0]
        elif parts:
            coll = {x.KIND: x for x in parts}
        return Entry(counter=counter, ctx=ctx, coll=coll)

    def stamps(self) -> int:
        """The greatest HLC timestamp in this state, for the clock to observe."""
        c = self.sole_coll()
        if c is not None:
            return c.max_ts()  # a collection's delta
        m = self.ts
        if self.exp is not None and self.exp[0] > m:
            m = self.exp[0]
        if self.ctx:
            m = max(m, *self.ctx.values())
        if self.counter is not None:
            for t in self.counter.totals.values():
                if t[0] > m:
                    m = t[0]
        for x in self.colls():
            m = max(m, x.max_ts())
        return m

    # -- wire form and digests -----------------------------------------------------------

    def encode(self) -> list[Any]:
        """msgpack-friendly and canonical: equal states encode to equal lists.

        A plain string value (most writes) encodes as [ts, node, value] alone.
        """
        if (
            self.counter is None
            and self.exp is None
            and self.ctx is None
            and self.coll is None
        ):
            return [self.ts, self.node, self.value]
        return [
            *self._string_fields(),
            sorted([x.KIND, x.encode()] for x in self.colls()) if self.coll is not None else None,
        ]

    def _string_fields(self) -> list[Any]:
        """The wire form of everything but the collections: register, counter, expiry and
        key-level context (encode's first six fields, and what state_digest hashes of them)."""
        return [
            self.ts,
            self.node,
            self.value,
            self.counter.encode() if self.counter is not None else None,
            list(self.exp) if self.exp is not None else None,
            sorted(self.ctx.items()) if self.ctx is not None else None,
        ]

    @classmethod
    def decode(cls, data: Sequence[Any]) -> Entry:
        if len(data) == 3:
            return cls(data[0], data[1], data[2])
        ts, node, value, counter, exp, ctx = data[:6]
        coll: Any = None
        if len(data) > 6 and data[6] is not None:
            parts = [COLLECTIONS[kind].decode(enc) for kind, enc in data[6]]
            coll = parts[0] if len(parts) == 1 else {x.KIND: x for x in parts}
        return cls(
            ts,
            node,
            value,
            Counter.decode(counter) if counter is not None else None,
            (exp[0], exp[1], exp[2]) if exp is not None else None,
            {n: t for n, t in ctx} if ctx is not None else None,
            coll,
        )

    def settle(self) -> None:
        """This entry, built as a delta, was adopted as a key's state: its collections drop
        their delta-only hints."""
        for x in self.colls():
            x.settle()

    def state_digest(self) -> int:
        """A stable 64-bit hash of the whole state, removals included (for anti-entropy).

        The string part (register, counter, expiry, key-level context: a few small fields)
        is hashed from its encoding; each collection contributes its own digest, which it
        keeps up to date per change, so this is O(1)-ish even for a huge collection.
        """
        sole = self.sole_coll()
        if sole is not None:
            return sole.digest()  # a pure collection key
        c = self.coll
        if c is None and self.exp is None and self.ctx is None:
            # A register with a counter (INCR's keys): no encoding, a hash per actor.
            v = self.value
            h = int(xxhash.xxh3_64_intdigest(
                b"%d %b %d " % (self.ts, self.node.encode(), -1 if v is None else len(v))
                + (v or b"")
            ))
            return h if self.counter is None else h ^ self.counter.digest()
        head = self._string_fields()
        if c is not None:
            if type(c) is dict:
                parts = sorted(c.items())
                head.extend([k, x.digest()] for k, x in parts)
            else:
                head.append([c.KIND, c.digest()])  # type: ignore[union-attr]
        return int(xxhash.xxh3_64_intdigest(msgpack.packb(head)))

    def collect(self, stable: Mapping[str, int], cstable: Mapping[str, int] | None = None) -> int:
        """Causal-stability GC of this key's removal metadata; returns the items dropped.

        ``stable[node] = ts``: every write of ``node`` stamped up to ts has reached every
        replica; ``cstable`` is the causal frontier, which list tombstones and counters' floors
        wait for (None holds them). The collections fold their stable removed dots into their
        vectors. The key-level context goes once every entry in it is stable: no write it covers
        can still arrive, and the removal that put the remover's own stamp there has reached
        every member, so a peer handed this state instead of the removal has the removal
        already (one entry alone being stable says neither). The register and expiry it covered
        are first made inert (the value dropped, the deadline zeroed, their stamps kept so an
        old copy never wins).
        The counter drops the actors a reset covered for good (Counter.settled), and goes
        when none is left. A key holding several parts (a type clash) keeps its counters: the
        type-clash rule compares their stamps.
        """
        n = 0
        c = self.counter
        coll = self.coll
        clash = coll is not None and (
            type(coll) is dict or c is not None or self.ts != 0
        )
        for x in self.colls():
            n += x.collect(stable, None if clash and x.KIND == "hash" else cstable)
        if c is not None and coll is None and cstable is not None:
            gone = c.settled(stable, cstable)
            if gone:
                c.forget(gone)
                n += len(gone)
                if c.empty():
                    self.counter = None
        ctx = self.ctx
        if ctx and all(ts <= stable.get(node, -1) for node, ts in ctx.items()):
            for node, ts in ctx.items():
                if self.node == node and self.ts <= ts and self.value is not None:
                    self.value = None
                exp = self.exp
                if exp is not None and exp[1] == node and exp[0] <= ts and exp[2]:
                    self.exp = (exp[0], node, 0)
            n += len(ctx)
            self.ctx = None
        return n

    def is_stable(
        self, stable: Mapping[str, int], cstable: Mapping[str, int] | None = None
    ) -> bool:
        """Every stamp in this entry, its key-level context included, is covered by
        ``stable``, and nothing in it can still change what a later write shows: if the entry
        is also not alive (a tombstone), it may be forgotten.

        ``stable`` must name every node of the cluster; ``cstable`` is the causal frontier
        (None: unknown). Not forgettable, whatever ``stable`` says: a visible deadline (an
        EXPIRE that overtook the write it applies to), a counter with an actor the causal
        frontier has not settled (Counter.settled: its floor may still judge an increment in
        flight), a list removal not collected yet (RGA.collect).
        """
        c = self.counter
        if c is not None and (cstable is None or not c.forgettable(stable, cstable)):
            return False
        if self.deadline():
            return False
        # A removed register still beats a concurrent write stamped below it (LWW): only when
        # every node's future writes are stamped above it may it go.
        floor = min(stable.values(), default=-1)
        if self.ts > floor:
            return False
        exp = self.exp
        if exp is not None and exp[0] > floor:
            return False
        if self.ctx:
            for node, ts in self.ctx.items():
                if ts > stable.get(node, -1):
                    return False
        return all(x.stable_in(stable, cstable) for x in self.colls())


def _settled(x: Collection) -> Collection:
    x.settle()
    return x


def _copy_coll(c: Any) -> Any:
    if c is None:
        return None
    if type(c) is dict:
        return {k: x.copy() for k, x in c.items()}
    return c.copy()


# -- mutators: each returns the delta of one client write ---------------------------------------


def assign(ts: int, node: str, value: bytes, old: Entry | None, keep_ttl: bool = False,
           deadline: int | None = None) -> Entry:
    """SET-like write of a whole string value: replaces the register and resets the increments
    it observed; clears a visible TTL unless ``keep_ttl``; sets ``deadline`` when given."""
    d = Entry(ts, node, value)
    if old is not None:
        if old.counter is not None:
            d.counter = old.counter.reset((ts, node))
        if deadline is None and not keep_ttl and old.deadline():
            d.exp = (ts, node, 0)
        if old.coll is not None:  # SET replaces a key of any type: observed-remove the old one
            d.coll = old.removal((ts, node)).coll
    if deadline is not None:
        d.exp = (ts, node, deadline)
    return d


def increment(ts: int, node: str, by: Number, old: Entry | None) -> Entry:
    """INCRBY/INCRBYFLOAT: one node's running total moves by ``by``.

    ``old`` is the key's live state or None: a removed key's counter is wholly covered by the
    removal's floor, so the node's next increment starts a new running total anyway.
    """
    counter = old.counter if old is not None and old.counter is not None else Counter()
    delta = counter.increment(node, ts, by)
    t = delta.totals[node]
    if type(t[1]) is not int:
        delta.totals[node] = (ts, normalize(t[1]), t[2])
    return Entry(counter=delta)


def increment_to(ts: int, node: str, target: Number, old: Entry | None) -> Entry:
    """INCRBYFLOAT: the increment that makes ``old`` read exactly ``target``.

    Redis rounds each INCRBYFLOAT result in long double; adding the exact difference between
    that result and what the key reads keeps Redis's digits for one writer, while increments
    made concurrently on other nodes still all count.
    """
    current = exact_number(old)
    if current is None:
        raise ValueError("the value is not a number")
    return increment(ts, node, subtract(normalize(target), current), old)


def exact_number(e: Entry | None) -> Number | None:
    """The exact number a state reads as (0 for none), or None when its value is not one."""
    if e is None:
        return 0
    base = Entry.numeric_base(e.value if e.has_value() else None)
    if base is None:
        return None
    pending = e.counter.pending() if e.counter is not None else None
    return base if pending is None else add(base, pending)


def expire(ts: int, node: str, deadline: int) -> Entry:
    """EXPIRE family and PERSIST (deadline 0): the expiry register alone."""
    return Entry(exp=(ts, node, deadline))


# The collection kinds Entry.decode must know even where no command module is loaded.
import gossipkv.crdt.ormap  # noqa: E402
import gossipkv.crdt.orset  # noqa: E402
import gossipkv.crdt.rga  # noqa: E402
import gossipkv.crdt.zset  # noqa: E402, F401
