"""What the cluster offers to commands, as a protocol, so commands never import cluster/.

The node sets ``Server.cluster`` to an object with these methods when it runs in a cluster.
Methods that finish later return an asyncio.Future of the reply: the client blocks until then.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from gossipkv.commands.replies import Reply


class ClusterControl(Protocol):
    def meet(self, host: str, port: int) -> asyncio.Future[Reply]:
        """Join the node whose client port is host:port (MEET)."""
        ...

    def forget(self, name: str) -> Reply:
        """Remove a member for good (FORGET)."""
        ...

    def members(self) -> list[dict[str, Any]]:
        """One row per member, this node first: name, region, addresses, state, lag."""
        ...

    def wait(self, numreplicas: int, timeout_ms: int) -> asyncio.Future[Reply] | int:
        """WAIT: how many peers acknowledged every write made so far."""
        ...

    def antientropy_now(self, peer: str | None, repair: bool) -> asyncio.Future[Reply]:
        """Run an anti-entropy exchange now (ANTIENTROPY); the reply is its summary."""
        ...

    def info_replication(self) -> list[tuple[str, str]]:
        """The ``# Replication`` section of INFO, as (field, value) lines."""
        ...
