"""SWIM membership with Lifeguard: real UDP and TCP on 127.0.0.1, several nodes in one event loop.

Nodes run the local profile or a variant of it. Every wait is a condition polled until a deadline;
the deadlines are generous bounds derived from the profile, never the measured quantity.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack
import pytest

from gossipkv.cluster.awareness import Awareness
from gossipkv.cluster.broadcasts import BroadcastQueue
from gossipkv.cluster.bus import ClusterBus
from gossipkv.cluster.lag import LagMonitor
from gossipkv.cluster.member import Member, State
from gossipkv.cluster.membership import Membership, decode_member, push_pull_scale
from gossipkv.cluster.profile import LAN, LOCAL, Profile
from gossipkv.cluster.suspicion import Suspicion, remaining_time

HOST = "127.0.0.1"
# A killed member is suspected within a few probe rounds and convicted after at most the longest
# suspicion timeout; this is a deadline to wait on, with room for a loaded machine.
DEAD_BOUND = (
    4 * LOCAL.probe_interval + LOCAL.suspicion_max_timeout_mult * LOCAL.suspicion_timeout(3)
)


async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Node:
    bus: ClusterBus
    ms: Membership
    seen: list[tuple[str, State]] = field(default_factory=list)  # every listener call, in order

    @property
    def name(self) -> str:
        return self.ms.me.name

    @property
    def addr(self) -> tuple[str, int]:
        return (HOST, self.bus.port)

    def state_of(self, name: str) -> State | None:
        m = self.ms.members.get(name)
        return None if m is None else m.state

    def history(self, name: str) -> list[State]:
        return [state for who, state in self.seen if who == name]


class Cluster:
    def __init__(self) -> None:
        self.nodes: list[Node] = []

    async def node(
        self,
        name: str,
        profile: Profile = LOCAL,
        port: int = 0,
        incarnation: int = 0,
        start: bool = True,
    ) -> Node:
        bus = ClusterBus(HOST, port)
        await bus.start()
        me = Member(name, f"region-{name}", HOST, 7000 + len(self.nodes), bus.port, 0, incarnation)
        ms = Membership(bus, me, profile)
        node = Node(bus, ms)
        ms.listeners.append(lambda m: node.seen.append((m.name, m.state)))
        if start:
            await ms.start()
        self.nodes.append(node)
        return node

    async def kill(self, node: Node) -> None:
        """Silence a node at once, as a crash would: no leave announcement."""
        await node.ms.stop()
        await node.bus.stop()
        self.nodes.remove(node)

    async def close(self) -> None:
        for node in self.nodes:
            await node.ms.stop()
            await node.bus.stop()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        await c.close()


async def three(cluster: Cluster) -> tuple[Node, Node, Node]:
    a = await cluster.node("a")
    b = await cluster.node("b")
    c = await cluster.node("c")
    await b.ms.join(a.addr)
    await c.ms.join(a.addr)
    await until(lambda: all_alive(a, b, c), 10, "every node to see the other two alive")
    return a, b, c


def all_alive(*nodes: Node) -> bool:
    return all(
        x.state_of(y.name) == State.ALIVE for x in nodes for y in nodes if x is not y
    )


# -- the protocol on real sockets ---------------------------------------------------------------


async def test_three_nodes_join_through_one_seed_and_see_each_other(cluster: Cluster) -> None:
    a, b, c = await three(cluster)
    # b and c never talked to each other directly at join: gossip introduced them.
    seen_by_b = b.ms.members["c"]
    assert (seen_by_b.region, seen_by_b.client_port, seen_by_b.cluster_port) == (
        "region-c", c.ms.me.client_port, c.bus.port,
    )
    assert a.history("b")[0] == State.ALIVE
    assert all(n.ms.me.state == State.ALIVE for n in (a, b, c))


async def test_join_fails_cleanly_when_no_seed_answers(cluster: Cluster) -> None:
    a = await cluster.node("a")
    with socket.socket() as s:
        s.bind((HOST, 0))
        nobody = (HOST, s.getsockname()[1])  # bound but not listening: connection refused
        with pytest.raises(OSError):
            await a.ms.join(nobody)
    assert a.ms.members == {}


@pytest.mark.parametrize("incarnation", [0, 100], ids=["fresh", "higher-incarnation"])
async def test_killed_node_is_suspected_then_dead_and_a_restart_is_alive_again(
    cluster: Cluster, incarnation: int
) -> None:
    a, b, c = await three(cluster)
    port = c.bus.port
    await cluster.kill(c)
    await until(
        lambda: a.state_of("c") == State.DEAD and b.state_of("c") == State.DEAD,
        DEAD_BOUND, "a and b to declare c dead",
    )
    for node in (a, b):
        history = node.history("c")
        assert State.SUSPECT in history  # suspected before convicted, never straight to dead
        assert history.index(State.SUSPECT) < history.index(State.DEAD)

    c2 = await cluster.node("c", port=port, incarnation=incarnation)
    await c2.ms.join(a.addr)
    await until(lambda: all_alive(a, b, c2), 10, "the restarted c to be alive everywhere")
    # Its old life was declared dead: the new one had to outbid that incarnation.
    assert c2.ms.me.incarnation > 0
    await until(
        lambda: a.ms.members["c"].incarnation == b.ms.members["c"].incarnation
        == c2.ms.me.incarnation,
        10, "everyone to agree on c's incarnation",
    )


async def test_leave_is_seen_as_left_not_dead(cluster: Cluster) -> None:
    a, b, c = await three(cluster)
    await c.ms.leave(timeout=5)
    await until(
        lambda: a.state_of("c") == State.LEFT and b.state_of("c") == State.LEFT,
        5, "a and b to see c left",
    )
    assert State.DEAD not in a.history("c") + b.history("c")
    assert c.ms.me.state == State.LEFT
    # A departed member is never probed again.
    await cluster.kill(c)
    assert await a.ms.probe("c") == "skipped"
    assert a.state_of("c") == State.LEFT


async def test_suspected_but_alive_node_refutes(cluster: Cluster) -> None:
    a, b, c = await three(cluster)
    before = c.ms.me.incarnation
    deaf = True
    # c stops hearing pings (direct and indirect alike) but still hears gossip.
    c.bus.allow = lambda kind, addr, direction: not (deaf and kind == "ping" and direction == "in")
    await until(
        lambda: State.SUSPECT in a.history("c") + b.history("c"),
        DEAD_BOUND, "c to be suspected",
    )
    deaf = False
    await until(
        lambda: all_alive(a, b, c)
        and a.ms.members["c"].incarnation == b.ms.members["c"].incarnation
        == c.ms.me.incarnation,
        DEAD_BOUND, "c's refutation to reach everyone",
    )
    assert c.ms.me.incarnation > before
    assert State.DEAD not in a.history("c") + b.history("c")


async def test_ping_to_a_suspect_carries_the_suspicion(cluster: Cluster) -> None:
    """The buddy system, seen from the suspect's side of a real socket."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    a = await cluster.node("a")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.setblocking(False)
        x = Member("x", "region-x", HOST, 7999, sock.getsockname()[1])

        def send(msg: Any) -> None:
            sock.sendto(msgpack.packb(msg, use_bin_type=True), a.addr)

        # Garbage first: a peer is not trusted to speak the protocol.
        sock.sendto(b"\xc1\x00", a.addr)
        junk: list[Any]
        for junk in (
            ["ping"], ["ping", "seq", 5, None, None], ["ack", [1], []], ["nack", {}, None],
            ["pingreq", 1, "a", HOST, "port", True, "x", []], ["gossip", "not a list"],
            ["gossip", [["alive", [1, 2]], ["suspect", 5], ["dead", "x", "1", "a"], "junk"]],
            ["gossip", [["alive", ["x", "r", HOST, 1, 2, 3, 4, 99]]]],
            ["gossip", [["alive", ["y", "r", HOST, 1, 70000, 3, 4, 0]]]],
            ["pingreq", 2, "a", HOST, 70000, True, "x", []],
        ):
            send(junk)
        send(["gossip", [["alive", x.encode()]]])
        await until(lambda: a.state_of("x") == State.ALIVE, 5, "a to learn of x")
        # x never answers, so a suspects it; its next pings must carry the accusation.
        await until(lambda: a.state_of("x") == State.SUSPECT, 10, "a to suspect x")
        deadline = time.monotonic() + 10
        while True:
            timeout = deadline - time.monotonic()
            assert timeout > 0, "no ping carrying the suspicion arrived"
            data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 65536), timeout)
            msg = msgpack.unpackb(data, raw=False)
            if msg[0] == "ping" and msg[4] and msg[4][0] == ["suspect", "x", 0, "a"]:
                break
        # Refute on the ack of that very ping.
        refuted = Member("x", "region-x", HOST, 7999, x.cluster_port, 0, 1)
        send(["ack", msg[1], [["alive", refuted.encode()]]])
        await until(lambda: a.state_of("x") == State.ALIVE, 5, "a to accept x's refutation")
        assert a.ms.members["x"].incarnation == 1
    assert errors == []


