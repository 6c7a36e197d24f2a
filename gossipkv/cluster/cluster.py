"""The cluster as the rest of the node sees it: membership driving replication, and the commands.

Membership decides who is in the cluster; this module turns its news into replication links (a
member seen alive or suspect gets a link, a dead, left or forgotten one loses it) and answers the
cluster commands (MEET, FORGET, MEMBERS, WAIT, INFO replication) through ClusterControl.

MEET takes a peer's *client* port, as redis-cli users type it: the peer's cluster port is learnt
by asking the peer itself for its MEMBERS (its first row is the node itself), and membership then
joins through that port. The snapshot exchange in both directions follows from the join: each
side sees the other alive, opens a link, and a link to a peer that never synced with this run
starts with a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import hiredis

from gossipkv.cluster.antientropy import AntiEntropy, AntiEntropyError, Summary
from gossipkv.cluster.bus import Addr, ClusterBus
from gossipkv.cluster.member import Member, State
from gossipkv.cluster.membership import Membership
from gossipkv.cluster.rejoin import Rejoin
from gossipkv.cluster.replication import SNAPSHOT, STREAMING, Replication
from gossipkv.cluster.watermark import Watermark
from gossipkv.commands.replies import OK, ErrorReply, Reply

log = logging.getLogger("gossipkv.cluster")

LEAVE_TIMEOUT = 1.0  # seconds to let the news of a graceful leave spread
FLUSH_TIMEOUT_MS = 2000  # on shutdown, how long peers get to acknowledge the last writes
SEED_RETRY_MIN = 0.2
SEED_RETRY_MAX = 5.0
MEET_TIMEOUT_MIN = 2.0  # a MEET waits at least this long for the peer's client port to answer

_LIVE = (State.ALIVE, State.SUSPECT)


class Cluster:
    """Bus, membership and replication as one; the ClusterControl that commands talk to."""

    def __init__(
        self,
        bus: ClusterBus,
        membership: Membership,
        replication: Replication,
        seeds: list[Addr] | None = None,
        password: Callable[[], str] | None = None,
        antientropy: AntiEntropy | None = None,
        watermark: Watermark | None = None,
        rejoin: Rejoin | None = None,
    ) -> None:
        self.bus = bus
        self.membership = membership
        self.replication = replication
        self.antientropy = antientropy
        self.watermark = watermark
        self.rejoin = rejoin
        if antientropy is not None:
            replication.on_overrun = antientropy.exchange_soon
        if antientropy is not None and watermark is not None:
            antientropy.refuse = watermark.refused
        self.seeds = list(seeds or [])
        # This node's requirepass, sent as AUTH to a MEET target: one cluster, one password.
        self.password: Callable[[], str] = password or _no_password
        self._seeding: asyncio.Task[None] | None = None
        self._meets: set[asyncio.Task[Reply]] = set()
        membership.listeners.append(self._on_member)

    @property
    def me(self) -> Member:
        return self.membership.me

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start order: the bus (bound by the caller), replication, membership, then the seeds."""
        await self.replication.start()
        await self.membership.start()
        if self.watermark is not None:
            await self.watermark.start()
        if self.rejoin is not None:
            await self.rejoin.start()
        if self.antientropy is not None:
            await self.antientropy.start()
        seeds = [s for s in self.seeds if not self._is_me(s)]
        if seeds:
            self._seeding = asyncio.create_task(self._join_seeds(seeds), name="cluster-seeds")

    async def stop(self) -> None:
        """Let peers take the last writes, announce the leave, then stop everything in order."""
        for task in [self._seeding, *self._meets]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.rejoin is not None:
            await self.rejoin.stop()
        if self.antientropy is not None:
            await self.antientropy.stop()
        if self.watermark is not None:
            await self.watermark.stop()
        await self._flush()
        await self.membership.leave(LEAVE_TIMEOUT)
        await self.membership.stop()
        await self.replication.stop()
        await self.bus.stop()

    async def _flush(self) -> None:
        """Wait (bounded) until every connected peer acknowledged every local write."""
        up = sum(1 for p in self.replication.peers() if p["state"] in (STREAMING, SNAPSHOT))
        if not up:
            return
        pending = self.replication.wait(up, FLUSH_TIMEOUT_MS)
        acked = await pending if isinstance(pending, asyncio.Future) else pending
        log.info("event=flushed peers=%d acked=%d seq=%d", up, acked, self.replication.seq)

    async def _join_seeds(self, seeds: list[Addr]) -> None:
        """Join through the first seed that answers; retry until one does or a peer finds us.

        Nodes started together find their seeds not listening yet: failures are logged at
        debug level, and once as a warning when retries have reached their slowest pace.
        """
        delay = SEED_RETRY_MIN
        warned = False
        while True:
            for addr in seeds:
                try:
                    await self.membership.join(addr)
                    return
                except (OSError, TimeoutError) as e:
                    log.debug("event=seed_unreachable seed=%s:%d error=%r", *addr, e)
                except Exception as e:  # a seed that answers nonsense must not end the retries
                    log.warning("event=seed_failed seed=%s:%d error=%r", *addr, e)
            if any(m.state == State.ALIVE for m in self.membership.members.values()):
                return  # someone joined us meanwhile: gossip does the rest
            if delay >= SEED_RETRY_MAX and not warned:
                warned = True
                log.warning(
                    "event=seeds_unreachable seeds=%s retry_s=%g",
                    ",".join(f"{h}:{p}" for h, p in seeds), delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, SEED_RETRY_MAX)

    def _is_me(self, addr: Addr) -> bool:
        local = {self.me.host, self.bus.host, "127.0.0.1", "localhost", "0.0.0.0", "::1"}
        return addr[1] == self.bus.port and addr[0] in local

    # -- membership -> replication ----------------------------------------------------------------

    def _on_member(self, m: Member) -> None:
        if m.name == self.me.name:
            return
        if m.state in _LIVE and self.membership.members.get(m.name) is m:
            self.replication.connect(m.name, m.cluster_addr)
        else:
            self.replication.disconnect(m.name)

    # -- ClusterControl ---------------------------------------------------------------------------

    def meet(self, host: str, port: int) -> asyncio.Future[Reply]:
        task = asyncio.get_running_loop().create_task(self._meet(host, port), name="cluster-meet")
        self._meets.add(task)
        task.add_done_callback(self._meets.discard)
        return task

    async def _meet(self, host: str, port: int) -> Reply:
        where = f"{host}:{port}"
        timeout = max(MEET_TIMEOUT_MIN, self.membership.profile.tcp_timeout)
        try:
            async with asyncio.timeout(timeout):
                peer = await self._ask_identity(host, port)
        except TimeoutError:
            return ErrorReply(f"ERR MEET {where}: no answer within {timeout:g} s")
        except OSError as e:
            return ErrorReply(f"ERR MEET {where}: cannot connect: {e.strerror or e}")
        except _PeerError as e:
            return ErrorReply(f"ERR MEET {where}: {e}")
        name, cluster_port = peer
        if name == self.me.name:
            if cluster_port == self.bus.port:
                return ErrorReply(f"ERR MEET {where} is this node")
            return ErrorReply(
                f"ERR MEET {where}: that node is named '{name}' too; node names must be unique"
            )
        started = time.monotonic()
        try:
            await self.membership.join((host, cluster_port))
        except Exception as e:  # whatever went wrong, the user gets one line, not a traceback
            return ErrorReply(
                f"ERR MEET {where}: joining through its cluster port {cluster_port} failed: "
                f"{_why(e)}"
            )
        log.info(
            "event=meet peer=%s addr=%s cluster_port=%d members=%d ms=%.1f",
            name, where, cluster_port, len(self.membership.members),
            (time.monotonic() - started) * 1000,
        )
        return OK

    async def _ask_identity(self, host: str, port: int) -> tuple[str, int]:
        """The name and cluster port of the node serving clients at host:port."""
        reader, writer = await asyncio.open_connection(host, port)
        try:
            parser = hiredis.Reader()
            password = self.password()
            if password:
                writer.write(_resp(b"AUTH", password.encode()))
                await _reply(reader, parser)  # a refusal shows in the MEMBERS reply below
            writer.write(_resp(b"MEMBERS"))
            reply = await _reply(reader, parser)
        finally:
            writer.close()
        if isinstance(reply, hiredis.ReplyError):
            if str(reply).startswith(("NOAUTH", "WRONGPASS")):
                raise _PeerError(f"it wants a password this node does not know ({reply})")
            raise _PeerError(f"it refused MEMBERS ({reply}); is it a gossipkv node?")
        try:
            first = reply[0]
            row = {first[i].decode(): first[i + 1] for i in range(0, len(first), 2)}
            name = row["name"].decode()
            cluster_port = int(row["cluster_port"])
        except (TypeError, KeyError, IndexError, ValueError, AttributeError):
            raise _PeerError("its MEMBERS reply is not what a gossipkv node sends") from None
        if not 0 < cluster_port <= 65535:
            raise _PeerError(f"it reports cluster port {cluster_port}")
        return name, cluster_port

    def forget(self, name: str) -> Reply:
        if name == self.me.name:
            return ErrorReply("ERR I tried hard but I can't forget myself...")
        if not self.membership.forget(name):
            return ErrorReply(f"ERR Unknown node {name}")
        self.replication.disconnect(name)
        return OK

    def members(self) -> list[dict[str, Any]]:
        """This node first, then every known member by name, with its replication link."""
        peers = {p["name"]: p for p in self.replication.peers()}
        rows = [_row(self.me, "self", 0, 0.0)]
        for name in sorted(self.membership.members):
            m = self.membership.members[name]
            p = peers.get(name)
            if p is None:
                rows.append(_row(m, "none", 0, 0.0))
            else:
                rows.append(_row(m, p["state"], p["lag_ops"], p["lag_ms"]))
        return rows

    def wait(self, numreplicas: int, timeout_ms: int) -> asyncio.Future[Reply] | int:
        return self.replication.wait(numreplicas, timeout_ms)

    def antientropy_now(self, peer: str | None, repair: bool) -> asyncio.Future[Reply]:
        """ANTIENTROPY: run an exchange now; the reply is its summary as a map."""
        task = asyncio.get_running_loop().create_task(
            self._antientropy_now(peer, repair), name="anti-entropy-forced"
        )
        self._meets.add(task)
        task.add_done_callback(self._meets.discard)
        return task

    async def _antientropy_now(self, peer: str | None, repair: bool) -> Reply:
        if self.antientropy is None:
            return ErrorReply("ERR anti-entropy is not running on this node")
        try:
            summary = await self.antientropy.exchange(peer, repair)
        except AntiEntropyError as e:
            return ErrorReply(f"ERR ANTIENTROPY: {e}")
        return _summary_reply(summary)

    def info_replication(self) -> list[tuple[str, str]]:
        peers = self.replication.peers()
        lines = [
            ("role", "active-active"),
            ("node_name", self.me.name),
            ("node_region", self.me.region),
            ("cluster_port", str(self.bus.port)),
            ("repl_run_id", self.replication.run_id),
            ("repl_seq", str(self.replication.seq)),
            ("connected_peers", str(sum(1 for p in peers if p["state"] == STREAMING))),
        ]
        for i, p in enumerate(peers):
            lines.append((
                f"peer{i}",
                f"name={p['name']},addr={p['addr']},state={p['state']},"
                f"lag_ops={p['lag_ops']},lag_ms={p['lag_ms']:.3f},acked_seq={p['acked_seq']},"
                f"applied_seq={p['applied_seq']}",
            ))
        if self.antientropy is not None:
            lines.extend(self.antientropy.info())
        if self.watermark is not None:
            lines.extend(self.watermark.info())
        if self.rejoin is not None:
            lines.extend(self.rejoin.info())
        return lines

    # -- status for people ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Membership and replication as the admin endpoint's JSON shows them."""
        return {
            "members": self.members(),
            "incarnation": self.me.incarnation,
            "health": self.membership.health,
            "lag_ms": round(self.membership.lag_ms, 3),
            "cluster_port": self.bus.port,
            "replication": {
                "run_id": self.replication.run_id,
                "seq": self.replication.seq,
                "peers": self.replication.peers(),
            },
            "antientropy": None if self.antientropy is None else self.antientropy.status(),
            "gc": None if self.watermark is None else self.watermark.status(),
            "rejoin": None if self.rejoin is None else self.rejoin.status(),
        }


