"""SWIM membership with Lifeguard, after hashicorp/memberlist (state.go, net.go).

Failure detection: one member is probed per probe interval, in a shuffled round-robin order, by a
UDP ping; without an ack within the probe timeout, ``indirect_checks`` other members are asked to
ping it (ping-req) and answer with its ack or a nack; without any ack by the end of the interval
the member is suspected. A suspicion becomes a conviction (dead) after a timeout that shrinks as
independent accusers confirm it, unless the member refutes it first by gossiping itself alive with
a higher incarnation. Updates (alive, suspect, dead, left) spread by piggybacking on every ping,
ack, nack and ping-req, and by a gossip round to a few random members; a periodic TCP push-pull of
the whole table repairs whatever gossip missed.

Lifeguard: a local health score (missed nacks, refutations) stretches this node's own probe
timeouts and interval; a ping to a suspect carries the suspicion so it can refute at once; and a
node whose event loop stalled convicts no one on evidence gathered while it was frozen.

Where this differs from memberlist: the awareness score scales the probe timeout as well as the
interval (as the Lifeguard paper does); an intermediary nacks at 80% of the probe timeout (as the
paper) so the nack arrives before the requester gives up; news that a member is alive is never
spent on that member itself, and no news is spent on a member held suspect or dead (memberlist
leaves the broadcasts off a probe of a suspect but spends them on gossip to it, which in a small
cluster can use up an accusation before the other accusers hear it); a joining node announces
itself to every member at once; and each push-pull round also tries one dead member, so a false
conviction (a partition, a long stall) heals without a new MEET.

Wire format (msgpack arrays, first element the kind):
  UDP  ["ping", seq, target name, sender name, updates]
       ["pingreq", seq, target name, target host, target cluster port, want nack, sender name,
        updates]
       ["ack", seq, updates]   ["nack", seq, updates]   ["gossip", updates]
  TCP  ["pushpull", [member, ...]] both ways (Member.encode rows, this node first)
  updates: ["alive", member] | ["suspect", name, incarnation, accuser]
         | ["dead", name, incarnation, accuser] | ["left", name, incarnation]
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from gossipkv.cluster.awareness import Awareness
from gossipkv.cluster.broadcasts import BroadcastQueue
from gossipkv.cluster.bus import Addr, ClusterBus
from gossipkv.cluster.frames import FrameError, read_frame, write_frame
from gossipkv.cluster.lag import LagMonitor
from gossipkv.cluster.member import Member, State
from gossipkv.cluster.profile import Profile
from gossipkv.cluster.suspicion import Suspicion

log = logging.getLogger("gossipkv.cluster.membership")

UDP_BUDGET = 1400  # bytes of piggybacked updates per packet: one packet under a common MTU
PUSH_PULL_SCALE_THRESHOLD = 32  # memberlist: push-pull slows down beyond this many nodes

Listener = Callable[[Member], None]
ProbeResult = Literal["ack", "suspect", "abandoned", "skipped"]
_GONE = (State.DEAD, State.LEFT)


def push_pull_scale(interval: float, n: int) -> float:
    """memberlist's pushPullScale: fewer full-state exchanges per node as the cluster grows."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    return interval * (math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1)


def decode_member(data: Any) -> Member | None:
    """A member row from a peer, or None when it is malformed (peers are not trusted)."""
    if not isinstance(data, list) or len(data) < 8:
        return None
    name, region, host, client_port, cluster_port, admin_port, inc, state = data[:8]
    if not (isinstance(name, str) and name and isinstance(region, str) and isinstance(host, str)):
        return None
    numbers = (client_port, cluster_port, admin_port, inc, state)
    if not all(_is_int(x) for x in numbers):
        return None
    if not (_is_port(cluster_port) and 0 <= client_port <= 65535 and 0 <= admin_port <= 65535):
        return None  # a bad port would make the datagram transport fail, not just this send
    try:
        return Member(name, region, host, client_port, cluster_port, admin_port, inc, State(state))
    except ValueError:
        return None


