"""The admin HTTP endpoint: ``GET /status`` as JSON.

It runs in the node's own event loop and reads the node's state through one callable, so it
never holds references into the keyspace or the cluster between requests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gossipkv.admin.chaos import add_routes as add_chaos_routes
from gossipkv.cluster.faults import Faults

log = logging.getLogger("gossipkv.admin")

StatusSource = Callable[[], dict[str, Any]]


class AdminServer:
    def __init__(
        self, host: str, port: int, status: StatusSource, faults: Faults | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.status = status
        app = web.Application()
        app.router.add_get("/status", self._status)
        app.router.add_get("/", self._index)
        add_chaos_routes(app, faults)  # 403 unless the node runs with chaos on
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self) -> None:
        """Bind the port; OSError when it is taken."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        if self.port == 0:  # the OS picked one
            self.port = int(self._runner.addresses[0][1])
        log.info("event=admin_listening host=%s port=%d", self.host, self.port)

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status())

    async def _index(self, request: web.Request) -> web.Response:
        return web.json_response({"endpoints": ["/status"]})
