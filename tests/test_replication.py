"""Delta replication between nodes in one event loop, over real TCP on loopback.

Each node has its own keyspace, command server and cluster bus; clients are Sessions running
real commands. Peers are linked by hand (membership does that in a running cluster).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import pytest

import gossipkv.commands.all  # noqa: F401  (registers every command)
from gossipkv.cluster.bus import ClusterBus
from gossipkv.cluster.frames import pack, read_frame
from gossipkv.cluster.outbox import Outbox
from gossipkv.cluster.replication import SNAPSHOT, STREAMING, Replication
from gossipkv.commands.replies import Reply
from gossipkv.commands.session import Server, Session
from gossipkv.crdt.hlc import HLC
from gossipkv.store.entry import Entry
from gossipkv.store.keyspace import Keyspace
from tests.servers import free_port


class Node:
    def __init__(self, name: str, port: int = 0, **backlog: int) -> None:
        self.name = name
        self.keyspace = Keyspace(name, HLC())
        self.session = Session(Server(self.keyspace))
        self.bus = ClusterBus("127.0.0.1", port)
        self.repl = Replication(self.bus, self.keyspace, name, **backlog)

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.bus.port)

    async def start(self) -> Node:
        await self.bus.start()
        await self.repl.start()
        return self

    async def stop(self) -> None:
        await self.repl.stop()
        await self.bus.stop()

    def run(self, *argv: str | bytes | int) -> Reply:
        return self.session.execute([a if isinstance(a, bytes) else str(a).encode() for a in argv])

    def incrby(self, key: str, by: int) -> None:
        assert isinstance(self.run("INCRBY", key, by), int)

    def state(self) -> dict[bytes, Any]:
        """Every key's full CRDT state, removals included: equal on converged replicas."""
        ks = self.keyspace
        out = {k: e.encode() for k, e in ks.live.items()}
        out.update((k, e.encode()) for k, e in ks.tombstones.items())
        return out

    def peer(self, name: str) -> dict[str, Any]:
        return next(row for row in self.repl.peers() if row["name"] == name)


def link(*nodes: Node) -> None:
    for a in nodes:
        for b in nodes:
            if a is not b:
                a.repl.connect(b.name, b.addr)


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``cond`` on the loop until it holds; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def converged(*nodes: Node, timeout: float = 10.0) -> None:
    first = nodes[0]
    await until(
        lambda: all(n.state() == first.state() for n in nodes[1:]),
        "the replicas to converge",
        timeout,
    )


def caught_up(node: Node, *peers: Node) -> Callable[[], bool]:
    return lambda: all(node.peer(p.name)["acked_seq"] == node.repl.seq for p in peers)


@pytest.fixture
async def nodes() -> AsyncIterator[list[Node]]:
    """Started nodes are collected here and stopped after the test."""
    started: list[Node] = []
    yield started
    for n in started:
        await n.stop()


async def start(pool: list[Node], name: str, port: int = 0, **backlog: int) -> Node:
    node = await Node(name, port, **backlog).start()
    pool.append(node)
    return node


# -- streaming ---------------------------------------------------------------------------------


async def test_writes_on_one_node_appear_on_the_other(nodes: list[Node]) -> None:
    a = await start(nodes, "a")
    b = await start(nodes, "b")
    link(a, b)
    assert a.run("SET", "k", "from-a") == b"OK"
    await until(lambda: b.run("GET", "k") == b"from-a", "b to read a's write")
    assert b.run("SET", "j", "from-b") == b"OK"
    await until(lambda: a.run("GET", "j") == b"from-b", "a to read b's write")
    await until(caught_up(a, b), "b's ack of a's writes")
    row = a.peer("b")
    assert row["state"] == STREAMING
    assert row["lag_ops"] == 0 and row["lag_ms"] == 0.0
    assert row["sent_bytes"] > 0 and row["received_bytes"] > 0
    assert row["applied_seq"] == b.repl.seq == 1


