"""Clusters for the chaos scenarios: real ``gossipkv serve --chaos`` processes (started by
tests/cluster_procs.py, the one place that starts nodes), and the faults applied to them through
each node's admin ``/chaos``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import redis

from gossipkv.admin.chaos import ChaosError, request
from tests.cluster_procs import ClusterNode, start_cluster

FORCED_SYNC = ("ANTIENTROPY",)  # the forced anti-entropy exchange, where the node has it


def start(tmp: Path, n: int = 3, extra: Iterable[str] = ()) -> list[ClusterNode]:
    """n nodes in n regions, fault injection on, admin endpoints up; once formed."""
    return start_cluster(tmp, n, admin=True, extra=["--chaos", *extra])


def rule(node: ClusterNode, **doc: Any) -> dict[str, Any]:
    return request("127.0.0.1", node.admin_port, "POST", doc)


def cut(a: ClusterNode, b: ClusterNode) -> None:
    """Cut all traffic between a and b, on both sides."""
    rule(a, peer=b.name, action="cut")
    rule(b, peer=a.name, action="cut")


def partition(side: Sequence[ClusterNode], rest: Sequence[ClusterNode]) -> None:
    for a in side:
        for b in rest:
            cut(a, b)


def heal(nodes: Iterable[ClusterNode]) -> None:
    """Clear every rule on every node still running."""
    for node in nodes:
        if node.server is not None and node.proc.poll() is None:
            with contextlib.suppress(ChaosError):
                request("127.0.0.1", node.admin_port, "DELETE")


def counters(node: ClusterNode) -> dict[str, int]:
    try:
        doc = request("127.0.0.1", node.admin_port, "GET")
    except ChaosError:
        return {}
    return dict(doc.get("counters", {}))


def _digest(node: ClusterNode) -> str | None:
    try:
        return node.digest()
    except (redis.RedisError, OSError):
        return None


def force_sync(nodes: Sequence[ClusterNode]) -> bool:
    """Ask every node for an anti-entropy exchange now; False when no node has the command."""
    found = False
    for node in nodes:
        for command in FORCED_SYNC:
            try:
                with node.client() as c:
                    c.execute_command(command)
                found = True
            except redis.ResponseError as e:
                if "unknown command" not in str(e):
                    found = True
            except (redis.RedisError, OSError):
                pass
    return found


def wait_converged(nodes: Sequence[ClusterNode], timeout: float) -> tuple[bool, float]:
    """Wait (with a deadline) for equal DEBUG DIGEST on every node, forcing anti-entropy
    exchanges where the nodes have them; (converged, seconds it took). Call it once every
    client has stopped: then equal digests mean nothing is left in flight."""
    start = time.monotonic()
    deadline = start + timeout
    next_sync = start + 1.0
    while True:
        digests = {_digest(n) for n in nodes}
        if len(digests) == 1 and None not in digests:
            return True, time.monotonic() - start
        now = time.monotonic()
        if now > deadline:
            return False, now - start
        if now >= next_sync:
            force_sync(nodes)
            next_sync = now + 1.0
        time.sleep(0.1)
