"""The string counter with observed reset (DESIGN.md's INCR rule).

Each actor (a node's process start: ``name#start``) keeps one running total of its own
increments, versioned by the HLC timestamp of its latest increment; totals merge by newest
version. A reset (SET, DEL, any rewrite of the value) records the totals it observed as the
``floor``; floors merge by newest version too. The
counter's contribution is the sum over nodes of (total - floor): increments no reset observed.
So concurrent increments all count, and an increment concurrent with a SET lands on top of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import xxhash

from gossipkv.crdt.numeric import INT64_MAX, INT64_MIN, Number, add, subtract

Version = tuple[int, Number]  # (HLC timestamp of the node's latest increment, its running total)


class Counter:
    """Per-node running totals and the floor of totals already reset."""

    __slots__ = ("floor", "totals")

    def __init__(
        self,
        totals: dict[str, Version] | None = None,
        floor: dict[str, Version] | None = None,
    ) -> None:
        self.totals: dict[str, Version] = totals if totals is not None else {}
        self.floor: dict[str, Version] = floor if floor is not None else {}

    def copy(self) -> Counter:
        return Counter(dict(self.totals), dict(self.floor))

    def merge(self, other: Counter) -> None:
        _join(self.totals, other.totals)
        _join(self.floor, other.floor)

    def pending(self) -> Number | None:
        """The sum of increments no reset has observed, or None when there are none."""
        total: Number | None = None
        floor = self.floor
        for node, (ts, value) in self.totals.items():
            base = floor.get(node)
            if base is None:
                total = value if total is None else add(total, value)
            elif ts > base[0]:
                d = subtract(value, base[1])
                total = d if total is None else add(total, d)
        return total

    def increment(self, node: str, ts: int, by: Number) -> Counter:
        """The delta for ``node`` adding ``by`` at timestamp ``ts``."""
        cur = self.totals.get(node)
        value = by if cur is None else add(cur[1], by)
        return Counter({node: (ts, value)})

    def reset(self) -> Counter:
        """The delta of a reset that observed every increment seen so far."""
        return Counter(floor=dict(self.totals))

    def stable_in(self, stable: Mapping[str, int]) -> bool:
        """Every version here is stamped at or below ``stable`` of its node."""
        for d in (self.totals, self.floor):
            for actor, (ts, _) in d.items():
                if ts > stable.get(node_of(actor), -1):
                    return False
        return True

    def digest(self) -> int:
        """A stable 64-bit hash of totals and floor, equal for equal encodings."""
        h = 0
        for tag, d in ((b"t", self.totals), (b"f", self.floor)):
            for actor, (ts, v) in d.items():
                value = b"i%d" % v if isinstance(v, int) else b"d" + str(v).encode()
                h ^= xxhash.xxh3_64_intdigest(b"%b%b %d %b" % (tag, actor.encode(), ts, value))
        return h

    def encode(self) -> list[Any]:
        return [_encode_versions(self.totals), _encode_versions(self.floor)]

    @classmethod
    def decode(cls, data: Sequence[Any]) -> Counter:
        return cls(_decode_versions(data[0]), _decode_versions(data[1]))


def node_of(actor: str) -> str:
    """The member name of a counter actor ("name#start"): stability is known per member."""
    name, sep, _ = actor.rpartition("#")
    return name if sep else actor


def _join(into: dict[str, Version], other: dict[str, Version]) -> None:
    for node, v in other.items():
        cur = into.get(node)
        if cur is None or v[0] > cur[0]:
            into[node] = v


def _encode_versions(d: dict[str, Version]) -> list[Any]:
    # Sorted so that equal states encode to equal bytes (digests depend on it).
    return [
        [n, ts, v if isinstance(v, int) and INT64_MIN <= v <= INT64_MAX else "d" + str(v)]
        for n, (ts, v) in sorted(d.items())
    ]


def _decode_versions(rows: Sequence[Any]) -> dict[str, Version]:
    out: dict[str, Version] = {}
    for n, ts, v in rows:
        out[n] = (ts, Decimal(v[1:]) if isinstance(v, str) else v)
    return out
