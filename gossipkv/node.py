"""One gossipkv node: the keyspace, the command table, the client listener, the expiry cycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import gossipkv.commands.all  # noqa: F401  (registers every command)
from gossipkv.commands.session import Server
from gossipkv.config import NodeConfig
from gossipkv.crdt.hlc import HLC
from gossipkv.resp.protocol import ClientProtocol
from gossipkv.store.keyspace import Keyspace

log = logging.getLogger("gossipkv.node")

EXPIRE_CYCLE_MS = 100  # Redis's active expiry runs at hz 10
EXPIRE_SLICE_MS = 25  # and spends at most a quarter of each period


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.keyspace = Keyspace(config.resolved_name(), HLC())
        params = dict(config.params)
        if config.requirepass:
            params["requirepass"] = config.requirepass
        self.server = Server(self.keyspace, params)
        self.server.region = config.region
        self.server.host = config.host
        self._listener: asyncio.base_events.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Listen for clients; raises OSError when the address cannot be bound."""
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: ClientProtocol(self.server),
            self.config.host,
            self.config.port,
            reuse_address=True,
            backlog=511,
        )
        sock = self._listener.sockets[0]
        self.server.port = sock.getsockname()[1]
        self._tasks.append(asyncio.create_task(self._expire_loop()))
        log.info(
            "event=listening node=%s host=%s port=%d",
            self.keyspace.node,
            self.config.host,
            self.server.port,
        )

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._listener is not None:
            self._listener.close()
            for s in list(self.server.clients.values()):
                if s.closer is not None:
                    s.closer()
            await self._listener.wait_closed()
        log.info("event=stopped node=%s", self.keyspace.node)

    async def _expire_loop(self) -> None:
        """Active expiry, as Redis: reap due keys in slices so clients are never starved."""
        limit = 200
        while True:
            await asyncio.sleep(EXPIRE_CYCLE_MS / 1000)
            start = time.monotonic()
            while self.keyspace.expire_cycle(limit) == limit:
                if (time.monotonic() - start) * 1000 > EXPIRE_SLICE_MS:
                    break