async def test_each_survivor_of_a_crash_counts_the_others_accusation(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Lifeguard's confirmation, even when packets to the accused come first.

    In a cluster of three an accusation rides on two messages. Without peers to ask
    (indirect_checks=0) a probe of the suspect is a packet to it alone, as is a gossip round that
    picks it first; however many of those go out, the accusation must still reach the other
    survivor, and that one's accusation must come back, so both convict with one confirmation.
    """
    caplog.set_level(logging.INFO, logger="gossipkv.cluster.membership")
    alone = replace(LOCAL, name="test", indirect_checks=0, awareness_max_multiplier=1)
    # No background loops: only the packets the test drives leave a node.
    a = await cluster.node("a", profile=alone, start=False)
    b = await cluster.node("b", profile=alone, start=False)
    c = await cluster.node("c", profile=alone, start=False)
    await b.ms.join(a.addr)
    await c.ms.join(a.addr)
    await until(lambda: all_alive(a, b, c), 5, "every node to see the other two alive")
    await cluster.kill(c)

    assert await a.ms.probe("c") == "suspect"
    for _ in range(alone.retransmit_limit(3)):  # as many packets to c as the news has sends
        assert await a.ms.probe("c") == "suspect"
    assert b.state_of("c") == State.ALIVE  # nothing has gone to b yet
    assert await a.ms.probe("b") == "ack"
    assert b.state_of("c") == State.SUSPECT  # the ping carried a's accusation
    assert await b.ms.probe("c") == "suspect"  # b's own accusation confirms a's ...
    assert await b.ms.probe("a") == "ack"  # ... and goes to a, confirming a's suspicion

    await until(
        lambda: a.state_of("c") == State.DEAD and b.state_of("c") == State.DEAD,
        DEAD_BOUND, "a and b to convict c",
    )
    convictions = [
        r.getMessage() for r in caplog.records if "event=suspect_timeout name=c" in r.getMessage()
    ]
    assert convictions == ["event=suspect_timeout name=c confirmations=1"] * 2


async def test_forget_drops_a_member_and_stale_news_does_not_bring_it_back(
    cluster: Cluster,
) -> None:
    a, b, _ = await three(cluster)
    assert a.ms.forget("c") is True
    assert "c" not in a.ms.members
    assert a.seen[-1] == ("c", State.LEFT)
    await a.ms.join(b.addr)  # a full table from b, which still holds c alive
    assert "c" not in a.ms.members
    assert a.ms.forget("c") is False
    assert a.ms.forget("nobody") is False
    assert b.state_of("c") == State.ALIVE  # forgetting is local to a


async def test_a_partition_heals_by_itself_after_both_sides_convicted(cluster: Cluster) -> None:
    """Push-pull keeps trying dead members and seeds, so a false conviction is undone."""
    healing = replace(LOCAL, name="test", push_pull_interval=0.5)
    a = await cluster.node("a", profile=healing)
    c = await cluster.node("c", profile=healing)
    await c.ms.join(a.addr)
    await until(lambda: all_alive(a, c), 5, "a and c to see each other")
    cut = True
    c.bus.allow = lambda kind, addr, direction: not cut
    await until(
        lambda: a.state_of("c") == State.DEAD and c.state_of("a") == State.DEAD,
        DEAD_BOUND, "each side to convict the other",
    )
    cut = False
    await until(lambda: all_alive(a, c), 10, "the partition to heal")
    assert a.ms.members["c"].incarnation == c.ms.me.incarnation > 0
    assert c.ms.members["a"].incarnation == a.ms.me.incarnation > 0


async def test_dead_and_left_members_are_reaped(cluster: Cluster) -> None:
    quick = replace(LOCAL, name="test", dead_reap_after=0.3)
    a = await cluster.node("a", profile=quick)
    b = await cluster.node("b", profile=quick)
    await b.ms.join(a.addr)
    await until(lambda: a.state_of("b") == State.ALIVE, 5, "a to see b")
    await b.ms.leave(timeout=5)
    await until(lambda: "b" not in a.ms.members, 10, "a to reap b")
    # The listener heard of the reaping, with the last state kept.
    assert a.seen[-1] == ("b", State.LEFT)
    assert a.history("b").count(State.LEFT) == 2


async def test_lifeguard_health_rises_only_when_no_peer_can_vouch(cluster: Cluster) -> None:
    # A probe interval long past the probe timeout leaves a nack plenty of time to arrive.
    roomy = replace(LOCAL, name="test", probe_interval=1.0)
    a = await cluster.node("a", profile=roomy, start=False)
    b = await cluster.node("b", profile=roomy, start=False)
    c = await cluster.node("c", profile=roomy, start=False)
    await b.ms.join(a.addr)
    await c.ms.join(a.addr)
    assert set(a.ms.members) == {"b", "c"}
    c.bus.allow = lambda kind, addr, direction: not (kind == "ping" and direction == "in")

    # b cannot reach c either, and says so with a nack: c is the problem, not a.
    assert await a.ms.probe("c") == "suspect"
    assert a.ms.health == 0
    # Now b stays silent too: a cannot tell whether the trouble is its own, so it slows down.
    b.bus.allow = lambda kind, addr, direction: not (kind == "pingreq" and direction == "in")
    assert await a.ms.probe("c") == "suspect"
    assert a.ms.health == 1
    # A successful probe earns the health back.
    assert await a.ms.probe("b") == "ack"
    assert a.ms.health == 0


# -- the local stall rule: a frozen node convicts no one on evidence gathered while frozen ------


async def test_probe_spanning_a_stall_starts_no_suspicion(cluster: Cluster) -> None:
    # No background loops: the test drives each probe itself.
    a = await cluster.node("a", start=False)
    b = await cluster.node("b", start=False)
    await b.ms.join(a.addr)
    assert await a.ms.probe("b") == "ack"
    await cluster.kill(b)  # b no longer answers

    probe = asyncio.create_task(a.ms.probe("b"))
    await asyncio.sleep(0)  # the ping is out; now the loop "stalls"
    a.ms.lag.record(2 * LOCAL.stall_grace)
    assert await probe == "abandoned"
    assert a.state_of("b") == State.ALIVE
    assert a.ms.health == 0

    # The same silence without a stall is a failed probe.
    assert await a.ms.probe("b") == "suspect"
    assert a.state_of("b") == State.SUSPECT


async def test_no_conviction_while_recovering_from_a_stall(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gossipkv.cluster.membership")
    # The suspicion timeout is one (short) probe interval.
    fast = replace(LOCAL, name="test", probe_interval=0.2, probe_timeout=0.1, suspicion_mult=1)
    a = await cluster.node("a", profile=fast, start=False)
    b = await cluster.node("b", profile=fast, start=False)
    await b.ms.join(a.addr)
    await cluster.kill(b)
    assert await a.ms.probe("b") == "suspect"

    stalling = True

    async def keep_stalling() -> None:
        while stalling:
            a.ms.lag.record(2 * fast.stall_grace)
            await asyncio.sleep(0.02)

    def deferrals() -> int:
        return sum("event=conviction_deferred name=b" in r.getMessage() for r in caplog.records)

    feeder = asyncio.create_task(keep_stalling())
    try:
        # The suspicion times out again and again while the loop keeps reporting stalls.
        await until(lambda: deferrals() >= 3, 10, "the conviction to be deferred three times")
        assert a.state_of("b") == State.SUSPECT
    finally:
        stalling = False
        await feeder
    await until(lambda: a.state_of("b") == State.DEAD, 10, "the deferred conviction")


def test_lag_monitor_marks_stalls_and_the_quiet_window_after_them() -> None:
    lag = LagMonitor(grace=0.5)
    lag.record(0.2, now=10.0)  # late, but within grace: no stall
    assert not lag.stalled_since(9.0, now=10.1)
    lag.record(2.0, now=100.0)
    assert lag.stall_start == 98.0
    assert lag.stalled_since(99.0, now=100.5)  # a probe sent at 99 spanned the stall
    assert not lag.stalled_since(100.2, now=100.5)  # one sent afterwards did not
    assert lag.quiet(1.0, now=100.5)
    assert not lag.quiet(1.0, now=101.5)


# -- the pieces, as units -----------------------------------------------------------------------


def test_broadcast_queue_sends_newest_and_least_transmitted_first() -> None:
    q = BroadcastQueue(lambda: 2)
    for name in ("a", "b", "c"):
        q.queue(name, ["alive", name])
    assert q.take(10_000) == [["alive", "c"], ["alive", "b"], ["alive", "a"]]
    q.queue("d", ["alive", "d"])
    assert q.pending() == [("d", 0), ("c", 1), ("b", 1), ("a", 1)]
    assert q.take(10_000) == [["alive", "d"], ["alive", "c"], ["alive", "b"], ["alive", "a"]]
    # a, b and c reached the limit of two transmissions and are gone.
    assert q.pending() == [("d", 1)]
    assert q.take(10_000) == [["alive", "d"]]
    assert q.take(10_000) == []


def test_broadcast_queue_limit_follows_cluster_size_and_news_replaces_old_news() -> None:
    nodes = 3
    q = BroadcastQueue(lambda: LOCAL.retransmit_limit(nodes))
    done: list[str] = []
    q.queue("x", ["suspect", "x", 0, "a"], on_done=lambda: done.append("suspect"))
    q.queue("x", ["dead", "x", 0, "a"], on_done=lambda: done.append("dead"))
    assert done == ["suspect"]  # replaced before it was ever sent
    nodes = 100  # limit grows with log(n): 2 * ceil(log10(101)) = 6
    sent = 0
    while q.take(10_000):
        sent += 1
    assert sent == LOCAL.retransmit_limit(100) == 6
    assert done == ["suspect", "dead"]
    assert LOCAL.retransmit_limit(3) == 2
    assert LAN.retransmit_limit(3) == 4


def test_broadcast_queue_fills_the_budget_with_what_fits() -> None:
    q = BroadcastQueue(lambda: 5)
    q.queue("big", ["alive", "x" * 500])
    q.queue("small", ["alive", "y"])
    taken = q.take(100)
    assert taken == [["alive", "y"]]  # the big one does not fit and waits its turn
    assert q.pending()[0] == ("big", 0)


def test_broadcast_queue_skips_what_is_no_news_to_the_recipient() -> None:
    q = BroadcastQueue(lambda: 1)
    q.queue("x", ["alive", "x"])
    q.queue("y", ["suspect", "y"])
    to_x = q.take(10_000, skip=lambda name, msg: name == "x" and msg[0] == "alive")
    assert to_x == [["suspect", "y"]]  # x's own liveness is kept for someone else
    assert q.pending() == [("x", 0)]


def test_broadcast_queue_spends_nothing_on_a_recipient_unlikely_to_pass_it_on() -> None:
    q = BroadcastQueue(lambda: 1)
    q.queue("x", ["suspect", "x", 0, "a"])
    for _ in range(3):
        assert q.take(10_000, spend=False) == [["suspect", "x", 0, "a"]]
    assert q.pending() == [("x", 0)]
    assert q.take(10_000) == [["suspect", "x", 0, "a"]]
    assert q.pending() == []


def test_awareness_is_bounded_and_scales_timeouts() -> None:
    aw = Awareness(max_multiplier=8)
    aw.apply(-3)
    assert aw.score == 0
    assert aw.scale(0.5) == 0.5
    aw.apply(3)
    assert aw.scale(0.5) == 2.0
    aw.apply(100)
    assert aw.score == 7
    assert aw.scale(1.0) == 8.0


def test_suspicion_timeout_shrinks_with_confirmations() -> None:
    # memberlist's table: k = 3 confirmations take max 30 s down to min 2 s.
    assert remaining_time(0, 3, 0.0, 2.0, 30.0) == 30.0
    assert remaining_time(1, 3, 0.0, 2.0, 30.0) == pytest.approx(16.0)
    assert remaining_time(2, 3, 0.0, 2.0, 30.0) == pytest.approx(7.8104, abs=1e-3)
    assert remaining_time(3, 3, 0.0, 2.0, 30.0) == 2.0
    assert remaining_time(4, 3, 0.0, 2.0, 30.0) == 2.0
    assert remaining_time(3, 3, 5.0, 2.0, 30.0) == -3.0  # overdue: fire at once
    assert remaining_time(0, 0, 1.0, 2.0, 30.0) == 1.0  # nobody to confirm: min from the start


async def test_suspicion_counts_each_accuser_once_and_fires_when_confirmed() -> None:
    fired: list[int] = []
    s = Suspicion("a", k=2, min_s=0.05, max_s=60.0, on_timeout=fired.append)
    try:
        assert s.confirm("a") is False  # the first accuser never counts twice
        assert s.confirm("b") is True
        assert s.confirm("b") is False
        assert s.confirm("c") is True
        assert s.confirm("d") is False  # k reached: nothing more to learn
        await until(lambda: fired == [2], 10, "the confirmed suspicion to fire")
    finally:
        s.cancel()


def test_member_rows_from_peers_are_validated() -> None:
    m = Member("n", "eu", HOST, 6379, 16379, 8080, 3, State.SUSPECT)
    decoded = decode_member(m.encode())
    assert decoded is not None and decoded.encode() == m.encode()
    assert decode_member([*m.encode(), "a later field"]) is not None
    for bad in (None, [], ["n"], [1, "eu", HOST, 1, 2, 3, 4, 0], ["n", "eu", HOST, 1, 2, 3, 4, 9],
                ["", "eu", HOST, 1, 2, 3, 4, 0], ["n", "eu", HOST, True, 2, 3, 4, 0]):
        assert decode_member(bad) is None


def test_push_pull_slows_down_only_in_large_clusters() -> None:
    assert push_pull_scale(30.0, 32) == 30.0
    assert push_pull_scale(30.0, 33) == 60.0
    assert push_pull_scale(30.0, 64) == 60.0
    assert push_pull_scale(30.0, 65) == 90.0