async def test_concurrent_increments_converge_to_their_sum(nodes: list[Node]) -> None:
    a = await start(nodes, "a")
    b = await start(nodes, "b")
    c = await start(nodes, "c")
    link(a, b, c)
    expected = 0

    async def client(node: Node, seed: int) -> None:
        nonlocal expected
        rng = random.Random(seed)
        for _ in range(300):
            by = rng.randint(-5, 20)
            node.incrby("counter", by)
            expected += by
            if rng.random() < 0.3:
                await asyncio.sleep(0)

    await asyncio.gather(client(a, 1), client(b, 2), client(c, 3))
    await converged(a, b, c)
    for n in (a, b, c):
        assert n.run("GET", "counter") == str(expected).encode()


async def test_del_and_expire_replicate(nodes: list[Node]) -> None:
    a = await start(nodes, "a")
    b = await start(nodes, "b")
    link(a, b)
    for i in range(10):
        a.run("SET", f"k{i}", i)
    await converged(a, b)
    assert b.run("DEL", "k1", "k2") == 2
    assert b.run("EXPIRE", "k3", 1000) == 1
    assert a.run("PEXPIRE", "k4", 50) == 1
    await converged(a, b)
    assert a.run("EXISTS", "k1", "k2") == 0
    ttl = a.run("TTL", "k3")
    assert isinstance(ttl, int) and 990 <= ttl <= 1000
    assert b.run("PTTL", "k4") != -1
    # The deadline is absolute: past it, both nodes hide the key.
    await until(lambda: b.run("EXISTS", "k4") == 0 and a.run("EXISTS", "k4") == 0, "k4 expiry")
    await converged(a, b)
    assert sorted(b.run("KEYS", "*")) == [b"k0", b"k3", b"k5", b"k6", b"k7", b"k8", b"k9"]


async def test_three_nodes_writing_the_same_keys_converge(nodes: list[Node]) -> None:
    trio = [await start(nodes, name) for name in ("a", "b", "c")]
    link(*trio)
    keys = [f"key{i}" for i in range(8)]

    async def client(node: Node, seed: int) -> None:
        rng = random.Random(seed)
        for i in range(400):
            key = rng.choice(keys)
            op = rng.random()
            if op < 0.4:
                node.run("SET", key, i)
            elif op < 0.6:
                node.incrby(key, rng.randint(1, 9))
            elif op < 0.75:
                node.run("DEL", key)
            elif op < 0.9:
                node.run("EXPIRE", key, rng.randint(100, 1000))
            else:
                node.run("PERSIST", key)
            if rng.random() < 0.2:
                await asyncio.sleep(0)

    await asyncio.gather(*(client(n, seed) for seed, n in enumerate(trio)))
    await converged(*trio)
    reads = [[n.run("GET", k) for k in keys] for n in trio]
    assert reads[0] == reads[1] == reads[2]
    assert any(v is not None for v in reads[0])


