"""A list as an RGA sequence (Replicated Growable Array, Roh et al. 2011).

Every element has a unique id (HLC ts, node) and is inserted after a reference element (or the
head, ``None``). An insert's id is greater than its reference's, because the clock observes every
id it merges; so the elements form a tree rooted at the head whose pre-order, visiting children
greatest id first, is the list. Concurrent inserts at the same place are thereby ordered by id,
the same on every replica, and all of them are kept.

Removal (POP, LREM, LTRIM, DEL) marks an observed element removed; its value is dropped and only
its id and reference stay, so later inserts that name it as reference still land in place. A
removal that arrives before the insert it removes is remembered in ``gone`` until the insert does.
LSET rewrites an element's value as an LWW register stamped (HLC, node); removal beats it.

Local operations work at the ends of the visible order (a deque of ids), so LPUSH/RPUSH/LPOP/
RPOP are O(1). A merged insert takes a fast path when its place in the visible order is plain
(at the head ahead of every other head child, or after the last visible element); otherwise the
visible order is rebuilt from the tree on the next read.
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from itertools import islice
from typing import Any, ClassVar, Final

from gossipkv.crdt.causal import SEEDS, combine, dot_hash, dots_hash, hash_bytes
from gossipkv.crdt.collection import register

Dot = tuple[int, str]

TYPE_LIST: Final = 1  # Redis's OBJ_LIST, mixed into DEBUG DIGEST


# Merges removing more elements than this invalidate the visible order instead of editing it.
_BULK_MERGE: Final = 64

_KIND_SEED: Final = 1
_SEED_GONE: Final = 0x60E


_PACK: Final = struct.Struct(">QQQB").pack


def _element_hash(i: Dot, e: Element) -> int:
    """The hash of one element's state: id, reference, value (or removal) and stamp; the
    three stamps' numbers packed, their nodes' hashes as the seed."""
    ref = e.ref
    v = e.value
    st = e.stamp
    seed = SEEDS[i[1]][0] ^ SEEDS[st[1]][2]
    if ref is not None:
        seed ^= SEEDS[ref[1]][1]
    flags = (ref is None) | (v is None) << 1
    return hash_bytes(
        _PACK(i[0], ref[0] if ref is not None else 0, st[0], flags) + (v if v is not None else b""),
        seed,
    )


class Element:
    """One inserted element: its reference, its value (None once removed), the value's stamp."""

    __slots__ = ("ref", "stamp", "value")

    def __init__(self, ref: Dot | None, value: bytes | None, stamp: Dot) -> None:
        self.ref = ref
        self.value = value
        self.stamp = stamp


def _restate(i: Dot, e: Element, value: bytes | None, stamp: Dot, h: int | None) -> int | None:
    """Give element ``i`` a new value and stamp, keeping the digest ``h`` (when kept) up to
    date: the element's old hash out, its new one in. A removed element keeps no stamp of its
    own (``stamp`` is then its id)."""
    if h is not None:
        h ^= _element_hash(i, e)
    e.value = value
    e.stamp = stamp
    if h is not None:
        h ^= _element_hash(i, e)
    return h


