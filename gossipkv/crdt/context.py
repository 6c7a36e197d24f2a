"""Causal contexts for observed-remove: what a remover had seen, per node.

A context maps node id -> the greatest HLC timestamp of that node's writes the remover had
observed. Each node's writes to one key reach a replica in order (one stream per origin) or
together (a full state), so "every write of node n up to ts" is exactly what was observed, and a
version vector of timestamps is as precise as a dot cloud here, at a fraction of the size.
"""

from __future__ import annotations

Context = dict[str, int]


def covers(ctx: Context | None, ts: int, node: str) -> bool:
    """True when a write stamped (ts, node) was observed, hence removed, by ``ctx``."""
    return ctx is not None and ts <= ctx.get(node, -1)


def join(into: Context, other: Context) -> None:
    """Merge ``other`` into ``into``: the union of what both removers observed."""
    for node, ts in other.items():
        if ts > into.get(node, -1):
            into[node] = ts


def observe(ctx: Context, ts: int, node: str) -> None:
    """Record that the write (ts, node) has been seen."""
    if ts > ctx.get(node, -1):
        ctx[node] = ts
