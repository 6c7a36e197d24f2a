"""Delta replication: every node streams its own writes to every peer, and merges theirs.

Sender: one link per peer, a TCP stream on the peer's cluster port opened with the hello
``["repl", name, run_id]``. The run id is random per process start, so sequence numbers are
only ever compared within one run. The receiver answers ``["resume", applied]``: the highest
sequence of that run it has merged, or -1 when it has never synced with that run (and, while a
gap is open, the cursor below it, as acks carry it). The link then
streams ``["ops", [[seq, key, state], ...]]`` frames from applied + 1 out of the outbox's backlog.
When the backlog no longer holds that point, or the receiver has never synced (the sender's
keyspace holds more than its own writes: what earlier peers sent it), the link first sends a
snapshot: S = the current sequence, every key's full state (live keys and tombstones, so removals
replicate) in bounded ``["snap", [[key, state], ...]]`` frames with a yield between frames, then
``["snap-end", S]``, and streams from S + 1. Writes made during the snapshot have sequence numbers
above S, so none is lost; states already covering them merge idempotently.

Receiver: merges every item above its cursor through ``Keyspace.merge`` (never ``write``, which
would re-emit it), in order: a repeat is skipped, a gap ends the stream. It acknowledges with
``["ack", applied]``: at once after snap-end and after a lone ops frame, at most every ACK_PACE
under load. The sender's reader of those acks moves the peer's cursor, which drives lag and WAIT.

A slow peer holds back only its own link (``drain`` waits, nothing queues); the outbox stays
bounded, and a peer that falls out of it gets a snapshot on its next chance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
from collections.abc import Callable
from typing import Any

import msgpack

from gossipkv.cluster.bus import Addr, ClusterBus
from gossipkv.cluster.frames import MAX_FRAME, FrameError, pack
from gossipkv.cluster.outbox import Outbox
from gossipkv.store.entry import Entry
from gossipkv.store.keyspace import Keyspace

log = logging.getLogger("gossipkv.replication")

HELLO = "repl"
OPS_PER_FRAME = 512
SNAPSHOT_KEYS_PER_FRAME = 512
BYTES_PER_FRAME = 256 * 1024
CONNECT_TIMEOUT = 2.0  # connect and first answer
BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0
# "auto" overrun: an exchange when at most 1/64 of the keys can differ, else a snapshot.
OVERRUN_EXCHANGE_SHARE = 64
ACK_PACE = 0.0005  # seconds between acks of one stream under load

# Link states, as peers() reports them.
CONNECTING = "connecting"
SNAPSHOT = "snapshot"
STREAMING = "streaming"
DOWN = "down"

_LEN = struct.Struct(">I")
_OPS_HEAD = b"\x92" + msgpack.packb("ops")
_SNAP_HEAD = b"\x92" + msgpack.packb("snap")


def _array_frame(head: bytes, items: list[bytes]) -> bytes:
    """A length-prefixed ``[kind, [item, ...]]`` frame from items already msgpack-encoded,
    so that the backlog's bytes go out as they are, without decoding or re-encoding."""
    n = len(items)
    if n < 16:
        count = bytes((0x90 | n,))
    elif n < 0x10000:
        count = b"\xdc" + n.to_bytes(2, "big")
    else:
        count = b"\xdd" + n.to_bytes(4, "big")
    size = len(head) + len(count) + sum(map(len, items))
    return b"".join([_LEN.pack(size), head, count, *items])


async def _read(reader: asyncio.StreamReader) -> tuple[tuple[Any, ...], int]:
    """The next frame and its size on the wire. Arrays decode as tuples: a receiver makes
    two per operation, and tuples of plain values cost the garbage collector nothing."""
    (size,) = _LEN.unpack(await reader.readexactly(4))
    if size > MAX_FRAME:
        raise FrameError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    msg = msgpack.unpackb(
        await reader.readexactly(size), raw=False, use_list=False, strict_map_key=False
    )
    if not isinstance(msg, tuple) or len(msg) < 2 or not isinstance(msg[0], str):
        raise FrameError("frame is not a [kind, ...] array")
    return msg, size + 4


