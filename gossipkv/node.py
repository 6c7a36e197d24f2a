"""One gossipkv node: the keyspace, the command table, the client listener, the expiry cycle,
the cluster (bus, membership, replication) and the admin endpoint.

Start order: client port bound (not yet serving), cluster bus, admin endpoint, replication (its
sink installed before any client can write), membership, seeds, then clients are served. Stop
order: clients, then the cluster (flush, leave, membership, replication, bus), then admin.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import time
from typing import Any

import gossipkv.commands.all  # noqa: F401  (registers every command)
from gossipkv import __version__
from gossipkv.admin.http import AdminServer
from gossipkv.cluster.antientropy import AntiEntropy
from gossipkv.cluster.bus import ClusterBus
from gossipkv.cluster.cluster import Cluster
from gossipkv.cluster.faults import Addr, Faults
from gossipkv.cluster.member import Member
from gossipkv.cluster.membership import Membership
from gossipkv.cluster.profile import PROFILES
from gossipkv.cluster.rejoin import Rejoin
from gossipkv.cluster.replication import Replication
from gossipkv.cluster.watermark import Watermark
from gossipkv.commands.session import Server
from gossipkv.config import NodeConfig
from gossipkv.crdt.hlc import HLC
from gossipkv.resp.protocol import ClientProtocol, PendingWrites
from gossipkv.store.keyspace import Keyspace

log = logging.getLogger("gossipkv.node")

EXPIRE_SHARE = 0.25  # active expiry spends at most this share of each cron period, as Redis's


# Full (generation 2) collections: at most once per this many generation-1 collections.
GC_FULL_EVERY = 1_000_000


def tune_gc() -> None:
    """Keep the cyclic GC from walking the whole keyspace while clients wait (process-wide:
    ``gossipkv serve`` calls it once the node has started).

    The keyspace is millions of long-lived, acyclic objects; every full collection walks all of
    them, a pause of tens to hundreds of milliseconds at a million keys (a MEET or snapshot
    allocates enough to trigger several). Young generations still collect the short-lived
    cycles of request handling; full collections become rare, and what exists at start-up is
    frozen out of them altogether.
    """
    gen0, gen1, _ = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(gen0, gen1, GC_FULL_EVERY)


class ListenError(Exception):
    """A port of this node cannot be bound; the message is the one line the user sees."""

    def __init__(self, what: str, host: str, port: int, error: OSError) -> None:
        if error.errno is None and isinstance(error.__cause__, OSError):
            error = error.__cause__  # uvloop wraps the bind error of a datagram endpoint
        reason = (
            "address already in use" if error.errno == errno.EADDRINUSE
            else error.strerror or str(error)
        )
        label = "" if what == "client" else f" ({what} port)"
        super().__init__(f"cannot listen on {host}:{port}{label}: {reason}")
        self.what = what


def _distinct(what: str, host: str, port: int, taken: dict[str, int]) -> None:
    """ListenError when ``port`` is one this node already uses for something else."""
    for other, used in taken.items():
        if port and port == used:
            raise ListenError(what, host, port, OSError(errno.EINVAL, f"it is the {other} port"))


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
        self.bus: ClusterBus | None = None
        self.admin: AdminServer | None = None
        self.cluster: Cluster | None = None

    async def start(self) -> None:
        """Bind every port, then serve; ListenError (after closing what was bound) on failure."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        writes = PendingWrites(loop.call_soon)
        try:
            self._listener = await loop.create_server(
                lambda: ClientProtocol(self.server, writes),
                cfg.host,
                cfg.port,
                reuse_address=True,
                backlog=511,
                start_serving=False,
            )
        except OSError as e:
            raise ListenError("client", cfg.host, cfg.port, e) from e
        sock = self._listener.sockets[0]
        self.server.port = sock.getsockname()[1]
        try:
            await self._start_cluster()
        except BaseException:
            await self._close_partial()
            raise
        await self._listener.start_serving()
        self._tasks.append(asyncio.create_task(self._cron()))
        log.info(
            "event=listening node=%s host=%s port=%d cluster_port=%d admin_port=%d",
            self.keyspace.node,
            cfg.host,
            self.server.port,
            self.bus.port if self.bus is not None else 0,
            self.admin.port if self.admin is not None else 0,
        )

    async def _start_cluster(self) -> None:
        cfg = self.config
        cluster_port = cfg.resolved_cluster_port(self.server.port)
        # The client socket is bound but not yet listening, so the OS would let the bus bind
        # the same port; refuse that here rather than serve neither properly.
        _distinct("cluster", cfg.host, cluster_port, {"client": self.server.port})
        self.bus = ClusterBus(cfg.host, cluster_port)
        try:
            await self.bus.start()
        except OSError as e:
            await self.bus.stop()  # the TCP half may be bound when the UDP half is not
            self.bus = None
            raise ListenError("cluster", cfg.host, cluster_port, e) from e
        faults = Faults(self._member_at) if cfg.chaos else None
        if faults is not None:
            self.bus.install_faults(faults)
            log.warning("event=chaos_enabled node=%s", self.keyspace.node)
        if cfg.admin_port:
            _distinct(
                "admin", cfg.host, cfg.admin_port,
                {"client": self.server.port, "cluster": self.bus.port},
            )
            admin = AdminServer(cfg.host, cfg.admin_port, self.status, faults)
            try:
                await admin.start()
            except OSError as e:
                raise ListenError("admin", cfg.host, cfg.admin_port, e) from e
            self.admin = admin
        name = self.keyspace.node
        me = Member(
            name, cfg.region, cfg.advertised_host(), self.server.port, self.bus.port,
            self.admin.port if self.admin is not None else 0,
        )
        replication = Replication(
            self.bus, self.keyspace, name, cfg.backlog_ops, cfg.backlog_bytes
        )
        replication.overrun = cfg.overrun
        membership = Membership(self.bus, me, PROFILES[cfg.profile])
        antientropy = AntiEntropy(
            self.bus, self.keyspace, membership, replication, cfg.anti_entropy_interval
        )
        watermark = Watermark(
            self.bus, self.keyspace, membership, replication, cfg.resolved_gc_horizon(),
            cfg.gc_interval,
        )
        rejoin = Rejoin(
            self.bus, self.keyspace, membership, replication, watermark, antientropy, cfg.rejoin
        )
        rejoin.on_loading = self._loading
        self.cluster = Cluster(
            self.bus, membership, replication, cfg.seeds, lambda: self.server.requirepass,
            antientropy, watermark, rejoin,
        )
        self.server.cluster = self.cluster
        await self.cluster.start()

    def _loading(self, message: str) -> None:
        """Clients get ``message`` as an error while a rejoin reloads the keyspace."""
        self.server.loading = message

    def _member_at(self, addr: Addr) -> str | None:
        """The member name at a cluster address (fault injection's view of a packet's peer)."""
        if self.cluster is None:
            return None
        for m in self.cluster.membership.members.values():
            if m.cluster_addr == addr:
                return m.name
        return None

    async def _close_partial(self) -> None:
        """Undo a start that failed half way (the process usually exits right after)."""
        if self.admin is not None:
            await self.admin.stop()
            self.admin = None
        if self.bus is not None:
            await self.bus.stop()
            self.bus = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def stop(self) -> None:
        """Clients first, so no write arrives that peers could miss; then the cluster leaves."""
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
        if self.cluster is not None:
            await self.cluster.stop()
        if self.admin is not None:
            await self.admin.stop()
        log.info("event=stopped node=%s", self.keyspace.node)

    def status(self) -> dict[str, Any]:
        """What the admin endpoint serves at /status (and ``gossipkv status`` prints)."""
        ks = self.keyspace
        doc: dict[str, Any] = {
            "node": ks.node,
            "region": self.config.region,
            "version": __version__,
            "host": self.config.advertised_host(),
            "client_port": self.server.port,
            "cluster_port": self.bus.port if self.bus is not None else 0,
            "admin_port": self.admin.port if self.admin is not None else 0,
            "profile": self.config.profile,
            "uptime_s": round(time.time() - self.server.started, 3),
            "keyspace": {
                "keys": len(ks.live),
                "expires": len(ks.expiry),
                "tombstones": len(ks.tombstones),
            },
        }
        if self.cluster is not None:
            doc.update(self.cluster.status())
        return doc

    async def _cron(self) -> None:
        """Redis's serverCron, ``hz`` times a second: refresh the cached clock clients' idle
        time is kept by, bring the Merkle leaves of the keys written since up to date (so that
        work stays one tick's worth), reap due keys in a slice (active expiry, so clients are
        never starved), and once a second close clients idle past CONFIG ``timeout``."""
        limit = 200
        server = self.server
        next_idle_check = 0.0
        while True:
            period = 1 / server.hz
            await asyncio.sleep(period)
            now = server.unixtime = time.time()
            self.keyspace.flush_tree()
            start = time.monotonic()
            while self.keyspace.expire_cycle(limit) == limit:
                if time.monotonic() - start > period * EXPIRE_SHARE:
                    break
            if now >= next_idle_check:
                next_idle_check = now + 1
                closed = server.close_idle()
                if closed:
                    log.info("event=idle_clients_closed count=%d", closed)
