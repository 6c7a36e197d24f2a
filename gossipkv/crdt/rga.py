"""A list as an RGA sequence (Replicated Growable Array, Roh et al. 2011).

Every element has a unique id (HLC ts, node) and is inserted after a reference element (or the
head, ``None``). An insert's id is greater than its reference's, because the clock observes every
id it merges; so the elements form a tree rooted at the head whose pre-order, visiting children
greatest id first, is the list. Concurrent inserts at the same place are thereby ordered by id,
the same on every replica, and all of them are kept.

Removal (POP, LREM, LTRIM, DEL) marks an observed element removed; its value is dropped and only
its id, its reference and the removal's stamp (a fresh (HLC, node) of the remover) stay, so later
inserts that name it as reference still land in place. A removal that arrives before the insert
it removes is remembered in ``gone`` until the insert does. LSET rewrites an element's value as
an LWW register stamped (HLC, node); removal beats it, and of two removals the greater stamp is
kept, so an element's state is a join: visible by LSET stamp < removed by removal stamp.

Tombstones are collected once their removal is causally stable (``collect``), which is what the
removal's stamp is for. So that collection never walks a long list, a key's state keeps an index
of its tree (each element's children) and of its tombstones waiting to be settled, which every
merge keeps up to date; a budget bounds each collect call.

Local operations work at the ends of the visible order (a deque of the visible elements, each
knowing its id, so that LRANGE reads values without a lookup per id), so LPUSH/RPUSH/LPOP/RPOP
are O(1): a new element is its parent's greatest child, appended to its children, and a
removal joins the end of its remover's queue. A merged insert takes a fast path when its place
in the visible order is plain (at the head ahead of every other head child, or after the last
visible element); otherwise the visible order is rebuilt from the tree index on the next read.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from itertools import islice
from typing import Any, ClassVar, Final, cast

from gossipkv.crdt.causal import SEEDS, combine, hash_bytes
from gossipkv.crdt.collection import register

Dot = tuple[int, str]

TYPE_LIST: Final = 1  # Redis's OBJ_LIST, mixed into DEBUG DIGEST


# Merges removing more elements than this invalidate the visible order instead of editing it.
_BULK_MERGE: Final = 64

_KIND_SEED: Final = 1
_SEED_GONE: Final = 0x60E

# Settled tombstones (and children handed up) one collect call handles at most: the rest wait
# for the next call, so that no call holds the event loop for long whatever the list's length.
COLLECT_BUDGET: Final = 4096

_PACK: Final = struct.Struct(">QQQB").pack
_PACK_GONE: Final = struct.Struct(">QQ").pack


def _gone_hash(i: Dot, removed: Dot) -> int:
    """The hash of one removal waiting for its element: the id and the removal's stamp."""
    return hash_bytes(_PACK_GONE(i[0], removed[0]), SEEDS[i[1]][0] ^ SEEDS[removed[1]][2]
                      ^ _SEED_GONE)


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
    """One inserted element: its id, its reference, its value (None once removed), and the
    stamp of its value (the id itself until an LSET) or, once removed, of its removal.

    ``kids`` are the elements placed under it, where a list's state keeps its tree index (see
    RGA): None, the one child's id, or a list of ids in ascending order. One id held as such
    keeps a chain (RPUSH) at one slot per element."""

    __slots__ = ("id", "kids", "ref", "stamp", "value")

    def __init__(self, i: Dot, ref: Dot | None, value: bytes | None, stamp: Dot) -> None:
        self.id = i  # the same tuple as the elements' key: no more than a slot per element
        self.ref = ref
        self.value = value
        self.stamp = stamp
        self.kids: Any = None


def _restate(i: Dot, e: Element, value: bytes | None, stamp: Dot, h: int | None) -> int | None:
    """Give element ``i`` a new value and stamp, keeping the digest ``h`` (when kept) up to
    date: the element's old hash out, its new one in. A removed element's stamp is its
    removal's."""
    if h is not None:
        h ^= _element_hash(i, e)
    e.value = value
    e.stamp = stamp
    if h is not None:
        h ^= _element_hash(i, e)
    return h


