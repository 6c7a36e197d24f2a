"""Last-writer-wins ordering by (HLC timestamp, node id), the tie-break every register uses."""

from __future__ import annotations


def wins(ts: int, node: str, cur_ts: int, cur_node: str) -> bool:
    """True when a write stamped (ts, node) replaces one stamped (cur_ts, cur_node)."""
    return ts > cur_ts or (ts == cur_ts and node > cur_node)