class PeerLink:
    """The sending side towards one peer, and what it knows of the peer's progress."""

    __slots__ = (
        "acked",
        "addr",
        "contiguous",
        "name",
        "overruns",
        "received_bytes",
        "sent_bytes",
        "sent_ops",
        "snapshot_covers",
        "snapshots_sent",
        "state",
        "task",
        "up",
    )

    def __init__(self, name: str, addr: Addr) -> None:
        self.name = name
        self.addr = addr
        self.state = DOWN
        self.acked = -1  # the peer's cursor for this run; -1 until it has synced
        # The peer's cursor below its first unhealed gap (operations lost in flight): the GC
        # watermark trusts only this (cluster/watermark.py).
        self.contiguous = -1
        self.sent_bytes = 0
        self.received_bytes = 0
        self.sent_ops = 0
        self.snapshots_sent = 0
        self.overruns = 0  # catch-ups left to anti-entropy instead of a snapshot
        self.snapshot_covers = 0  # the sequence number the snapshot in progress covers
        self.task: asyncio.Task[None] | None = None  # None once disconnected
        self.up = False


class Inbound:
    """The receiving side from one peer: the stream it feeds us, and its volume."""

    __slots__ = ("connected", "ops", "received_bytes", "run_id", "sent_bytes", "snapshots")

    def __init__(self) -> None:
        self.run_id = ""
        self.connected = False
        self.received_bytes = 0
        self.sent_bytes = 0
        self.ops = 0
        self.snapshots = 0


class _AckPacer:
    """Acknowledges at once when the last ack is ACK_PACE old, else once ACK_PACE after it:
    under load one ack covers many frames, while a lone write is acknowledged at once."""

    __slots__ = ("handle", "next_at", "send")

    def __init__(self, send: Callable[[], None]) -> None:
        self.send = send
        self.next_at = 0.0
        self.handle: asyncio.TimerHandle | None = None

    def ack(self, at_once: bool = False) -> None:
        now = time.monotonic()
        if at_once or now >= self.next_at:
            self.cancel()
            self._fire()
        elif self.handle is None:
            self.handle = asyncio.get_running_loop().call_later(self.next_at - now, self._fire)

    def _fire(self) -> None:
        self.handle = None
        self.send()
        self.next_at = time.monotonic() + ACK_PACE

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class _Waiter:
    __slots__ = ("fut", "needed", "target", "timer")

    def __init__(self, target: int, needed: int, fut: asyncio.Future[int]) -> None:
        self.target = target
        self.needed = needed
        self.fut = fut
        self.timer: asyncio.TimerHandle | None = None