def _alive_row(m: Member) -> list[Any]:
    row = m.encode()
    row[7] = int(State.ALIVE)
    return row


def _same_identity(a: Member, b: Member) -> bool:
    return (a.region, a.host, a.client_port, a.cluster_port, a.admin_port) == (
        b.region, b.host, b.client_port, b.cluster_port, b.admin_port,
    )


@dataclass
class _Pending:
    """What to do when the ack (or a nack) for one of our sequence numbers arrives."""

    on_ack: Callable[[], None]
    on_nack: Callable[[], None] | None = None
    reaper: asyncio.TimerHandle | None = None


class Membership:
    """This node's view of the cluster, kept current by SWIM.

    ``members`` holds every other known member in any state until it is reaped or forgotten;
    the Member objects are updated in place. Each listener is called with the Member after its
    state changes, when it is first seen (alive), when its addresses change, and when it is
    reaped (its last state kept, no longer in ``members``) or forgotten (then marked left).
    """

    def __init__(self, bus: ClusterBus, me: Member, profile: Profile) -> None:
        self.bus = bus
        self.me = me
        self.profile = profile
        self.members: dict[str, Member] = {}
        self.listeners: list[Listener] = []
        self.awareness = Awareness(profile.awareness_max_multiplier)
        self.lag = LagMonitor(profile.stall_grace, interval=min(0.1, profile.stall_grace / 5))
        self.broadcasts = BroadcastQueue(lambda: profile.retransmit_limit(self.num_nodes()))
        self.seeds: list[Addr] = []  # join addresses, retried when no peer is alive
        self._suspicions: dict[str, Suspicion] = {}
        self._pending: dict[int, _Pending] = {}
        self._seq = itertools.count(1)
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._banned: dict[str, float] = {}  # forgotten name -> monotonic time the ban ends
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._leaving = False
        self._running = True
        bus.on_packet("ping", self._on_ping)
        bus.on_packet("pingreq", self._on_pingreq)
        bus.on_packet("ack", self._on_ack)
        bus.on_packet("nack", self._on_nack)
        bus.on_packet("gossip", self._on_gossip)
        bus.on_stream("pushpull", self._serve_push_pull)

    # -- public ----------------------------------------------------------------------------------

    @property
    def lag_ms(self) -> float:
        return self.lag.lag * 1000.0

    @property
    def health(self) -> int:
        return self.awareness.score

    def num_nodes(self) -> int:
        """Known nodes, this one included, as memberlist's estNumNodes (dead ones until reaped)."""
        return len(self.members) + 1

    async def start(self) -> None:
        self.broadcasts.queue(self.me.name, ["alive", _alive_row(self.me)])
        self._spawn(self.lag.run(), "lag")
        self._spawn(self._probe_loop(), "probe")
        self._spawn(self._gossip_loop(), "gossip")
        self._spawn(self._push_pull_loop(), "pushpull")
        log.info(
            "event=membership_started name=%s profile=%s addr=%s:%d incarnation=%d",
            self.me.name, self.profile.name, self.me.host, self.me.cluster_port,
            self.me.incarnation,
        )

    async def join(self, addr: tuple[str, int]) -> None:
        """Exchange full state with a seed; OSError or TimeoutError when that fails."""
        if addr not in self.seeds:
            self.seeds.append(addr)
        await self._push_pull(addr)
        # Announce ourselves to everyone the seed told us of at once (one packet each, outside
        # the piggyback budget), then by gossip as memberlist does, in case a packet is lost.
        hello = ["alive", _alive_row(self.me)]
        for m in self.members.values():
            if m.state not in _GONE:
                self.bus.send_packet(m.cluster_addr, ["gossip", [hello]])
        self.broadcasts.queue(self.me.name, hello)
        log.info("event=joined seed=%s:%d members=%d", addr[0], addr[1], len(self.members))

    async def leave(self, timeout: float) -> None:
        """Announce that this node leaves; wait until the news has spread or ``timeout`` passed."""
        if self._leaving:
            return
        self._leaving = True
        me = self.me
        me.state = State.LEFT
        me.changed = time.monotonic()
        self._log_state(me)
        spread = asyncio.Event()
        update = ["left", me.name, me.incarnation]
        self.broadcasts.queue(me.name, update, on_done=spread.set)
        peers = [m for m in self.members.values() if m.state not in _GONE]
        for m in peers:  # do not wait for a gossip round to start spreading it
            self.bus.send_packet(m.cluster_addr, ["gossip", [update]])
        if not any(m.state == State.ALIVE for m in peers):
            return  # news is spent only on live members: nobody to wait for
        try:
            await asyncio.wait_for(spread.wait(), timeout)
        except TimeoutError:
            log.info("event=leave_timeout name=%s", me.name)

    def forget(self, name: str) -> bool:
        """Drop a member and ignore news of it for ``dead_reap_after`` seconds."""
        m = self.members.pop(name, None)
        if m is None:
            return False
        now = time.monotonic()
        self._banned[name] = now + self.profile.dead_reap_after
        self._cancel_suspicion(name)
        self.broadcasts.drop(name)
        if m.state not in _GONE:
            m.state = State.LEFT  # from here on it is out of this node's cluster
            m.changed = now
        log.info("event=member_forgotten name=%s", name)
        self._notify(m)
        return True

    async def stop(self) -> None:
        self._running = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        for s in self._suspicions.values():
            s.cancel()
        self._suspicions.clear()
        for p in self._pending.values():
            if p.reaper is not None:
                p.reaper.cancel()
        self._pending.clear()
        for h in self._timers:
            h.cancel()
        self._timers.clear()

    async def probe(self, name: str) -> ProbeResult:
        """One SWIM probe of ``name``: direct ping, then ping-req through k peers, then suspect."""
        m = self.members.get(name)
        if m is None or m.state in _GONE:
            return "skipped"
        loop = asyncio.get_running_loop()
        interval = self.awareness.scale(self.profile.probe_interval)
        timeout = self.awareness.scale(self.profile.probe_timeout)
        seq = next(self._seq)
        acked: asyncio.Future[None] = loop.create_future()
        nacks = 0

        def on_ack() -> None:
            if not acked.done():
                acked.set_result(None)

        def on_nack() -> None:
            nonlocal nacks
            nacks += 1

        self._expect(seq, _Pending(on_ack, on_nack), interval)
        incarnation = m.incarnation
        started = time.monotonic()
        updates = self._piggyback(name)
        if m.state == State.SUSPECT:  # buddy system: let it know at once, so it can refute
            updates.insert(0, ["suspect", name, incarnation, self.me.name])
        self.bus.send_packet(m.cluster_addr, ["ping", seq, name, self.me.name, updates])
        health_delta = -1
        try:
            if await _settled(acked, timeout):
                return "ack"
            peers = self._random_members(
                self.profile.indirect_checks, lambda p: p.state == State.ALIVE and p.name != name
            )
            for p in peers:
                self.bus.send_packet(
                    p.cluster_addr,
                    ["pingreq", seq, name, m.host, m.cluster_port, True, self.me.name,
                     self._piggyback(p.name)],
                )
            if await _settled(acked, started + interval - time.monotonic()):
                return "ack"
            if self.lag.stalled_since(started) or self._leaving or not self._running:
                health_delta = 0
                log.info("event=probe_abandoned name=%s reason=loop_stall", name)
                return "abandoned"
            # Peers that could not even nack are a sign the trouble is ours (Lifeguard).
            health_delta = max(0, len(peers) - nacks) if peers else 1
            log.info("event=probe_failed name=%s nacks=%d/%d", name, nacks, len(peers))
            self._on_suspect(name, incarnation, self.me.name)
            return "suspect"
        finally:
            self._unexpect(seq)
            self.awareness.apply(health_delta)

    # -- state transitions (memberlist's aliveNode, suspectNode, deadNode) ---------------------

    def _on_alive(self, a: Member) -> None:
        me = self.me
        if a.name == me.name:
            if self._leaving or a.incarnation < me.incarnation:
                return
            if a.incarnation == me.incarnation and _same_identity(a, me):
                return
            self._refute(a.incarnation)  # someone holds an older or foreign picture of us
            return
        if a.name in self._banned:
            if self._banned[a.name] > time.monotonic():
                return
            del self._banned[a.name]
        m = self.members.get(a.name)
        if m is None:
            m = Member(
                a.name, a.region, a.host, a.client_port, a.cluster_port, a.admin_port,
                a.incarnation, State.ALIVE,
            )
            self.members[a.name] = m
            self._probe_order.insert(random.randint(0, len(self._probe_order)), a.name)
            self.broadcasts.queue(a.name, ["alive", _alive_row(m)])
            self._changed(m)
            return
        moved = (m.host, m.cluster_port) != (a.host, a.cluster_port)
        if moved and m.state not in _GONE:
            log.warning(
                "event=member_conflict name=%s known=%s:%d claimed=%s:%d state=%s",
                a.name, m.host, m.cluster_port, a.host, a.cluster_port, m.state.name.lower(),
            )
            return
        if a.incarnation <= m.incarnation and not moved:
            return
        self._cancel_suspicion(a.name)
        updated = not _same_identity(a, m)
        old = m.state
        m.incarnation = a.incarnation
        m.region, m.host, m.client_port = a.region, a.host, a.client_port
        m.cluster_port, m.admin_port = a.cluster_port, a.admin_port
        if old != State.ALIVE:
            m.state = State.ALIVE
            m.changed = time.monotonic()
        self.broadcasts.queue(a.name, ["alive", _alive_row(m)])
        if old != State.ALIVE or updated:
            self._changed(m)

    def _on_suspect(self, name: str, incarnation: int, accuser: str) -> None:
        m = self.me if name == self.me.name else self.members.get(name)
        if m is None or incarnation < m.incarnation:
            return
        suspicion = self._suspicions.get(name)
        if suspicion is not None:
            # Another independent accuser: shrink the timeout, and pass the news on.
            if suspicion.confirm(accuser):
                self.broadcasts.queue(name, ["suspect", name, incarnation, accuser])
            return
        if m.state != State.ALIVE:
            return
        if m is self.me:
            self._refute(incarnation)
            return
        self.broadcasts.queue(name, ["suspect", name, incarnation, accuser])
        m.incarnation = incarnation
        m.state = State.SUSPECT
        m.changed = time.monotonic()
        # memberlist: expect suspicion_mult - 2 confirmations, none in a cluster too small.
        n = self.num_nodes()
        k = self.profile.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        min_s = self.profile.suspicion_timeout(n)
        max_s = self.profile.suspicion_max_timeout_mult * min_s
        self._suspicions[name] = Suspicion(
            accuser, k, min_s, max_s, lambda confirmed: self._suspicion_expired(name, confirmed)
        )
        self._changed(m)

    def _suspicion_expired(self, name: str, confirmations: int) -> None:
        m = self.members.get(name)
        suspicion = self._suspicions.get(name)
        if m is None or suspicion is None or m.state != State.SUSPECT or not self._running:
            return
        window = self.awareness.scale(self.profile.probe_interval)
        if self.lag.quiet(window):
            log.info("event=conviction_deferred name=%s reason=loop_stall", name)
            suspicion.postpone(window)
            return
        log.info("event=suspect_timeout name=%s confirmations=%d", name, confirmations)
        self._on_dead(name, m.incarnation, self.me.name, left=False)

    def _on_dead(self, name: str, incarnation: int, accuser: str, left: bool) -> None:
        m = self.me if name == self.me.name else self.members.get(name)
        if m is None or incarnation < m.incarnation:
            return
        self._cancel_suspicion(name)
        if m.state == State.LEFT or (m.state == State.DEAD and not left):
            return
        if m is self.me:
            if not self._leaving:
                self._refute(incarnation)
            return
        update = ["left", name, incarnation] if left else ["dead", name, incarnation, accuser]
        self.broadcasts.queue(name, update)
        m.incarnation = incarnation
        m.state = State.LEFT if left else State.DEAD
        m.changed = time.monotonic()
        self._changed(m)

    def _refute(self, accused: int) -> None:
        me = self.me
        me.incarnation = max(me.incarnation + 1, accused + 1)
        self.awareness.apply(1)  # being accused hints that we are the slow one (Lifeguard)
        self.broadcasts.queue(me.name, ["alive", _alive_row(me)])
        log.info("event=refute name=%s incarnation=%d", me.name, me.incarnation)

    def _merge_state(self, rows: list[Any], peer: Addr | None) -> None:
        """memberlist's mergeState: a peer's dead is only our suspect, until we see it ourselves.

        If the peer's table made us refute, it is the one holding the stale picture: it gets
        our new incarnation at once rather than by gossip, which may not reach a member it
        believes dead.
        """
        incarnation = self.me.incarnation
        for row in rows:
            m = decode_member(row)
            if m is None:
                continue
            if m.state == State.ALIVE:
                self._on_alive(m)
            elif m.state == State.LEFT:
                self._on_dead(m.name, m.incarnation, m.name, left=True)
            else:
                self._on_suspect(m.name, m.incarnation, self.me.name)
        if peer is not None and self.me.incarnation > incarnation:
            self.bus.send_packet(peer, ["gossip", [["alive", _alive_row(self.me)]]])

    def _apply_updates(self, updates: Any) -> None:
        if not isinstance(updates, list):
            return
        for u in updates:
            if not isinstance(u, list) or len(u) < 2:
                continue
            kind = u[0]
            if kind == "alive":
                m = decode_member(u[1])
                if m is not None:
                    self._on_alive(m)
                continue
            if len(u) < 3 or not isinstance(u[1], str) or not _is_int(u[2]):
                continue
            name, incarnation = u[1], u[2]
            if kind == "left":
                self._on_dead(name, incarnation, name, left=True)
            elif len(u) >= 4 and isinstance(u[3], str):
                if kind == "suspect":
                    self._on_suspect(name, incarnation, u[3])
                elif kind == "dead":
                    self._on_dead(name, incarnation, u[3], left=False)

    def _changed(self, m: Member) -> None:
        self._log_state(m)
        self._notify(m)

    def _log_state(self, m: Member) -> None:
        log.info(
            "event=member_state name=%s state=%s incarnation=%d region=%s addr=%s:%d",
            m.name, m.state.name.lower(), m.incarnation, m.region, m.host, m.cluster_port,
        )

    def _notify(self, m: Member) -> None:
        for listener in list(self.listeners):
            try:
                listener(m)
            except Exception:
                log.exception("event=listener_failed name=%s", m.name)

    def _cancel_suspicion(self, name: str) -> None:
        suspicion = self._suspicions.pop(name, None)
        if suspicion is not None:
            suspicion.cancel()

    # -- UDP messages ----------------------------------------------------------------------------

    def _on_ping(self, msg: list[Any], addr: Addr) -> None:
        if not self._running or len(msg) < 5:
            return
        _, seq, target, sender, updates = msg[:5]
        self._apply_updates(updates)  # first, so a refutation rides on this very ack
        if target == self.me.name and _is_int(seq):
            self.bus.send_packet(addr, ["ack", seq, self._piggyback(sender)])

    def _on_pingreq(self, msg: list[Any], addr: Addr) -> None:
        if not self._running or len(msg) < 8:
            return
        _, seq, target, host, port, want_nack, sender, updates = msg[:8]
        self._apply_updates(updates)
        if not (_is_int(seq) and _is_port(port) and isinstance(target, str)
                and isinstance(host, str)):
            return
        answered = False

        def forward_ack() -> None:
            nonlocal answered
            answered = True
            self.bus.send_packet(addr, ["ack", seq, self._piggyback(sender)])

        def nack_if_silent() -> None:
            self._timers.discard(handle)
            if not answered and self._running:
                self.bus.send_packet(addr, ["nack", seq, self._piggyback(sender)])

        own_seq = next(self._seq)
        interval = self.awareness.scale(self.profile.probe_interval)
        self._expect(own_seq, _Pending(forward_ack), interval)
        piggyback = self._piggyback(target)
        self.bus.send_packet((host, port), ["ping", own_seq, target, self.me.name, piggyback])
        if want_nack:
            loop = asyncio.get_running_loop()
            # Lifeguard: nack at 80% of the probe timeout, so it reaches the requester before
            # its own deadline and tells it that the silence is not its fault.
            handle = loop.call_later(0.8 * self.profile.probe_timeout, nack_if_silent)
            self._timers.add(handle)

    def _on_ack(self, msg: list[Any], addr: Addr) -> None:
        if not self._running or len(msg) < 3:
            return
        self._apply_updates(msg[2])
        seq = msg[1]
        pending = self._pending.pop(seq, None) if _is_int(seq) else None
        if pending is not None:
            if pending.reaper is not None:
                pending.reaper.cancel()
            pending.on_ack()

    def _on_nack(self, msg: list[Any], addr: Addr) -> None:
        if not self._running or len(msg) < 3:
            return
        self._apply_updates(msg[2])
        pending = self._pending.get(msg[1]) if _is_int(msg[1]) else None
        if pending is not None and pending.on_nack is not None:
            pending.on_nack()

    def _on_gossip(self, msg: list[Any], addr: Addr) -> None:
        if self._running and len(msg) >= 2:
            self._apply_updates(msg[1])

    def _piggyback(self, recipient: Any) -> list[list[Any]]:
        """Queued updates for a packet to ``recipient``, minus news of its own liveness.

        Telling a member that it is alive spends one of the update's few transmissions on the one
        member sure to know it already; accusations still go, so that it can refute them. A
        member this node holds suspect or dead gets the news without spending it: it is the least
        likely to pass it on, and an accusation's few transmissions (two in a small cluster) must
        reach the live members whose own accusations would confirm it, not the probes of the
        accused and gossip rounds that happened to pick it first.
        """
        if not isinstance(recipient, str):
            return self.broadcasts.take(UDP_BUDGET)
        m = self.members.get(recipient)
        return self.broadcasts.take(
            UDP_BUDGET,
            skip=lambda name, msg: name == recipient and msg[0] == "alive",
            spend=m is None or m.state == State.ALIVE,
        )

    def _expect(self, seq: int, pending: _Pending, timeout: float) -> None:
        pending.reaper = asyncio.get_running_loop().call_later(timeout, self._unexpect, seq)
        self._pending[seq] = pending

    def _unexpect(self, seq: int) -> None:
        pending = self._pending.pop(seq, None)
        if pending is not None and pending.reaper is not None:
            pending.reaper.cancel()

    # -- TCP push-pull ---------------------------------------------------------------------------

    def _local_state(self) -> list[Any]:
        return [self.me.encode(), *(m.encode() for m in self.members.values())]

    async def _push_pull(self, addr: Addr) -> None:
        timeout = self.profile.tcp_timeout
        hello = ["pushpull", self._local_state()]
        reader, writer = await self.bus.open_stream(addr, hello, timeout)
        try:
            reply = await asyncio.wait_for(read_frame(reader), timeout)
        except (asyncio.IncompleteReadError, FrameError, ValueError) as e:
            raise ConnectionError(f"push-pull with {addr[0]}:{addr[1]} failed: {e!r}") from e
        finally:
            writer.close()
        if len(reply) < 2 or reply[0] != "pushpull" or not isinstance(reply[1], list):
            raise ConnectionError(f"push-pull with {addr[0]}:{addr[1]}: unexpected reply")
        self._merge_state(reply[1], addr)

    async def _serve_push_pull(
        self, hello: list[Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if not self._running or len(hello) < 2 or not isinstance(hello[1], list):
            return
        write_frame(writer, ["pushpull", self._local_state()])
        await writer.drain()
        peer = decode_member(hello[1][0]) if hello[1] else None
        self._merge_state(hello[1], peer.cluster_addr if peer is not None else None)

    # -- background loops ------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"membership-{what}"))

    async def _probe_loop(self) -> None:
        await asyncio.sleep(random.random() * self.profile.probe_interval)  # do not march in step
        while True:
            started = time.monotonic()
            self._reap(started)
            target = None if self._leaving else self._next_probe_target()
            if target is not None:
                try:
                    await self.probe(target)
                except Exception:
                    log.exception("event=probe_error name=%s", target)
            interval = self.awareness.scale(self.profile.probe_interval)
            await asyncio.sleep(max(0.0, started + interval - time.monotonic()))

    def _next_probe_target(self) -> str | None:
        """The next live member in a shuffled round-robin order, reshuffled at each wrap."""
        for _ in range(2 * len(self.members) + 2):
            if self._probe_index >= len(self._probe_order):
                self._probe_order = list(self.members)
                random.shuffle(self._probe_order)
                self._probe_index = 0
                if not self._probe_order:
                    return None
            name = self._probe_order[self._probe_index]
            self._probe_index += 1
            m = self.members.get(name)
            if m is not None and m.state not in _GONE:
                return name
        return None

    async def _gossip_loop(self) -> None:
        while True:
            await asyncio.sleep(self.profile.gossip_interval)
            self._gossip()

    def _gossip(self) -> None:
        """Send queued updates to a few members; recently dead ones too, so they may refute."""
        now = time.monotonic()
        dead_window = self.profile.push_pull_interval  # memberlist's GossipToTheDeadTime
        targets = self._random_members(
            self.profile.gossip_nodes,
            lambda m: m.state in (State.ALIVE, State.SUSPECT)
            or (m.state == State.DEAD and now - m.changed < dead_window),
        )
        for m in targets:
            updates = self._piggyback(m.name)
            if not updates:
                return
            self.bus.send_packet(m.cluster_addr, ["gossip", updates])

    async def _push_pull_loop(self) -> None:
        interval = self.profile.push_pull_interval
        await asyncio.sleep(random.random() * interval)
        while True:
            await self._push_pull_round()
            await asyncio.sleep(push_pull_scale(interval, self.num_nodes()))

    async def _push_pull_round(self) -> None:
        if self._leaving:
            return
        alive = self._random_members(1, lambda m: m.state == State.ALIVE)
        addrs = [alive[0].cluster_addr] if alive else list(self.seeds)
        for addr in addrs:
            try:
                await self._push_pull(addr)
                break
            except (OSError, TimeoutError) as e:
                log.info("event=push_pull_failed peer=%s:%d error=%r", addr[0], addr[1], e)
        # Reconnect: a member declared dead by mistake (a partition, a stall) is found again.
        dead = self._random_members(1, lambda m: m.state == State.DEAD)
        if dead:
            with contextlib.suppress(OSError, TimeoutError):
                await self._push_pull(dead[0].cluster_addr)

    def _reap(self, now: float) -> None:
        for name, m in list(self.members.items()):
            if m.state in _GONE and now - m.changed > self.profile.dead_reap_after:
                del self.members[name]
                self._cancel_suspicion(name)
                self.broadcasts.drop(name)
                log.info("event=member_reaped name=%s state=%s", name, m.state.name.lower())
                self._notify(m)
        for name, until in list(self._banned.items()):
            if until <= now:
                del self._banned[name]

    def _random_members(self, k: int, keep: Callable[[Member], bool]) -> list[Member]:
        candidates = [m for m in self.members.values() if keep(m)]
        return random.sample(candidates, min(k, len(candidates)))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_port(x: Any) -> bool:
    return _is_int(x) and 0 < x <= 65535


async def _settled(fut: asyncio.Future[None], timeout: float) -> bool:
    """Whether ``fut`` is done within ``timeout`` seconds; the future itself is left alone."""
    if not fut.done() and timeout > 0:
        await asyncio.wait({fut}, timeout=timeout)
    return fut.done()