class RGA:
    """The state of one list, and equally a delta of it.

    A state keeps an index of its tree for collect (built on the first rebuild of the visible
    order, then kept by merges; a delta has none): each element's ``kids``, the head's children
    (``_heads``, ascending), the tombstones waiting to be settled (``_pending``, a queue per
    remover, in removal order) and the ghosts waiting on something (``_retry``, ``_blocked``).
    So collect never walks the live elements: its work is the tombstones it settles."""

    KIND: ClassVar[str] = "list"
    __slots__ = (
        "_blocked", "_floor", "_ghosts", "_h", "_heads", "_moved", "_order", "_orphans",
        "_pending", "_retry", "_waiting", "elements", "gone", "work",
    )

    def __init__(self, delta: bool = False) -> None:
        """``delta``: an empty RGA to fill directly (see _delta), with no order or index yet."""
        self.elements: dict[Dot, Element] = {}
        self.gone: dict[Dot, Dot] = {}  # removals of elements not seen yet: id -> removal stamp
        # The visible order, or None when it must be rebuilt from the tree.
        self._order: deque[Element] | None = None if delta else deque()
        self._orphans = 0  # elements whose reference has not arrived: not placed yet
        # XOR of the elements' and ``gone``'s hashes, once first asked for; then kept up to date.
        self._h: int | None = None
        # Local to this replica (neither merged nor hashed): per node, the greatest id of it
        # collected here; every element of that node at or below it was merged here, so one
        # absent now was collected, and a stale copy of it merged again is ignored.
        self._floor: dict[str, int] | None = None
        # Tombstones whose removal is causally stable but which the tree still needs (see
        # collect): no longer in the digest, so that replicas that collected in another order
        # hash alike.
        self._ghosts: set[Dot] | None = None
        # Elements placed under another parent than their reference since collect dropped the
        # tombstone between them: id -> the parent they are placed under now. The reference
        # itself stays the element's (it is what the digest hashes).
        self._moved: dict[Dot, Dot | None] | None = None
        # The tree index (see the class docstring), None until built: the head's children in
        # ascending order (the last is the greatest id inserted at the head); the elements
        # whose parent has not arrived, by that parent; per remover node, the tombstones it
        # removed that are not settled yet, in the order of its removals (an entry whose
        # element was removed again since, by another node, is stale); ghosts and removals to
        # look at again on every collect (their children's causal frontier, their parent's
        # arrival or their id's stability pending); ghosts a greater sibling keeps in place,
        # by that sibling.
        self._heads: list[Any] | None = None if delta else []
        self._waiting: dict[Any, list[Any]] | None = None
        self._pending: dict[str, list[Any]] | None = None
        self._retry: set[Any] | None = None
        self._blocked: dict[Any, list[Any]] | None = None
        # What the last collect call examined: tombstones, queue entries, children handed up.
        self.work = 0

    # -- the join ------------------------------------------------------------------------------

    def copy(self) -> RGA:
        c = _delta()
        c.elements = {i: Element(i, e.ref, e.value, e.stamp) for i, e in self.elements.items()}
        c.gone = dict(self.gone)
        c._h = self._h
        c._floor = dict(self._floor) if self._floor else None
        c._ghosts = set(self._ghosts) if self._ghosts else None
        c._moved = dict(self._moved) if self._moved else None
        return c

    def settle(self) -> None:
        """A delta became a key's state: nothing to drop (a list delta names what it touches)."""

    def merge(self, other: RGA) -> None:
        """Join ``other`` in place; never keeps a reference to its mutable parts."""
        # Ids as plain objects: the state's dict, visible order and tree index then share the
        # delta's tuples instead of boxing a new one for each (see values()).
        elements = cast(dict[Any, Element], self.elements)
        gone = cast(dict[Any, Any], self.gone)
        incoming = cast(dict[Any, Element], other.elements)
        if (
            self._order is not None
            and len(other.gone) + len(incoming) > _BULK_MERGE
            and len(other.gone) + sum(e.value is None for e in incoming.values()) > _BULK_MERGE
        ):
            # Many removals (DEL or LTRIM of a long list, a snapshot) would each search the
            # visible order: rebuild it once, lazily, instead.
            self._order = None
        h = self._h
        floor = self._floor
        ghosts = cast(set[Any] | None, self._ghosts)
        moved = cast(dict[Any, Any] | None, other._moved)
        indexed = self._heads is not None
        ids: Any = sorted(incoming) if len(incoming) > 1 else incoming
        for i in ids:  # ascending: a reference is placed before the elements that name it
            e = incoming[i]
            mine = elements.get(i)
            if mine is None:
                if floor is not None and i[0] <= floor.get(i[1], -1):
                    continue  # collected here: a stale copy (see collect)
                value = e.value
                stamp = e.stamp
                if gone and i in gone:
                    removed = gone.pop(i)
                    if h is not None:
                        h ^= _gone_hash(i, removed)
                    if value is not None or removed > stamp:
                        stamp = removed
                    value = None
                ref: Any = e.ref
                mine = Element(i, ref, value, stamp)
                elements[i] = mine
                if h is not None:
                    h ^= _element_hash(i, mine)
                if moved and i in moved and ref is not None and ref not in elements:
                    # Its reference was collected where it comes from: place it as there.
                    ref = moved[i]
                    if self._moved is None:
                        self._moved = {}
                    self._moved[i] = ref
                if indexed:
                    self._place(i, mine, ref)
            elif mine.value is not None:
                if e.value is None:
                    h = self._remove(i, mine, e.stamp, h)
                elif e.stamp > mine.stamp:
                    h = _restate(i, mine, e.value, e.stamp, h)
            elif e.value is None and e.stamp > mine.stamp:  # removed twice: the greater stamp
                if ghosts and i in ghosts:
                    mine.stamp = e.stamp  # not hashed any more
                else:
                    h = _restate(i, mine, None, e.stamp, h)
                    if indexed:
                        self._pend(i, e.stamp)
        for i, removed in cast(dict[Any, Any], other.gone).items():
            mine = elements.get(i)
            if mine is None:
                if floor is not None and i[0] <= floor.get(i[1], -1):
                    continue
                was = gone.get(i)
                if was is None or removed > was:
                    gone[i] = removed
                    if h is not None:
                        if was is not None:
                            h ^= _gone_hash(i, was)
                        h ^= _gone_hash(i, removed)
            elif mine.value is not None:
                h = self._remove(i, mine, removed, h)
            elif removed > mine.stamp:
                if ghosts and i in ghosts:
                    mine.stamp = removed
                else:
                    h = _restate(i, mine, None, removed, h)
                    if indexed:
                        self._pend(i, removed)
        self._h = h

    def _remove(self, i: Any, mine: Element, removed: Dot, h: int | None) -> int | None:
        """A visible element removed by a merge; returns the digest with it restated."""
        h = _restate(i, mine, None, removed, h)
        if self._heads is not None:
            self._pend(i, removed)
        self._hide(mine)
        return h

    def _pend(self, i: Any, removed: Dot) -> None:
        """Tombstone ``i`` waits for its removal to be settled (an undated one never is)."""
        if removed[0] <= cast(int, i[0]):
            return
        pending = self._pending
        if pending is None:
            pending = self._pending = {}
        queue = pending.get(removed[1])
        if queue is None:
            pending[removed[1]] = [i]
        else:
            queue.append(i)

    def _place(self, i: Any, e: Element, ref: Any) -> None:
        """Put a newly merged element, placed under ``ref``, into the tree index, and into
        the visible order or mark the order stale."""
        heads = self._heads
        assert heads is not None
        elements = cast(dict[Any, Element], self.elements)
        first = False  # greatest of the head's children: first of all
        if ref is None:
            first = not heads or i > heads[-1]
            _add(heads, i)
        else:
            parent = elements.get(ref)
            if parent is None:
                waiting = self._waiting
                if waiting is None:
                    waiting = self._waiting = {}
                kin = waiting.get(ref)
                if kin is None:
                    waiting[ref] = [i]
                else:
                    _add(kin, i)
            else:
                k = parent.kids
                if k is None:
                    parent.kids = i
                elif type(k) is list:
                    _add(k, i)
                else:
                    parent.kids = [k, i] if k < i else [i, k]
        if self._waiting:
            kin = self._waiting.pop(i, None)
            if kin is not None:
                e.kids = kin[0] if len(kin) == 1 else kin  # they were waiting for this one
        if e.value is None:
            self._pend(i, e.stamp)
        order = self._order
        if order is None:
            return  # the rebuild places everything
        if self._orphans:
            self._order = None  # it may be the reference an orphan waits for
            return
        if ref is None:
            if first:
                if e.value is not None:
                    order.appendleft(e)
                return
        elif ref not in elements:
            self._order = None  # an orphan until its reference arrives
            return
        if e.value is None:
            return  # removed, under a placed reference: nothing visible changes
        if not order or (ref is not None and order[-1].id == ref):
            order.append(e)  # after the last visible element only removed ones follow
            return
        self._order = None

    def _hide(self, e: Element) -> None:
        order = self._order
        if order is None or not order:
            return
        if order[0] is e:
            order.popleft()
        elif order[-1] is e:
            order.pop()
        else:
            with suppress(ValueError):  # an orphan is not in the visible order
                order.remove(e)  # by identity: Element has no __eq__

    def order(self) -> deque[Element]:
        """The visible elements, in list order."""
        order = self._order
        if order is None:
            order = self._order = self._rebuild()
        return order

    def ids(self) -> list[Dot]:
        """The ids of the visible elements, in list order."""
        return [e.id for e in self.order()]

    def _index(self) -> None:
        """Build the tree index from the elements: O(elements), once per state (a decoded
        or copied one; merges keep it after)."""
        elements = cast(dict[Any, Element], self.elements)
        moved = cast(dict[Any, Any] | None, self._moved)
        heads: list[Any] = []
        waiting: dict[Any, list[Any]] = {}
        lists: list[list[Any]] = []
        for i, e in elements.items():
            p = e.ref if not moved else moved.get(i, e.ref)
            if p is None:
                heads.append(i)
                continue
            parent = elements.get(p)
            if parent is None:
                kin = waiting.get(p)
                if kin is None:
                    waiting[p] = [i]
                else:
                    kin.append(i)
                continue
            k = parent.kids
            if k is None:
                parent.kids = i
            elif type(k) is list:
                k.append(i)
            else:
                kin = [k, i]
                parent.kids = kin
                lists.append(kin)
        heads.sort()
        for kin in lists:
            kin.sort()
        for kin in waiting.values():
            kin.sort()
        self._heads = heads
        self._waiting = waiting or None
        ghosts = cast(set[Any], self._ghosts or set())
        removals: dict[str, list[Any]] = {}
        for i, e in elements.items():
            if e.value is None and i not in ghosts:
                st = e.stamp
                if st[0] > i[0]:  # dated
                    removals.setdefault(st[1], []).append((st[0], i))
        pending: dict[str, list[Any]] = {}
        for node, rows in removals.items():
            rows.sort()
            pending[node] = [i for _, i in rows]
        self._pending = pending or None
        if ghosts:
            self._retry = set(ghosts)  # as they were left: look at each again

    def _rebuild(self) -> deque[Element]:
        if self._heads is None:
            self._index()
        heads = self._heads
        assert heads is not None
        elements = cast(dict[Any, Element], self.elements)
        order: deque[Element] = deque()
        stack = list(heads)  # ascending: popped greatest first
        reached = 0
        while stack:
            i = stack.pop()
            reached += 1
            e = elements[i]
            if e.value is not None:
                order.append(e)
            k = e.kids
            if k is not None:
                if type(k) is list:
                    stack.extend(k)
                else:
                    stack.append(k)
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
        v = self.order()[index].value
        assert v is not None
        return v

    def values(self, start: int = 0, stop: int | None = None) -> list[bytes]:
        """Visible values of positions start..stop-1 (non-negative, clamped)."""
        return [e.value for e in islice(self.order(), start, stop)]  # type: ignore[misc]

    # -- deltas of local writes (ids from ``now``, never used before on this node) -------------

    def push(self, now: Callable[[], int], node: str, values: Iterable[bytes],
             left: bool) -> RGA:
        """LPUSH (each value becomes the new head) or RPUSH (each after the last)."""
        d = _delta()
        elements = d.elements
        if left:
            for v in values:
                i = (now(), node)
                elements[i] = Element(i, None, v, i)
        else:
            order = self.order()
            ref = order[-1].id if order else None
            for v in values:
                i = (now(), node)
                elements[i] = Element(i, ref, v, i)
                ref = i
        return d

    def insert(self, now: Callable[[], int], node: str, index: int, value: bytes) -> RGA:
        """LINSERT: the value lands at visible position ``index`` (0..len)."""
        order = self.order()
        i = (now(), node)
        d = _delta()
        # Right after the visible element before it: only removed elements lie between.
        d.elements[i] = Element(i, order[index - 1].id if index > 0 else None, value, i)
        return d

    def assign(self, now: Callable[[], int], node: str, index: int, value: bytes) -> RGA:
        """LSET: the element at ``index`` takes the value, stamped newer than any before."""
        e = self.order()[index]
        d = _delta()
        d.elements[e.id] = Element(e.id, e.ref, value, (now(), node))
        return d

    def remove(self, ids: Iterable[Dot], stamp: Dot | None = None) -> RGA:
        """The delta removing the given (observed) elements, dated by ``stamp``: a fresh
        (HLC, node) of the remover. An undated removal (each element's own id stands for the
        stamp) is never collected."""
        d = _delta()
        d.gone = dict.fromkeys(ids, stamp) if stamp is not None else {i: i for i in ids}
        return d

    def pop(self, count: int, left: bool, stamp: Dot | None = None) -> tuple[RGA, list[bytes]]:
        """LPOP/RPOP: the delta removing up to ``count`` elements from one end, and their values."""
        order = self.order()
        n = min(count, len(order))
        if n == 1:  # LPOP/RPOP without a count
            e = order[0] if left else order[-1]
            return self.remove((e.id,), stamp), [e.value]  # type: ignore[list-item]
        popped = list(islice(order, n)) if left else [order[-1 - k] for k in range(n)]
        values = [e.value for e in popped]
        return self.remove([e.id for e in popped], stamp), values  # type: ignore[return-value]

    def removal(self, stamp: Dot | None = None) -> RGA:
        """Observed-remove of every visible element."""
        return self.remove(self.ids(), stamp)

    # -- clocks, wire form, digests ------------------------------------------------------------

    def max_ts(self) -> int:
        m = 0
        for i, e in self.elements.items():
            if i[0] > m:
                m = i[0]
            if e.stamp[0] > m:
                m = e.stamp[0]
        for removed in self.gone.values():
            if removed[0] > m:  # a dated removal is newer than its element; an undated is it
                m = removed[0]
        return m

    def encode(self) -> list[Any]:
        """[[ts, node, ref ts, ref node, value, stamp ts, stamp node (, placed under ts,
        node)]..., [[removal ts, removal node, [ts, node, ts, node...]]...]]: the stamp is left
        out (None, None) where it is the id; the parent an element is placed under is given
        where collect moved it; ``gone`` is grouped by removal. Canonical but for where
        collect placed elements."""
        rows: list[Any] = []
        elements = self.elements
        moved = self._moved or {}
        for i in sorted(elements):
            e = elements[i]
            ref = e.ref
            stamp = e.stamp
            row = [
                i[0], i[1],
                ref[0] if ref is not None else None, ref[1] if ref is not None else None,
                e.value,
                stamp[0] if stamp != i else None, stamp[1] if stamp != i else None,
            ]
            if i in moved:
                p = moved[i]
                row += [p[0], p[1]] if p is not None else [None, None]
            rows.append(row)
        by_removal: dict[Dot, list[Dot]] = {}
        for i, removed in self.gone.items():
            ids = by_removal.get(removed)
            if ids is None:
                by_removal[removed] = [i]
            else:
                ids.append(i)
        gone = [
            [r[0], r[1], [x for i in sorted(ids) for x in i]]
            for r, ids in sorted(by_removal.items())
        ]
        return [rows, gone]

    @classmethod
    def decode(cls, data: Sequence[Any]) -> RGA:
        """Also reads the earlier form, whose ``gone`` rows were [ts, node] (undated)."""
        rows, gone_rows = data
        r = cls()
        r._order = None
        r._heads = None
        elements = r.elements
        stamps: dict[Dot, Dot] = {}  # one tuple per removal, shared by what it removed
        for row in rows:
            ts, node, ref_ts, ref_node, value, stamp_ts, stamp_node = row[:7]
            i = (ts, node)
            if len(row) > 7:
                if r._moved is None:
                    r._moved = {}
                r._moved[i] = (row[7], row[8]) if row[7] is not None else None
            ref = (ref_ts, ref_node) if ref_ts is not None else None
            if stamp_ts is None:
                stamp = i
            else:
                stamp = (stamp_ts, stamp_node)
                stamp = stamps.setdefault(stamp, stamp)
            elements[i] = Element(i, ref, value, stamp)
        gone = r.gone
        for row in gone_rows:
            if len(row) == 2:
                i = (row[0], row[1])
                gone[i] = i
                continue
            removed = (row[0], row[1])
            flat = row[2]
            for k in range(0, len(flat), 2):
                gone[(flat[k], flat[k + 1])] = removed
        return r

    def digest(self) -> int:
        """A stable 64-bit hash of the state: every element with its reference (tombstones
        included, until their removal is causally stable) and the removals still waiting for
        their element. Where collect placed an element is not hashed: replicas that collected
        in different orders hold different trees with the same list (see collect)."""
        h = self._h
        if h is None:
            h = 0
            for i, removed in self.gone.items():
                h ^= _gone_hash(i, removed)
            ghosts = self._ghosts or ()
            for i, e in self.elements.items():
                if i not in ghosts:
                    h ^= _element_hash(i, e)
            self._h = h
        return combine(_KIND_SEED, h)

    def collect(
        self, stable: Mapping[str, int], cstable: Mapping[str, int] | None = None,
        budget: int = COLLECT_BUDGET,
    ) -> int:
        """Forget tombstones and early removals no delivery can need any more; returns how
        many left the digest. ``stable`` is the stable vector; ``cstable[n] >= R`` (the
        causal frontier, cluster/watermark.py) means every member has merged n's writes
        stamped up to R and every write any member made before merging them.

        A removal waiting in ``gone`` goes once its element's id is stable: the insert was
        merged here then, so only a stale copy of it can still come, which the floor ignores.

        A tombstone e removed at stamp (R, n) is *settled* once ``cstable[n] >= R`` and its id
        is stable: every insert naming e was made before its maker merged the removal (a local
        insert names a visible element), so every one is here already, and the floor may
        cover e. A settled tombstone leaves the digest at once; it leaves the tree when the
        list reads the same without it, now and after any later insert. The list is the
        pre-order of the tree, children greatest id first, and a child's id exceeds its
        parent's. So e goes:

        - when it has no children: an invisible leaf, and none can come;
        - when each child k of e has ``cstable[k] >= k`` and every sibling of e greater than
          e is greater than every child of e: the children take e's place under e's parent,
          between the same siblings, in the same order. A later insert under that parent
          has an id above every child (one made before its maker merged a child k would be
          here already), so it lands ahead of them, as it would have ahead of e.

        Otherwise e stays, out of the digest (a *ghost*), until a later call: at every call
        while it waits for a child's causal frontier (or, an orphan, for its parent), or once
        the tree changes where it could go (the sibling in the way, or its greatest child,
        leaves). Where the children go is local (``_moved``): replicas that collected in
        different orders may hold different trees of the same list, which is why the digest
        hashes references, not placements, and no settled tombstone. Children are visited
        before their parents (descending ids). An undated removal (the earlier wire form) is
        kept.

        Cost: the tombstones come from the index (see the class docstring), oldest removal
        first, so a call never walks the live elements; it settles at most ``budget``
        tombstones (plus the ghosts their leaving frees) and leaves the rest to the next
        call. Its work, in ``work``, is those, the children they hand up, the stale queue
        entries passed, and one pass per child list over the span its collected leaves took.
        """
        n = self._collect_gone(stable) if self.gone else 0
        self.work = 0
        if cstable is None:
            return n
        if self._heads is None:
            self.order()  # a copied or decoded state: its index is built with the order
        elements = cast(dict[Any, Element], self.elements)
        work = 0
        batch: list[Any] = []
        queued: set[Any] = set()
        retry = self._retry
        if retry:
            while retry and work < budget:
                i = retry.pop()
                batch.append(i)
                queued.add(i)
                work += 1
        pending = self._pending
        if pending:
            for node, queue in pending.items():
                bound = cstable.get(node, -1)
                at = 0
                while at < len(queue) and work < budget:
                    i = queue[at]
                    e = elements.get(i)
                    if e is not None:  # else collected since
                        st = e.stamp
                        if st[1] == node:  # else removed again since, by a node it queues with
                            if st[0] > bound:
                                break  # not settled; nor, mostly, what this node removed later
                            if i not in queued:
                                batch.append(i)
                                queued.add(i)
                    at += 1
                    work += 1
                if at:
                    del queue[:at]
        if not batch:
            self.work = work
            return n
        batch.sort()  # popped greatest first: children before their parents
        ghosts = cast(set[Any] | None, self._ghosts)
        if ghosts is None:
            ghosts = set()
            self._ghosts = ghosts
        if retry is None:
            retry = self._retry = set()
        blocked = self._blocked
        dropped: set[Any] = set()
        sweep: dict[Any, list[Any]] = {}  # parent -> leaves to take out of its child list
        h = self._h
        while batch:
            i = batch.pop()
            e = elements.get(i)
            if e is None:
                continue
            if i not in ghosts:
                st = e.stamp
                if st[0] > cstable.get(st[1], -1) or i[0] > stable.get(i[1], -1):
                    retry.add(i)  # its id is not stable yet (or the vectors went back)
                    continue
                ghosts.add(i)
                if h is not None:
                    h ^= _element_hash(i, e)
                n += 1
            k = e.kids
            if k is not None:
                if type(k) is list:
                    kids: list[Any] = [x for x in k if x not in dropped] if dropped else list(k)
                else:
                    kids = [k]
                work += len(kids)
                if kids:
                    adopted = self._adopt(i, e, kids, dropped, cstable)
                    if adopted is None:
                        retry.add(i)
                        continue
                    if adopted is not True:  # the greater sibling in the way
                        if blocked is None:
                            blocked = self._blocked = {}
                        held = blocked.get(adopted)
                        if held is None:
                            blocked[adopted] = [i]
                        elif i not in held:
                            held.append(i)
                        continue
                else:
                    self._unlink(i, e, dropped, sweep)
            else:
                self._unlink(i, e, dropped, sweep)
            moved = cast(dict[Any, Any] | None, self._moved)
            p = e.ref if not moved else moved.get(i, e.ref)
            dropped.add(i)
            del elements[i]
            ghosts.discard(i)
            self._forget(i)
            # Its leaving may free its parent (its greatest child gone) or a ghost it kept.
            free = blocked.pop(i, None) if blocked else None
            if p is not None and p in ghosts:
                if free is None:
                    free = [p]
                else:
                    free.append(p)
            if free is not None:
                for g in free:
                    if g not in queued:
                        queued.add(g)
                        bisect.insort(batch, g)
                        work += 1
        self._h = h
        for p, leaves in sweep.items():
            self._sweep(p, leaves, dropped)
        if dropped and self._orphans:
            self._order = None  # an orphan may have gone: recount them
        self.work = work
        return n

    def _adopt(
        self, i: Any, e: Element, kids: list[Any], dropped: set[Any], cstable: Mapping[str, int],
    ) -> Any:
        """Hand the (ascending) children of settled tombstone ``i`` to its parent, if the list
        reads the same after any later insert (see collect): True when handed, None when a
        later call may tell, else the greater sibling that keeps them from it."""
        elements = cast(dict[Any, Element], self.elements)
        moved = cast(dict[Any, Any] | None, self._moved)
        p = e.ref if not moved else moved.get(i, e.ref)
        parent = None
        if p is not None:
            parent = elements.get(p)
            if parent is None:
                return None  # an orphan: where its children belong is not known here yet
        for k in kids:
            if k[0] > cstable.get(k[1], -1):
                return None
        siblings: Any = self._heads if parent is None else parent.kids
        if type(siblings) is list:
            at = bisect.bisect_left(siblings, i)
            nxt = at + 1
            while nxt < len(siblings) and siblings[nxt] in dropped:
                nxt += 1
            if nxt < len(siblings) and siblings[nxt] < kids[-1]:
                return siblings[nxt]  # it would fall behind a child
            # Still sorted: each kid lies between e and that sibling (what lies between went).
            siblings[at:nxt] = kids
        else:
            assert parent is not None
            parent.kids = kids[0] if len(kids) == 1 else kids  # e was its only child
        if moved is None:
            moved = self._moved = {}
        for k in kids:
            moved[k] = p
        return True

    def _unlink(self, i: Any, e: Element, dropped: set[Any], sweep: dict[Any, list[Any]]) -> None:
        """Take leaf ``i`` out of its parent's children: at once when it is the last, else in
        one sweep per list at the end of the collect call (not a memmove of a long list, the
        head's of an LPUSH-built queue, per leaf)."""
        elements = cast(dict[Any, Element], self.elements)
        moved = cast(dict[Any, Any] | None, self._moved)
        p = e.ref if not moved else moved.get(i, e.ref)
        kin: Any
        if p is None:
            kin = self._heads
        else:
            parent = elements.get(p)
            if parent is None:  # an orphan
                waiting = self._waiting
                assert waiting is not None
                kin = waiting[p]
                kin.remove(i)
                if not kin:
                    del waiting[p]
                return
            kin = parent.kids
            if type(kin) is not list:
                parent.kids = None  # its only child
                return
        assert kin is not None
        if kin[-1] == i:
            kin.pop()
            while kin and kin[-1] in dropped:  # leaves the sweep was left to take
                kin.pop()
        else:
            leaves = sweep.get(p)
            if leaves is None:
                sweep[p] = [i]
            else:
                leaves.append(i)

    def _sweep(self, p: Any, leaves: list[Any], dropped: set[Any]) -> None:
        """Take collected ``leaves`` out of ``p``'s child list in one pass over their span."""
        kin: Any
        if p is None:
            kin = self._heads
        else:
            parent = cast(dict[Any, Element], self.elements).get(p)
            if parent is None:
                return  # collected in the same call: its list went with it
            kin = parent.kids
            if type(kin) is not list:
                return
        assert kin is not None
        lo = bisect.bisect_left(kin, min(leaves))
        hi = bisect.bisect_right(kin, max(leaves))
        kin[lo:hi] = [x for x in kin[lo:hi] if x not in dropped]

    def _forget(self, i: Dot) -> None:
        """``i`` left the tree: out of the placements, under the floor."""
        if self._moved:
            self._moved.pop(i, None)
        floor = self._floor
        if floor is None:
            floor = self._floor = {}
        if i[0] > floor.get(i[1], -1):
            floor[i[1]] = i[0]

    def _collect_gone(self, stable: Mapping[str, int]) -> int:
        gone = self.gone
        done = [i for i in gone if i[0] <= stable.get(i[1], -1)]
        if not done:
            return 0
        h = self._h
        floor = self._floor
        if floor is None:
            floor = self._floor = {}
        for i in done:
            removed = gone.pop(i)
            if h is not None:
                h ^= _gone_hash(i, removed)
            if i[0] > floor.get(i[1], -1):
                floor[i[1]] = i[0]
        self._h = h
        return len(done)

    def stable_in(
        self, stable: Mapping[str, int], cstable: Mapping[str, int] | None = None
    ) -> bool:
        """Every id and stamp here is covered by ``stable``, and nothing is removed: a list
        key's tombstone is forgotten once ``collect`` has dropped every removed element."""
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
    """An empty RGA to fill directly: its visible order (and tree index) is built when first
    read, since a keyspace may adopt a delta as a new key's state."""
    return RGA(True)


def _add(ids: list[Any], i: Any) -> None:
    """Insert ``i`` into ascending ``ids``: mostly the greatest, appended."""
    if not ids or ids[-1] < i:
        ids.append(i)
    else:
        bisect.insort(ids, i)


def _mix(digest: bytes, data: bytes) -> bytes:
    """Redis's mixDigest: xor SHA1(data) into the digest, then hash the digest."""
    h = hashlib.sha1(data).digest()
    mixed = bytes(a ^ b for a, b in zip(digest, h, strict=True))
    return hashlib.sha1(mixed).digest()


register(RGA)