async def test_the_receiver_skips_repeats_and_refuses_gaps(nodes: list[Node]) -> None:
    """The wire protocol from a hand-written sender: the cursor moves only through
    contiguous operations, and a new stream of the same run resumes from it."""
    b = await start(nodes, "b")

    def op(seq: int, key: bytes, value: bytes) -> list[Any]:
        return [seq, key, Entry(seq, "x", value).encode()]

    reader, writer = await asyncio.open_connection(*b.addr)
    try:
        writer.write(pack(["repl", "x", "run-1"]))
        assert await read_frame(reader) == ["resume", -1]  # never synced: a snapshot first
        writer.write(pack(["snap", [[b"s", Entry(1, "x", b"snap").encode()]]]))
        writer.write(pack(["snap-end", 0]))
        assert await read_frame(reader) == ["ack", 0]
        writer.write(pack(["ops", [op(1, b"k", b"1"), op(2, b"k", b"2")]]))
        assert await read_frame(reader) == ["ack", 2]
        writer.write(pack(["ops", [op(2, b"k", b"2"), op(3, b"j", b"3")]]))  # 2 again
        assert await read_frame(reader) == ["ack", 3]
        writer.write(pack(["ops", [op(5, b"gap", b"5")]]))  # 4 is missing
        with pytest.raises(asyncio.IncompleteReadError):
            await read_frame(reader)  # the receiver closed the stream
    finally:
        writer.close()
    assert [b.run("GET", k) for k in ("s", "k", "j", "gap")] == [b"snap", b"2", b"3", None]
    assert b.peer("x")["applied_seq"] == 3 and b.peer("x")["received_ops"] == 5

    reader, writer = await asyncio.open_connection(*b.addr)
    try:
        writer.write(pack(["repl", "x", "run-1"]))
        assert await read_frame(reader) == ["resume", 3]
        writer.write(pack(["lost", 4, 5]))  # chaos dropped 4 and 5: a gap opens at 4
        assert await read_frame(reader) == ["ack", 5, 3]
    finally:
        writer.close()

    # A new stream learns the cursor below the gap from the resume answer, as from an ack.
    reader, writer = await asyncio.open_connection(*b.addr)
    try:
        writer.write(pack(["repl", "x", "run-1"]))
        assert await read_frame(reader) == ["resume", 5, 3]
    finally:
        writer.close()


# -- reconnects, snapshots and the backlog -----------------------------------------------------


async def test_a_receiver_restarted_empty_gets_a_snapshot_and_loses_no_write(
    nodes: list[Node],
) -> None:
    a = await start(nodes, "a")
    b = await start(nodes, "b")
    link(a, b)
    for i in range(20_000):
        a.run("SET", f"key:{i}", i)
    b.run("SET", "from-b", "x")
    a.run("DEL", "key:0")  # a tombstone, which the snapshot must carry
    await converged(a, b)
    assert a.peer("b")["snapshots_sent"] == 1  # the first sync of an empty receiver

    await b.stop()
    nodes.remove(b)
    fresh = await start(nodes, "b", port=b.bus.port)
    written_during_snapshot = 0
    stop_writing = False

    async def writer() -> None:
        nonlocal written_during_snapshot
        i = 0
        while not stop_writing:
            during = a.peer("b")["state"] == SNAPSHOT
            a.run("SET", f"during:{i}", i)
            a.run("DEL", f"key:{i + 1}")
            written_during_snapshot += during
            i += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    await until(lambda: a.peer("b")["snapshots_sent"] == 2, "the second snapshot")
    await until(lambda: a.peer("b")["state"] == STREAMING, "the stream after the snapshot")
    stop_writing = True
    await task
    assert written_during_snapshot > 0
    fresh.repl.connect("a", a.addr)
    await converged(a, fresh)
    assert fresh.run("EXISTS", "key:0", "key:1") == 0
    assert fresh.run("GET", "from-b") == b"x"  # b's own write came back through a's snapshot
    assert fresh.peer("a")["snapshots_received"] == 1


async def test_a_briefly_disconnected_peer_resumes_without_a_snapshot(
    nodes: list[Node],
) -> None:
    a = await start(nodes, "a")
    b = await start(nodes, "b")
    link(a, b)
    a.run("SET", "before", "1")
    await until(caught_up(a, b), "b's ack")
    assert a.peer("b")["snapshots_sent"] == 1

    await b.bus.stop()  # every stream to b breaks; b keeps its state and cursors
    await until(lambda: a.peer("b")["state"] != STREAMING, "a to see the link drop")
    for i in range(100):
        a.run("SET", f"gap:{i}", i)
    assert a.peer("b")["lag_ops"] == 100
    await b.bus.start()
    await until(caught_up(a, b), "b to resume")
    await converged(a, b)
    assert a.peer("b")["snapshots_sent"] == 1
    assert b.peer("a")["snapshots_received"] == 1
    assert b.peer("a")["applied_seq"] == a.repl.seq == 101

    a.repl.disconnect("b")  # stopped by hand: no reconnect until connect(), cursor kept
    assert a.peer("b")["state"] == "down"
    a.run("SET", "while-stopped", "1")
    assert a.peer("b")["acked_seq"] == 101 and a.peer("b")["lag_ops"] == 1
    a.repl.connect("b", b.addr)
    await until(lambda: b.run("GET", "while-stopped") == b"1", "the resumed stream")
    assert a.peer("b")["snapshots_sent"] == 1


