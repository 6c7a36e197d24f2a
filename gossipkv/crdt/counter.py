"""The string counter with observed reset (DESIGN.md's INCR rule).

Each actor (a node's process start: ``name#start``) keeps a running total of its own
increments, versioned by the HLC timestamp of its latest increment; totals merge by newest
version. A reset (SET, DEL, any rewrite of the value) records the totals it observed as the
``floor``, dated by the reset's own (HLC, node); floors merge by newest version too. The
counter's contribution is the sum over actors of (total - floor): increments no reset observed.
So concurrent increments all count, and an increment concurrent with a SET lands on top of it.

Incarnations. A running total is ``(ts, value, born)``, born being the stamp of its first
increment. An actor goes on from its total only while no floor it holds covers it (floor ts >=
total ts); once one does, its next increment starts a new total from zero (born = its stamp).
A new incarnation's born exceeds every stamp of the older ones (its actor had seen them), so
an older total always loses the merge, and a floor older than born judges nothing of it: such a
floor is dropped on merge (normal form), which keeps the join a join, since a newer total of an
actor never has a smaller born. This is what lets a fully reset counter be forgotten
(``settled``, ``forget``): an increment after the forgetting starts afresh, instead of going on
from a running total that some replica's old floor would then swallow (1 - 5 = -4).

When an actor's entries may go: its total is covered by its floor, every stamp of both is
stable, and the causal frontier has passed the reset the floor records (``cstable[r] >= R``:
every member has merged it and every write any member made before merging it). An increment
of the covered incarnation this replica lacks would have been made by its actor before it
merged that reset (after merging it, the actor starts a new incarnation), so it has been merged
here already, and here the total is covered: nothing of the old incarnation can still arrive,
and a new one is judged by no old floor. Floors of the earlier wire form carry no reset date
and are never collected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import xxhash

from gossipkv.crdt.numeric import INT64_MAX, INT64_MIN, Number, add, subtract

# (HLC ts of the actor's latest increment, its running total, HLC ts of the total's first one)
Total = tuple[int, Number, int]
# (HLC ts of the total observed, that total, HLC ts and node of the reset that observed it);
# (0, "") for a reset of the earlier wire form, which no one dated.
Floor = tuple[int, Number, int, str]
Stamp = tuple[int, str]

_UNDATED: Final[Stamp] = (0, "")


class Counter:
    """Per-actor running totals and the floor of totals already reset."""

    __slots__ = ("floor", "totals")

    def __init__(
        self,
        totals: dict[str, Total] | None = None,
        floor: dict[str, Floor] | None = None,
    ) -> None:
        self.totals: dict[str, Total] = totals if totals is not None else {}
        self.floor: dict[str, Floor] = floor if floor is not None else {}

    def copy(self) -> Counter:
        return Counter(dict(self.totals), dict(self.floor))

    def merge(self, other: Counter) -> None:
        totals = self.totals
        floor = self.floor
        for actor, t in other.totals.items():
            cur = totals.get(actor)
            if cur is None or t[0] > cur[0]:
                totals[actor] = t
                if floor:
                    f = floor.get(actor)
                    if f is not None and t[2] > f[0]:
                        del floor[actor]  # of an older incarnation: it judges nothing now
        for actor, f in other.floor.items():
            cur_f = floor.get(actor)
            if cur_f is None:
                t2 = totals.get(actor)
                if t2 is None or t2[2] <= f[0]:
                    floor[actor] = f
            elif _newer_floor(f, cur_f):
                floor[actor] = f

    def pending(self) -> Number | None:
        """The sum of increments no reset has observed, or None when there are none.

        A floor at or above a total zeroes it even when it observed a later incarnation: that
        one began only once its actor had merged a reset covering this total, which may not
        have come here yet."""
        total: Number | None = None
        floor = self.floor
        for actor, t in self.totals.items():
            base = floor.get(actor)
            if base is None:
                d = t[1]
            elif t[0] > base[0]:
                d = t[1] if t[2] > base[0] else subtract(t[1], base[1])
            else:
                continue
            total = d if total is None else add(total, d)
        return total

    def increment(self, node: str, ts: int, by: Number) -> Counter:
        """The delta for actor ``node`` adding ``by`` at timestamp ``ts``: its running total
        goes on, or a new one starts when a floor covers the current one (or there is none)."""
        cur = self.totals.get(node)
        if cur is not None:
            f = self.floor.get(node)
            if f is None or f[0] < cur[0]:
                return Counter({node: (ts, add(cur[1], by), cur[2])})
        return Counter({node: (ts, by, ts)})

    def reset(self, stamp: Stamp | None = None) -> Counter:
        """The delta of a reset, made at ``stamp`` (the remover's fresh (HLC, node)), that
        observed every increment seen so far. Undated, its floors are never collected."""
        r_ts, r_node = _UNDATED if stamp is None else stamp
        return Counter(
            floor={actor: (t[0], t[1], r_ts, r_node) for actor, t in self.totals.items()}
        )

    # -- garbage collection -------------------------------------------------------------------

    def settled(self, stable: Mapping[str, int], cstable: Mapping[str, int]) -> list[str]:
        """The actors whose entries no delivery can need any more (see the module's doc)."""
        out: list[str] = []
        totals = self.totals
        for actor, f in self.floor.items():
            t = totals.get(actor)
            if t is not None and t[0] > f[0]:
                continue  # increments still pending
            if f[0] > stable.get(node_of(actor), -1):
                continue
            r_ts = f[2]
            if stable.get(f[3], -1) < r_ts or cstable.get(f[3], -1) < r_ts:
                continue
            out.append(actor)
        return out

    def forget(self, actors: list[str]) -> None:
        for actor in actors:
            self.totals.pop(actor, None)
            del self.floor[actor]

    def forgettable(self, stable: Mapping[str, int], cstable: Mapping[str, int]) -> bool:
        """Every entry may go: a removed key holding only this counter may be forgotten."""
        return len(self.settled(stable, cstable)) == len(self.floor) and all(
            actor in self.floor for actor in self.totals
        )

    def empty(self) -> bool:
        return not self.totals and not self.floor

    # -- wire form and digests ----------------------------------------------------------------

    def digest(self) -> int:
        """A stable 64-bit hash of totals and floor, equal for equal encodings."""
        h = 0
        for actor, (ts, v, born) in self.totals.items():
            h ^= xxhash.xxh3_64_intdigest(
                b"t%b %d %b %d" % (actor.encode(), ts, _value_bytes(v), born)
            )
        for actor, (ts, v, r_ts, r_node) in self.floor.items():
            h ^= xxhash.xxh3_64_intdigest(
                b"f%b %d %b %d %b" % (actor.encode(), ts, _value_bytes(v), r_ts, r_node.encode())
            )
        return h

    def encode(self) -> list[Any]:
        # Sorted so that equal states encode to equal bytes (digests depend on it).
        return [
            [[a, ts, _wire(v), born] for a, (ts, v, born) in sorted(self.totals.items())],
            [[a, ts, _wire(v), rt, rn] for a, (ts, v, rt, rn) in sorted(self.floor.items())],
        ]

    @classmethod
    def decode(cls, data: Sequence[Any]) -> Counter:
        """Rows of the earlier wire form (``[actor, ts, value]``) decode as a total born at 0
        (the key's one running total) and an undated floor."""
        totals: dict[str, Total] = {}
        for row in data[0]:
            totals[row[0]] = (row[1], _unwire(row[2]), row[3] if len(row) > 3 else 0)
        floor: dict[str, Floor] = {}
        for row in data[1]:
            if len(row) > 3:
                f: Floor = (row[1], _unwire(row[2]), row[3], row[4])
            else:
                f = (row[1], _unwire(row[2]), 0, "")
            t = totals.get(row[0])
            if t is None or t[2] <= f[0]:  # normal form, as merge keeps it
                floor[row[0]] = f
        return cls(totals, floor)


def node_of(actor: str) -> str:
    """The member name of a counter actor ("name#start"): stability is known per member."""
    name, sep, _ = actor.rpartition("#")
    return name if sep else actor


def _newer_floor(f: Floor, cur: Floor) -> bool:
    """Floors order by the total they observed; between resets that observed the same total,
    a dated one beats an undated one, then the earlier date wins, so that later resets do not
    postpone collection (any dated reset that covers the total will do, see the module's doc)."""
    if f[0] != cur[0]:
        return f[0] > cur[0]
    if not f[3]:
        return False
    if not cur[3]:
        return True
    return (f[2], f[3]) < (cur[2], cur[3])


def _value_bytes(v: Number) -> bytes:
    return b"i%d" % v if isinstance(v, int) else b"d" + str(v).encode()


def _wire(v: Number) -> Any:
    return v if isinstance(v, int) and INT64_MIN <= v <= INT64_MAX else "d" + str(v)


def _unwire(v: Any) -> Number:
    return Decimal(v[1:]) if isinstance(v, str) else v