class RGA:
    """The state of one list, and equally a delta of it."""

    KIND: ClassVar[str] = "list"
    __slots__ = ("_h", "_order", "_orphans", "_top", "elements", "gone")

    def __init__(self) -> None:
        self.elements: dict[Dot, Element] = {}
        self.gone: set[Dot] = set()  # removals of elements not seen yet
        # The visible order, or None when it must be rebuilt from the tree.
        self._order: deque[Dot] | None = deque()
        self._top: Dot | None = None  # the greatest id inserted at the head
        self._orphans = 0  # elements whose reference has not arrived: not placed yet
        # XOR of the elements' and ``gone``'s hashes, once first asked for; then kept up to date.
        self._h: int | None = None

    # -- the join ------------------------------------------------------------------------------

    def copy(self) -> RGA:
        c = RGA()
        c.elements = {i: Element(e.ref, e.value, e.stamp) for i, e in self.elements.items()}
        c.gone = set(self.gone)
        c._order = None
        c._h = self._h
        return c

    def settle(self) -> None:
        """A delta became a key's state: nothing to drop (a list delta names what it touches)."""

    def merge(self, other: RGA) -> None:
        """Join ``other`` in place; never keeps a reference to its mutable parts."""
        elements = self.elements
        gone = self.gone
        incoming = other.elements
        if (
            self._order is not None
            and len(other.gone) + len(incoming) > _BULK_MERGE
            and len(other.gone) + sum(e.value is None for e in incoming.values()) > _BULK_MERGE
        ):
            # Many removals (DEL or LTRIM of a long list, a snapshot) would each search the
            # visible order: rebuild it once, lazily, instead.
            self._order = None
        h = self._h
        ids: Iterable[Dot] = sorted(incoming) if len(incoming) > 1 else incoming
        for i in ids:  # ascending: a reference is placed before the elements that name it
            e = incoming[i]
            mine = elements.get(i)
            if mine is None:
                value = e.value
                if i in gone:
                    gone.discard(i)
                    value = None
                    if h is not None:
                        h ^= dot_hash(i, _SEED_GONE)
                # A removed element keeps no stamp of its own: its state is the same however
                # many LSETs reached it first.
                mine = Element(e.ref, value, e.stamp if value is not None else i)
                elements[i] = mine
                if h is not None:
                    h ^= _element_hash(i, mine)
                self._place(i, mine)
            elif mine.value is not None:
                if e.value is None:
                    h = self._remove(i, mine, h)
                elif e.stamp > mine.stamp:
                    h = _restate(i, mine, e.value, e.stamp, h)
        for i in other.gone:
            mine = elements.get(i)
            if mine is None:
                if i not in gone:
                    gone.add(i)
                    if h is not None:
                        h ^= dot_hash(i, _SEED_GONE)
            elif mine.value is not None:
                h = self._remove(i, mine, h)
        self._h = h

    def _remove(self, i: Dot, mine: Element, h: int | None) -> int | None:
        """A visible element removed by a merge; returns the digest with it restated."""
        h = _restate(i, mine, None, i, h)
        self._hide(i)
        return h

    def _place(self, i: Dot, e: Element) -> None:
        """Put a newly merged element into the visible order, or mark the order stale."""
        order = self._order
        if order is None:
            return  # the rebuild places everything
        if self._orphans:
            self._order = None  # it may be the reference an orphan waits for
            return
        ref = e.ref
        if ref is None:
            top = self._top
            if top is None or i > top:
                self._top = i  # first among the head's children: first of all
                if e.value is not None:
                    order.appendleft(i)
                return
        elif ref not in self.elements:
            self._order = None  # an orphan until its reference arrives
            return
        if e.value is None:
            return  # removed, under a placed reference: nothing visible changes
        if not order or (ref is not None and order[-1] == ref):
            order.append(i)  # after the last visible element only removed ones follow
            return
        self._order = None

    def _hide(self, i: Dot) -> None:
        order = self._order
        if order is None or not order:
            return
        if order[0] == i:
            order.popleft()
        elif order[-1] == i:
            order.pop()
        else:
            with suppress(ValueError):  # an orphan is not in the visible order
                order.remove(i)

    def order(self) -> deque[Dot]:
        """The ids of the visible elements, in list order."""
        order = self._order
        if order is None:
            order = self._order = self._rebuild()
        return order

    def _rebuild(self) -> deque[Dot]:
        elements = self.elements
        children: dict[Dot | None, list[Dot]] = {}
        for i, e in elements.items():
            kids = children.get(e.ref)
            if kids is None:
                children[e.ref] = [i]
            else:
                kids.append(i)
        order: deque[Dot] = deque()
        stack = children.get(None, [])
        stack.sort()  # popped greatest first
        self._top = stack[-1] if stack else None
        reached = 0
        while stack:
            i = stack.pop()
            reached += 1
            if elements[i].value is not None:
                order.append(i)
            kids = children.get(i)
            if kids is not None:
                kids.sort()
                stack.extend(kids)
        self._orphans = len(elements) - reached
        return order

    # -- what a reader sees --------------------------------------------------------------------

    def alive(self) -> bool:
        order = self._order  # order(), inlined: asked on every write and read
        return bool(order if order is not None else self.order())

    def __len__(self) -> int:
        order = self._order
        return len(order if order is not None else self.order())

    def value_at(self, index: int) -> bytes:
        """The value at a non-negative index below len()."""
        v = self.elements[self.order()[index]].value
        assert v is not None
        return v

    def values(self, start: int = 0, stop: int | None = None) -> list[bytes]:
        """Visible values of positions start..stop-1 (non-negative, clamped)."""
        elements = self.elements
        return [elements[i].value for i in islice(self.order(), start, stop)]  # type: ignore[misc]

    # -- deltas of local writes (ids from ``now``, never used before on this node) -------------

    def push(self, now: Callable[[], int], node: str, values: Iterable[bytes],
             left: bool) -> RGA:
        """LPUSH (each value becomes the new head) or RPUSH (each after the last)."""
        d = _delta()
        elements = d.elements
        if left:
            for v in values:
                i = (now(), node)
                elements[i] = Element(None, v, i)
        else:
            order = self.order()
            ref = order[-1] if order else None
            for v in values:
                i = (now(), node)
                elements[i] = Element(ref, v, i)
                ref = i
        return d

    def insert(self, now: Callable[[], int], node: str, index: int, value: bytes) -> RGA:
        """LINSERT: the value lands at visible position ``index`` (0..len)."""
        order = self.order()
        i = (now(), node)
        d = _delta()
        # Right after the visible element before it: only removed elements lie between.
        d.elements[i] = Element(order[index - 1] if index > 0 else None, value, i)
        return d

    def assign(self, now: Callable[[], int], node: str, index: int, value: bytes) -> RGA:
        """LSET: the element at ``index`` takes the value, stamped newer than any before."""
        i = self.order()[index]
        d = _delta()
        d.elements[i] = Element(self.elements[i].ref, value, (now(), node))
        return d

    def remove(self, ids: Iterable[Dot]) -> RGA:
        """The delta removing the given (observed) elements."""
        d = _delta()
        d.gone = set(ids)
        return d

    def pop(self, count: int, left: bool) -> tuple[RGA, list[bytes]]:
        """LPOP/RPOP: the delta removing up to ``count`` elements from one end, and their values."""
        order = self.order()
        n = min(count, len(order))
        ids = list(islice(order, n)) if left else [order[-1 - k] for k in range(n)]
        elements = self.elements
        values = [elements[i].value for i in ids]
        return self.remove(ids), values  # type: ignore[return-value]

    def removal(self) -> RGA:
        """Observed-remove of every visible element."""
        return self.remove(self.order())

    # -- clocks, wire form, digests ------------------------------------------------------------

    def max_ts(self) -> int:
        m = 0
        for i, e in self.elements.items():
            if i[0] > m:
                m = i[0]
            if e.stamp[0] > m:
                m = e.stamp[0]
        for i in self.gone:
            if i[0] > m:
                m = i[0]
        return m

    def encode(self) -> list[Any]:
        """Canonical: [[ts, node, ref ts, ref node, value, stamp ts, stamp node]..., gone]."""
        rows: list[Any] = []
        elements = self.elements
        for i in sorted(elements):
            e = elements[i]
            ref = e.ref
            stamp = e.stamp
            rows.append([
                i[0], i[1],
                ref[0] if ref is not None else None, ref[1] if ref is not None else None,
                e.value,
                stamp[0] if stamp != i else None, stamp[1] if stamp != i else None,
            ])
        return [rows, [[t, n] for t, n in sorted(self.gone)]]

    @classmethod
    def decode(cls, data: Sequence[Any]) -> RGA:
        rows, gone = data
        r = cls()
        r._order = None
        elements = r.elements
        for ts, node, ref_ts, ref_node, value, stamp_ts, stamp_node in rows:
            i = (ts, node)
            ref = (ref_ts, ref_node) if ref_ts is not None else None
            stamp = (stamp_ts, stamp_node) if stamp_ts is not None else i
            elements[i] = Element(ref, value, stamp)
        r.gone = {(t, n) for t, n in gone}
        return r

    def digest(self) -> int:
        """A stable 64-bit hash of the state: every element (tombstones included) and the
        removals still waiting for their element."""
        h = self._h
        if h is None:
            h = dots_hash(self.gone, _SEED_GONE)
            for i, e in self.elements.items():
                h ^= _element_hash(i, e)
            self._h = h
        return combine(_KIND_SEED, h)

    def collect(self, stable: Mapping[str, int]) -> int:
        """Causal-stability GC of list tombstones: none is dropped (see docs/SEMANTICS.md,
        "Lists"). A removal carries no stamp of its own, so stability of the ids does not
        show that no insert naming a removed element is still in flight; dropping one would
        leave such an insert unplaceable on this replica and placed on the others."""
        return 0

    def stable_in(self, stable: Mapping[str, int]) -> bool:
        """Every id and stamp here is covered by ``stable``, and nothing is removed: a list
        with tombstones is never forgotten, for the reason ``collect`` gives."""
        for i, e in self.elements.items():
            if e.value is None:
                return False
            if i[0] > stable.get(i[1], -1) or e.stamp[0] > stable.get(e.stamp[1], -1):
                return False
        return not self.gone

    def mix_digest(self, digest: bytes) -> bytes:
        """Redis's xorObjectDigest of a list onto ``digest``: the type, then every element."""
        digest = _mix(digest, TYPE_LIST.to_bytes(4, "big"))
        for v in self.values():
            digest = _mix(digest, v)
        return digest

    def value_digest(self) -> bytes:
        """DEBUG DIGEST-VALUE of this list, as redis-server computes it."""
        return self.mix_digest(bytes(20))


def _delta() -> RGA:
    """An empty RGA to fill directly: its visible order is rebuilt when first read, since a
    keyspace may adopt a delta as a new key's state."""
    d = RGA()
    d._order = None
    return d


def _mix(digest: bytes, data: bytes) -> bytes:
    """Redis's mixDigest: xor SHA1(data) into the digest, then hash the digest."""
    h = hashlib.sha1(data).digest()
    mixed = bytes(a ^ b for a, b in zip(digest, h, strict=True))
    return hashlib.sha1(mixed).digest()


register(RGA)