async def test_a_stream_cut_by_the_traffic_filter_resumes_when_it_heals(
    nodes: list[Node],
) -> None:
    a = await start(nodes, "a")
    b = await start(nodes, "b")
    link(a, b)
    a.run("SET", "k", "1")
    await until(caught_up(a, b), "b's ack")
    a.bus.allow = lambda kind, addr, direction: addr != b.addr
    a.run("SET", "k", "2")
    await until(lambda: a.peer("b")["state"] != STREAMING, "the cut to show")
    assert b.run("GET", "k") == b"1"
    a.bus.allow = lambda kind, addr, direction: True
    await until(lambda: b.run("GET", "k") == b"2", "the healed stream")
    assert a.peer("b")["snapshots_sent"] == 1


async def test_a_peer_beyond_the_backlog_gets_a_snapshot(nodes: list[Node]) -> None:
    a = await start(nodes, "a", backlog_ops=16)
    b = await start(nodes, "b")
    link(a, b)
    for i in range(10):
        a.run("SET", f"k{i}", i)
    await converged(a, b)

    await b.bus.stop()
    await until(lambda: a.peer("b")["state"] != STREAMING, "a to see the link drop")
    a.run("DEL", "k0", "k1")
    for i in range(100):
        a.run("SET", f"later:{i}", i)
    assert 0 < len(a.repl.outbox) <= 16
    assert not a.repl.outbox.holds(a.peer("b")["acked_seq"] + 1)
    await b.bus.start()
    await converged(a, b)
    assert a.peer("b")["snapshots_sent"] == 2
    assert b.run("EXISTS", "k0", "k1", "k2") == 1


# -- WAIT --------------------------------------------------------------------------------------


async def resolved(reply: asyncio.Future[int] | int) -> int:
    return reply if isinstance(reply, int) else await asyncio.wait_for(reply, 10)


async def test_wait_counts_the_peers_that_acknowledged(nodes: list[Node]) -> None:
    a = await start(nodes, "a")
    b = await start(nodes, "b")
    c = await start(nodes, "c")
    assert a.repl.wait(0, 0) == 0  # no peers, nothing to wait for
    assert await resolved(a.repl.wait(1, 50)) == 0  # no peer at all: the timeout answers
    link(a, b, c)
    a.run("SET", "k", "v")
    assert await resolved(a.repl.wait(2, 0)) == 2
    assert a.repl.wait(2, 0) == 2  # nothing new written: at once

    await c.bus.stop()
    await until(lambda: a.peer("c")["state"] != STREAMING, "a to see c's link drop")
    a.run("SET", "k", "w")
    assert await resolved(a.repl.wait(1, 0)) == 1  # b alone suffices
    assert await resolved(a.repl.wait(2, 100)) == 1  # c cannot ack: the timeout answers
    pending = a.repl.wait(2, 0)  # no timeout: answered once c is back
    assert isinstance(pending, asyncio.Future) and not pending.done()
    await c.bus.start()
    assert await resolved(pending) == 2

    a.run("SET", "k", "x")
    abandoned = a.repl.wait(3, 0)  # more than there are peers: only the client ends it
    assert isinstance(abandoned, asyncio.Future)
    abandoned.cancel()  # the client went away
    assert await resolved(a.repl.wait(2, 0)) == 2
    a.repl.disconnect("c")  # a peer no longer linked no longer counts
    assert a.repl.wait(0, 0) == 1


# -- boundedness -------------------------------------------------------------------------------


