"""Dots and causal contexts of the dot-based collections (delta-state CRDTs, Almeida et al.;
Riak's ORSWOT).

A dot names one write: (HLC ts, node). A collection keeps, per element, the dots of the adds that
made it present, and one context per key: the dots it has seen. In a join, a dot held by one side
only survives unless the other side's context covers it (the other side saw it and removed it),
so removals need no per-element tombstone: the context alone remembers them.

A context is a version vector ``vv`` (node -> ts: every dot of that node up to ts is covered)
plus a ``cloud`` of single dots outside it. Deltas carry exact dots in the cloud: HLC dots are
sparse, so "all of node n's dots up to ts" is only known once every node has seen them (causal
stability); the vector is where such knowledge is folded in, and ``compact`` drops cloud dots it
already covers.
"""

from __future__ import annotations

from typing import Any

Dot = tuple[int, str]  # (HLC ts, node id)


class DotContext:
    """The dots a replica (or a delta) has seen."""

    __slots__ = ("cloud", "vv")

    def __init__(self, vv: dict[str, int] | None = None, cloud: set[Dot] | None = None) -> None:
        self.vv: dict[str, int] = vv if vv is not None else {}
        self.cloud: set[Dot] = cloud if cloud is not None else set()

    def contains(self, dot: Dot) -> bool:
        return dot[0] <= self.vv.get(dot[1], -1) or dot in self.cloud

    def add(self, dot: Dot) -> None:
        if dot[0] > self.vv.get(dot[1], -1):
            self.cloud.add(dot)

    def join(self, other: DotContext) -> None:
        """In place: the union of what both have seen."""
        vv = self.vv
        for node, ts in other.vv.items():
            if ts > vv.get(node, -1):
                vv[node] = ts
        if other.cloud:
            self.cloud |= other.cloud
        if other.vv and self.cloud:
            self.compact()

    def compact(self) -> None:
        """Drop cloud dots the vector already covers."""
        vv = self.vv
        if vv:
            self.cloud = {d for d in self.cloud if d[0] > vv.get(d[1], -1)}

    def stabilize(self, node: str, ts: int) -> None:
        """Fold in that every dot of ``node`` up to ``ts`` is known everywhere (causal
        stability, learnt from the cluster): the cloud shrinks to what is newer."""
        if ts > self.vv.get(node, -1):
            self.vv[node] = ts
            self.compact()

    def copy(self) -> DotContext:
        return DotContext(dict(self.vv), set(self.cloud))

    def max_ts(self) -> int:
        m = max(self.vv.values(), default=0)
        for ts, _ in self.cloud:
            if ts > m:
                m = ts
        return m

    def __bool__(self) -> bool:
        return bool(self.vv) or bool(self.cloud)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, DotContext) and self.vv == other.vv and self.cloud == other.cloud
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DotContext({self.vv!r}, {sorted(self.cloud)!r})"

    def encode(self) -> list[Any]:
        """Canonical: [[node, ts]... sorted, [[ts, node]... sorted]]."""
        return [sorted([n, t] for n, t in self.vv.items()), sorted([t, n] for t, n in self.cloud)]

    @classmethod
    def decode(cls, data: list[Any]) -> DotContext:
        vv, cloud = data
        return cls({n: t for n, t in vv}, {(t, n) for t, n in cloud})