class Replication:
    """This node's outbox, its sender links, the receiver of peers' streams, and WAIT."""

    def __init__(
        self,
        bus: ClusterBus,
        keyspace: Keyspace,
        name: str,
        backlog_ops: int = 1_000_000,
        backlog_bytes: int = 256 * 2**20,
    ) -> None:
        self.bus = bus
        self.keyspace = keyspace
        self.name = name
        self.backlog = (backlog_ops, backlog_bytes)
        self.links: dict[str, PeerLink] = {}
        self._start_run()
        self.inbound: dict[str, Inbound] = {}
        self.connect_timeout = CONNECT_TIMEOUT
        # Per origin run: the highest sequence merged, and the stream now feeding it.
        self._applied: dict[str, int] = {}
        self._feeding: dict[str, asyncio.StreamWriter] = {}
        self._waiters: list[_Waiter] = []
        # Bumped by new_run: a stream received before it must not move a cursor after it.
        self.epoch = 0
        # Per origin run: the first operation skipped as lost and not healed since (by a
        # snapshot or an anti-entropy exchange found in sync); acks report the cursor below it.
        self.gaps: dict[str, int] = {}
        # (peer, run) -> drop its snapshot frames: it was away past the GC horizon.
        self.refuse_snapshot: Callable[[str, str], bool] = _accept
        # How a known peer past the backlog catches up: "auto", "anti-entropy" or "snapshot";
        # and what runs the exchange when a peer's stream says this node is the one behind.
        self.overrun = "snapshot"
        self.on_overrun: Callable[[str], None] = _ignore_peer
        bus.on_stream(HELLO, self._serve)

    def _start_run(self) -> None:
        """A run: a random id, and an outbox numbering this run's writes from 1."""
        self.run_id = os.urandom(16).hex()
        self.outbox = Outbox(*self.backlog)
        self.outbox.needed = self._needed
        self.outbox.retain(bool(self.links))  # nothing kept until the first peer appears
        self.keyspace.sink = self.outbox.append

    @property
    def seq(self) -> int:
        return self.outbox.seq

    async def start(self) -> None:
        """Links start on connect(); the receiver is registered on the bus already."""

    async def stop(self) -> None:
        await self._stop_links()
        for writer in list(self._feeding.values()):
            writer.close()
        for w in list(self._waiters):
            self._resolve(w)

    async def _stop_links(self) -> list[tuple[str, Addr]]:
        """Stop every sender link; the peers that had a running one, with their address."""
        running = [(link.name, link.addr) for link in self.links.values() if link.task]
        tasks = [link.task for link in self.links.values() if link.task is not None]
        for link in self.links.values():
            if link.task is not None:
                link.task.cancel()
                link.task = None
            link.state = DOWN
        pending = set(tasks)
        while pending:
            for t in pending:
                t.cancel()  # again if a cancellation was swallowed
            _, pending = await asyncio.wait(pending, timeout=0.1)
        return running

    async def new_run(self, reset: Callable[[], None]) -> None:
        """Start a new run in this process, as an empty restart would (a rejoin after the GC
        horizon, cluster/rejoin.py): every stream in and out stops, ``reset`` runs (it drops
        the keyspace), every cursor is forgotten, and the links reconnect with a new run id.
        Each peer then answers the hello with -1 and gets this node's snapshot, and each peer
        reconnecting its own link finds no cursor here and sends its snapshot: the two-way
        exchange of a MEET."""
        peers = dict(await self._stop_links())
        self.epoch += 1
        for writer in list(self._feeding.values()):
            writer.close()
        self._feeding.clear()
        for stats in self.inbound.values():
            stats.connected = False
        self._applied.clear()
        self.gaps.clear()
        for w in list(self._waiters):
            self._resolve(w)
        reset()
        self._start_run()
        for link in self.links.values():
            if link.task is not None:  # started while the others stopped: it has the old id
                link.task.cancel()
                link.task = None
                peers[link.name] = link.addr
            link.acked = link.contiguous = -1
            link.snapshot_covers = 0
        log.info("event=new_run run_id=%s peers=%d", self.run_id, len(peers))
        for name, addr in peers.items():
            self.connect(name, addr)

    def synced(self, peer: str) -> bool:
        """Whether this run has merged a snapshot of ``peer``'s (or resumed its stream)."""
        stats = self.inbound.get(peer)
        return stats is not None and self._applied.get(stats.run_id, -1) >= 0

    # -- links -----------------------------------------------------------------------------

    def connect(self, peer: str, addr: Addr) -> None:
        """Keep a sender link to ``peer`` at its cluster address, reconnecting as needed."""
        if peer == self.name:
            return
        link = self.links.get(peer)
        if link is None:
            link = self.links[peer] = PeerLink(peer, addr)
            self.outbox.retain(True)
        elif link.addr != addr:
            log.info("event=link_moved peer=%s from=%s:%d to=%s:%d", peer, *link.addr, *addr)
            link.addr = addr
            if link.task is not None:
                link.task.cancel()
                link.task = None
        if link.task is None or link.task.done():
            link.state = CONNECTING
            link.task = asyncio.get_running_loop().create_task(self._run_link(link))

    def disconnect(self, peer: str) -> None:
        """Stop the link to ``peer``; its cursor stays, for a resume if it comes back."""
        link = self.links.get(peer)
        if link is None or link.task is None:
            return
        link.task.cancel()
        link.task = None
        link.state = DOWN
        log.info("event=link_stopped peer=%s acked=%d", peer, link.acked)

    async def _run_link(self, link: PeerLink) -> None:
        # The link runs while it is its peer's task. Python 3.11's wait_for (inside
        # open_stream) can swallow a cancellation, so a stopped link also ends by noticing
        # that it was replaced.
        me = asyncio.current_task()
        backoff = BACKOFF_MIN
        hello = [HELLO, self.name, self.run_id]
        while link.task is me:
            link.state = CONNECTING
            try:
                reader, writer = await self.bus.open_stream(link.addr, hello, self.connect_timeout)
            except (OSError, TimeoutError) as e:
                log.debug("event=link_connect_failed peer=%s error=%r", link.name, e)
            else:
                try:
                    if link.task is not me:
                        return
                    async with asyncio.timeout(self.connect_timeout):
                        msg, size = await _read(reader)
                    if msg[0] != "resume" or not isinstance(msg[1], int):
                        raise FrameError(f"expected resume, got {msg[0]!r}")
                    link.received_bytes += size
                    backoff = BACKOFF_MIN
                    below = int(msg[2]) if len(msg) > 2 else msg[1]
                    await self._session(link, reader, writer, msg[1], below)
                except (OSError, EOFError, TimeoutError, FrameError, ValueError) as e:
                    if link.up:
                        log.info("event=link_down peer=%s error=%r", link.name, e)
                    else:
                        log.debug("event=link_failed peer=%s error=%r", link.name, e)
                except Exception as e:  # a malformed answer must not end the link for good
                    log.warning("event=link_error peer=%s error=%r", link.name, e)
                finally:
                    link.up = False
                    writer.close()
            if link.task is not me:
                return
            link.state = DOWN
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _session(
        self, link: PeerLink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        resume: int, below: int,
    ) -> None:
        """One connection: the sender and the ack reader, until either ends. ``below`` is
        the peer's cursor below its first open gap, as its acks report it."""
        link.acked = resume
        link.contiguous = below  # a restarted peer starts from nothing
        link.up = True
        log.info(
            "event=link_up peer=%s addr=%s:%d resume=%d seq=%d",
            link.name, *link.addr, resume, self.outbox.seq,
        )
        loop = asyncio.get_running_loop()
        tasks = {
            loop.create_task(self._send(link, writer, resume)),
            loop.create_task(self._read_acks(link, reader)),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks)
        for t in done:
            exc = None if t.cancelled() else t.exception()
            if exc is not None:
                raise exc
        raise EOFError("stream ended")

    async def _send(self, link: PeerLink, writer: asyncio.StreamWriter, resume: int) -> None:
        outbox = self.outbox
        if resume < 0 or resume > outbox.seq:
            nxt = await self._snapshot(link, writer, resume)
        elif not outbox.holds(resume + 1):
            nxt = await self._catch_up(link, writer, resume)
        else:
            nxt = resume + 1
        link.state = STREAMING
        while True:
            if nxt > outbox.seq:
                await outbox.wait_beyond(nxt - 1)
                continue
            if not outbox.holds(nxt):
                log.info(
                    "event=backlog_overrun peer=%s next=%d first=%d", link.name, nxt, outbox.first
                )
                nxt = await self._catch_up(link, writer, nxt - 1)
                link.state = STREAMING
                continue
            if not self.bus.allow(HELLO, link.addr, "out"):  # chaos also cuts open streams
                raise ConnectionResetError("traffic to the peer is cut")
            items = outbox.read(nxt, OPS_PER_FRAME, BYTES_PER_FRAME)
            faults = self.bus.faults
            if faults is not None and faults.active:
                # Chaos: a dropped frame is lost in flight, so the peer is told to skip it
                # (only anti-entropy brings it back); a delayed one holds the link.
                hold = faults.frame(link.name, "out")
                if hold is None:
                    writer.write(pack(["lost", nxt, nxt + len(items) - 1]))
                    nxt += len(items)
                    await writer.drain()
                    continue
                if hold > 0:
                    await asyncio.sleep(hold)
            frame = _array_frame(_OPS_HEAD, items)
            writer.write(frame)
            link.sent_bytes += len(frame)
            link.sent_ops += len(items)
            nxt += len(items)
            await writer.drain()
            if nxt <= outbox.seq:
                await asyncio.sleep(0)  # more to send: let clients in between frames

    def heals_by_exchange(self, missed: int) -> bool:
        """Whether a peer that missed ``missed`` operations past the backlog catches up by an
        anti-entropy exchange rather than a snapshot. An exchange costs per differing key, a
        snapshot per key held: "auto" takes the exchange while the keys the missed operations
        can have touched are a small share of the keyspace."""
        if self.overrun != "auto":
            return self.overrun == "anti-entropy"
        keys = len(self.keyspace.live) + len(self.keyspace.tombstones)
        return min(missed, keys) * OVERRUN_EXCHANGE_SHARE <= keys

    async def _catch_up(self, link: PeerLink, writer: asyncio.StreamWriter, had: int) -> int:
        """A known peer is past the backlog: a snapshot, or (see heals_by_exchange) an
        "overrun" frame telling it the operations up to now are lost to streaming; the peer
        then runs an anti-entropy exchange, which ships what differs. Returns the next seq."""
        last = self.outbox.seq
        if not self.heals_by_exchange(last - had):
            return await self._snapshot(link, writer, had)
        frame = pack(["overrun", had + 1, last])
        writer.write(frame)
        link.sent_bytes += len(frame)
        link.overruns += 1
        log.info("event=overrun_exchange peer=%s first=%d last=%d", link.name, had + 1, last)
        await writer.drain()
        return last + 1

    async def _snapshot(self, link: PeerLink, writer: asyncio.StreamWriter, had: int) -> int:
        """Send every key's full state, covering operations up to S; returns S + 1."""
        link.state = SNAPSHOT
        ks = self.keyspace
        covers = self.outbox.seq
        link.snapshot_covers = covers
        keys = list(ks.live)
        keys.extend(ks.tombstones)
        started = time.monotonic()
        log.info(
            "event=snapshot_start peer=%s keys=%d seq=%d resume=%d first=%d",
            link.name, len(keys), covers, had, self.outbox.first,
        )
        packer = msgpack.Packer(use_bin_type=True)
        live = ks.live
        tombstones = ks.tombstones
        items: list[bytes] = []
        size = 0
        sent = 0
        for key in keys:
            e = live.get(key)
            if e is None:
                e = tombstones.get(key)
                if e is None:
                    continue
            item: bytes = packer.pack((key, e.encode()))
            items.append(item)
            size += len(item)
            if len(items) >= SNAPSHOT_KEYS_PER_FRAME or size >= BYTES_PER_FRAME:
                sent += len(items)
                await self._send_snapshot_frame(link, writer, items)
                items = []
                size = 0
        if items:
            sent += len(items)
            await self._send_snapshot_frame(link, writer, items)
        frame = pack(["snap-end", covers])
        writer.write(frame)
        link.sent_bytes += len(frame)
        link.snapshots_sent += 1
        log.info(
            "event=snapshot_sent peer=%s keys=%d seq=%d ms=%.1f",
            link.name, sent, covers, (time.monotonic() - started) * 1000,
        )
        return covers + 1

    async def _send_snapshot_frame(
        self, link: PeerLink, writer: asyncio.StreamWriter, items: list[bytes]
    ) -> None:
        frame = _array_frame(_SNAP_HEAD, items)
        writer.write(frame)
        link.sent_bytes += len(frame)
        await writer.drain()
        await asyncio.sleep(0)  # the node keeps serving clients between slices

    async def _read_acks(self, link: PeerLink, reader: asyncio.StreamReader) -> None:
        while True:
            msg, size = await _read(reader)
            link.received_bytes += size
            if msg[0] != "ack" or not isinstance(msg[1], int):
                raise FrameError(f"expected ack, got {msg[0]!r}")
            link.contiguous = int(msg[2]) if len(msg) > 2 else msg[1]
            if msg[1] > link.acked:
                link.acked = msg[1]
                if self._waiters:
                    self._check_waiters()

    # -- receiver --------------------------------------------------------------------------

    async def _serve(
        self, hello: list[Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A peer's stream of its own writes (the bus has read the hello)."""
        if len(hello) < 3 or not isinstance(hello[1], str) or not isinstance(hello[2], str):
            log.warning("event=bad_repl_hello hello=%r", hello[:3])
            return
        peer: str = hello[1]
        run_id: str = hello[2]
        previous = self._feeding.get(run_id)
        if previous is not None:
            previous.close()  # a reconnect supersedes the stream it replaces
        self._feeding[run_id] = writer
        stats = self.inbound.get(peer)
        if stats is None:
            stats = self.inbound[peer] = Inbound()
        elif stats.run_id != run_id:
            # The peer restarted: its former run will never send again (names are unique).
            self._applied.pop(stats.run_id, None)
        stats.run_id = run_id
        stats.connected = True
        applied = self._applied.get(run_id, -1)
        self._reply(stats, writer, self._ack(run_id, "resume"))
        log.info("event=stream_in_up peer=%s run_id=%s resume=%d", peer, run_id, applied)
        try:
            await self._receive(peer, run_id, stats, reader, writer)
        except (FrameError, TypeError, KeyError, IndexError, AttributeError) as e:
            log.warning("event=bad_repl_stream peer=%s error=%r", peer, e)
        finally:
            if self._feeding.get(run_id) is writer:
                del self._feeding[run_id]
                stats.connected = False
            log.info(
                "event=stream_in_down peer=%s run_id=%s applied=%d",
                peer, run_id, self._applied.get(run_id, -1),
            )

    async def _receive(
        self, peer: str, run_id: str, stats: Inbound,
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
    ) -> None:
        merge = self.keyspace.merge
        decode = Entry.decode
        acks = _AckPacer(lambda: self._reply(stats, writer, self._ack(run_id)))
        snapshot_keys = 0
        refused = False  # snapshot frames of this stream were dropped (GC horizon)
        epoch = self.epoch
        try:
            while True:
                msg, size = await _read(reader)
                if self.epoch != epoch:
                    return  # a new run began: frames of this stream are not its to merge
                stats.received_bytes += size
                kind = msg[0]
                if kind == "ops":
                    faults = self.bus.faults
                    if faults is not None and faults.active and msg[1]:
                        hold = faults.frame(peer, "in")
                        if hold is None:  # chaos: the frame is lost, as if never sent
                            self._skip(run_id, msg[1][0][0], msg[1][-1][0])
                            acks.ack()
                            continue
                        if hold > 0:
                            await asyncio.sleep(hold)
                    stats.ops += len(msg[1])
                    self._apply_ops(run_id, msg[1])
                    acks.ack()
                elif kind == "lost":  # chaos on the sender dropped these operations
                    self._skip(run_id, int(msg[1]), int(msg[2]))
                    acks.ack()
                elif kind == "overrun":  # past the sender's backlog: heal by an exchange
                    self._skip(run_id, int(msg[1]), int(msg[2]))
                    acks.ack()
                    self.on_overrun(peer)
                elif kind == "snap":
                    if self.refuse_snapshot(peer, run_id):
                        refused = True
                    else:
                        for key, enc in msg[1]:
                            merge(key, decode(enc))
                    snapshot_keys += len(msg[1])
                elif kind == "snap-end":
                    applied = max(self._applied.get(run_id, -1), int(msg[1]))
                    self._applied[run_id] = applied
                    stats.snapshots += 1
                    if not refused:
                        self.healed(run_id, applied)
                    refused = False
                    log.info(
                        "event=snapshot_received peer=%s keys=%d seq=%d",
                        peer, snapshot_keys, applied,
                    )
                    snapshot_keys = 0
                    acks.ack(at_once=True)
                else:
                    raise FrameError(f"unexpected {kind!r} on a replication stream")
                await asyncio.sleep(0)  # a burst of buffered frames must not starve clients
        finally:
            acks.cancel()

    def _apply_ops(self, run_id: str, items: tuple[Any, ...]) -> int:
        """Merge the operations above the cursor, in order; a gap ends the stream."""
        applied = self._applied.get(run_id, -1)
        if applied < 0:
            raise FrameError("operations from a run never synced")
        merge = self.keyspace.merge
        decode = Entry.decode
        n = len(items)
        if n and items[0][0] == applied + 1 and items[-1][0] == applied + n:
            # The usual frame: exactly the next operations.
            for _, key, enc in items:
                merge(key, decode(enc))
            applied += n
            self._applied[run_id] = applied
            return applied
        try:
            for seq, key, enc in items:
                if seq <= applied:
                    continue  # already merged through an earlier stream or a snapshot
                if seq != applied + 1:
                    raise FrameError(f"gap: operation {seq} after {applied}")
                merge(key, decode(enc))
                applied = seq
        finally:
            self._applied[run_id] = applied
        return applied

    def _skip(self, run_id: str, first: int, last: int) -> None:
        """Move the cursor past operations chaos dropped, without merging them."""
        applied = self._applied.get(run_id, -1)
        if applied < 0 or first > applied + 1:
            raise FrameError(f"gap: lost operations {first}..{last} after {applied}")
        self._applied[run_id] = max(applied, last)
        self.gaps.setdefault(run_id, first)

    def _ack(self, run_id: str, kind: str = "ack") -> list[Any]:
        applied = self._applied.get(run_id, -1)
        gap = self.gaps.get(run_id)
        # The contiguous cursor goes along only while a gap is open: ["ack", applied, below].
        # The answer to a hello ("resume") says the same, so that a reconnecting sender does
        # not keep a cursor from before the peer caught up.
        return [kind, applied] if gap is None else [kind, applied, gap - 1]

    def healed(self, run_id: str, upto: int) -> None:
        """Operations up to ``upto`` of that run are all merged now (a snapshot, or an
        anti-entropy exchange that ended in sync): forget a gap at or below it."""
        gap = self.gaps.get(run_id)
        if gap is not None and gap <= upto:
            del self.gaps[run_id]
            writer = self._feeding.get(run_id)
            stats = next((x for x in self.inbound.values() if x.run_id == run_id), None)
            if writer is not None and stats is not None and run_id in self._applied:
                self._reply(stats, writer, self._ack(run_id))  # the sender learns at once

    def merged_cursors(self) -> dict[str, tuple[str, int]]:
        """Per peer: (run id, the sequence of its stream merged with no gap below it)."""
        out: dict[str, tuple[str, int]] = {}
        applied = self._applied
        gaps = self.gaps
        for peer, stats in self.inbound.items():
            run = stats.run_id
            upto = applied.get(run, -1)
            gap = gaps.get(run)
            out[peer] = (run, upto if gap is None else min(upto, gap - 1))
        return out

    def inbound_cursor(self, peer: str) -> tuple[str, int]:
        """(run id, applied) of the stream ``peer`` feeds us; ("", -1) when none."""
        stats = self.inbound.get(peer)
        if stats is None:
            return "", -1
        return stats.run_id, self._applied.get(stats.run_id, -1)

    @staticmethod
    def _reply(stats: Inbound, writer: asyncio.StreamWriter, msg: list[Any]) -> None:
        frame = pack(msg)
        stats.sent_bytes += len(frame)
        writer.write(frame)

    # -- WAIT ------------------------------------------------------------------------------

    def acked_by(self, target: int) -> int:
        """How many linked peers have acknowledged every write up to ``target``."""
        return sum(
            1 for link in self.links.values() if link.task is not None and link.acked >= target
        )

    def _needed(self) -> int:
        """The oldest operation a peer may still resume from: older backlog can go.

        A peer with a cursor (linked before, maybe disconnected now) needs what follows it; a
        peer in a snapshot needs what follows the snapshot; a peer never synced will snapshot.
        """
        needed = self.outbox.seq + 1
        for link in self.links.values():
            if link.state == SNAPSHOT or (link.state == STREAMING and link.acked < 0):
                # Until its first ack, a link fresh from a snapshot streams from covers + 1.
                needed = min(needed, link.snapshot_covers + 1)
            elif link.acked >= 0:
                needed = min(needed, link.acked + 1)
        return needed

    def wait(self, numreplicas: int, timeout_ms: int) -> asyncio.Future[int] | int:
        """WAIT: the count at once when enough peers have every write made so far, else a
        future of the count when enough have, or when the timeout (0 = none) fires."""
        target = self.outbox.seq
        count = self.acked_by(target)
        if numreplicas <= 0 or count >= numreplicas:
            return count
        loop = asyncio.get_running_loop()
        waiter = _Waiter(target, numreplicas, loop.create_future())
        if timeout_ms > 0:
            waiter.timer = loop.call_later(timeout_ms / 1000, self._resolve, waiter)
        waiter.fut.add_done_callback(lambda _: self._forget(waiter))
        self._waiters.append(waiter)
        return waiter.fut

    def _check_waiters(self) -> None:
        for w in list(self._waiters):
            if self.acked_by(w.target) >= w.needed:
                self._resolve(w)

    def _resolve(self, w: _Waiter) -> None:
        if not w.fut.done():
            w.fut.set_result(self.acked_by(w.target))

    def _forget(self, w: _Waiter) -> None:
        # Resolved, timed out or cancelled (the client went away).
        if w.timer is not None:
            w.timer.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(w)

    # -- status ----------------------------------------------------------------------------

    def lag(self, link: PeerLink) -> tuple[int, float]:
        """(operations, milliseconds) the peer is behind this node's own writes."""
        seq = self.outbox.seq
        acked = max(link.acked, 0)
        if acked >= seq:
            return 0, 0.0
        at = self.outbox.appended_at(acked + 1)
        ms = (time.monotonic() - at) * 1000 if at is not None else 0.0
        return seq - acked, ms

    def peers(self) -> list[dict[str, Any]]:
        """One row per peer that we send to or that sends to us."""
        rows: list[dict[str, Any]] = []
        for name in sorted(self.links.keys() | self.inbound.keys()):
            link = self.links.get(name)
            inbound = self.inbound.get(name)
            row: dict[str, Any] = {"name": name}
            if link is not None:
                lag_ops, lag_ms = self.lag(link)
                row.update(
                    addr=f"{link.addr[0]}:{link.addr[1]}",
                    state=link.state,
                    acked_seq=link.acked,
                    lag_ops=lag_ops,
                    lag_ms=round(lag_ms, 3),
                    sent_bytes=link.sent_bytes,
                    received_bytes=link.received_bytes,
                    sent_ops=link.sent_ops,
                    snapshots_sent=link.snapshots_sent,
                    overruns=link.overruns,
                )
            else:
                row.update(
                    addr="", state=DOWN, acked_seq=-1, lag_ops=0, lag_ms=0.0, sent_bytes=0,
                    received_bytes=0, sent_ops=0, snapshots_sent=0, overruns=0,
                )
            if inbound is not None:
                row["sent_bytes"] += inbound.sent_bytes
                row["received_bytes"] += inbound.received_bytes
                row.update(
                    inbound="up" if inbound.connected else "down",
                    applied_seq=self._applied.get(inbound.run_id, -1),
                    received_ops=inbound.ops,
                    snapshots_received=inbound.snapshots,
                )
            else:
                row.update(inbound="down", applied_seq=-1, received_ops=0, snapshots_received=0)
            rows.append(row)
        return rows


def _accept(peer: str, run_id: str) -> bool:
    return False


def _ignore_peer(peer: str) -> None:
    return None