def _summary_reply(s: Summary) -> Reply:
    return {
        "peer": s.peer.encode(),
        "mode": s.mode.encode(),
        "in_sync": int(s.in_sync),
        "levels_walked": s.levels_walked,
        "leaves_differing": s.leaves_differing,
        "keys_compared": s.keys_compared,
        "candidates": s.candidates,
        "differences": s.differences,
        "repaired_here": s.repaired_here,
        "repaired_there": s.repaired_there,
        "round_trips": s.round_trips,
        "bytes_sent": s.bytes_sent,
        "bytes_received": s.bytes_received,
        "ms": round(s.ms, 3),
        "error": s.error.encode(),
    }


def _no_password() -> str:
    return ""


class _PeerError(Exception):
    """The MEET target answered, but not as a gossipkv node would."""


def _row(m: Member, link: str, lag_ops: int, lag_ms: float) -> dict[str, Any]:
    return {
        "name": m.name,
        "region": m.region,
        "host": m.host,
        "client_port": m.client_port,
        "cluster_port": m.cluster_port,
        "admin_port": m.admin_port,
        "state": m.state.name.lower(),
        "incarnation": m.incarnation,
        "lag_ops": lag_ops,
        "lag_ms": float(lag_ms),
        "link": link,
    }


def _resp(*argv: bytes) -> bytes:
    return b"*%d\r\n" % len(argv) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in argv)


async def _reply(reader: asyncio.StreamReader, parser: Any) -> Any:
    while True:
        try:
            reply = parser.gets()
        except hiredis.ProtocolError:
            raise _PeerError("it does not speak RESP") from None
        if reply is not False:
            return reply
        data = await reader.read(65536)
        if not data:
            raise _PeerError("it closed the connection")
        parser.feed(data)


def _why(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