async def test_the_outbox_stays_bounded_with_a_dead_peer(nodes: list[Node]) -> None:
    a = await start(nodes, "a", backlog_ops=1000, backlog_bytes=32 * 1024)
    a.repl.connect("dead", ("127.0.0.1", free_port()))
    for i in range(20_000):
        a.run("SET", f"key:{i}", "v" * 20)
        if i % 1000 == 0:
            await asyncio.sleep(0)
    outbox = a.repl.outbox
    assert outbox.seq == 20_000
    assert 0 < len(outbox) <= 1000
    assert outbox.bytes <= 32 * 1024
    assert outbox.evicted == 20_000 - len(outbox)
    row = a.peer("dead")
    assert row["state"] in ("connecting", "down")
    assert row["lag_ops"] == 20_000 and row["lag_ms"] > 0


async def test_a_peer_that_stops_reading_does_not_hold_writes(nodes: list[Node]) -> None:
    """A peer that accepts the stream and then never reads: writes go on, memory stays put."""
    stalled_streams: list[asyncio.StreamWriter] = []
    handshake_done = asyncio.Event()

    async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)  # the hello
        writer.write(pack(["resume", 0]))
        stalled_streams.append(writer)
        handshake_done.set()

    server = await asyncio.start_server(stalled, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        a = await start(nodes, "a", backlog_ops=5000, backlog_bytes=2**20)
        a.repl.connect("stalled", ("127.0.0.1", port))
        await asyncio.wait_for(handshake_done.wait(), 10)
        value = "v" * 2000
        for i in range(20_000):
            assert a.run("SET", f"key:{i}", value) == b"OK"
            if i % 100 == 0:
                await asyncio.sleep(0)
        assert a.repl.outbox.bytes <= 2**20
        row = a.peer("stalled")
        assert row["acked_seq"] == 0 and row["lag_ops"] == 20_000
        # The link pushed only what the socket's flow control let through, the kernel's
        # buffers at most: a fraction of the 40 MB written.
        assert row["sent_bytes"] < 20_000 * len(value) // 4
    finally:
        for w in stalled_streams:
            w.close()
        server.close()
        await server.wait_closed()


def test_the_backlog_keeps_only_what_a_peer_may_resume_from() -> None:
    outbox = Outbox(max_ops=100_000, max_bytes=2**24)  # bounds far away: only need counts
    outbox.needed = lambda: 4000  # a peer acknowledged up to 3999
    for i in range(1, 5001):
        outbox.append(b"key:%d" % i, Entry(i, "a", b"v%d" % i))
    assert outbox.holds(4000) and not outbox.holds(3000)
    # No peer to resume (one that never synced gets a snapshot): only the open chunk stays.
    outbox.needed = lambda: outbox.seq + 1
    for i in range(5001, 5501):
        outbox.append(b"key:%d" % i, Entry(i, "a", b"v%d" % i))
    assert outbox.seq == 5500 and len(outbox) <= 1024  # at most one chunk


def test_the_backlog_reads_back_every_held_operation_in_order() -> None:
    outbox = Outbox(max_ops=1000, max_bytes=2**20)
    outbox.needed = lambda: 0  # a peer that has acknowledged nothing yet: keep what fits
    for i in range(1, 5001):
        outbox.append(b"key:%d" % i, Entry(i, "a", b"v%d" % i))
    assert outbox.seq == 5000 and 0 < len(outbox) <= 1000
    assert not outbox.holds(outbox.first - 1) and outbox.holds(outbox.seq + 1)
    seq = outbox.first
    while seq <= outbox.seq:
        items = outbox.read(seq, 300, 2**20)
        assert 0 < len(items) <= 300
        for item in items:
            got, key, state = msgpack.unpackb(item)
            assert got == seq and key == b"key:%d" % seq
            assert Entry.decode(state).value == b"v%d" % seq
            seq += 1
    assert seq == 5001
    assert len(outbox.read(outbox.first, 500, 1)) == 1  # the byte limit still moves one
