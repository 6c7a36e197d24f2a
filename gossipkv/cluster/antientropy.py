"""Merkle anti-entropy: find and repair whatever delta replication missed, and read repair.

An exchange runs over one cluster-bus stream (kind ``ae``), driven by the initiator:

1. ``["root", depth, fanout, root]`` -> ``["root", root, depth, fanout]``: one round trip of
   well under 100 bytes; equal roots end the exchange (in sync).
2. Walk: ``["kids", level, [index, ...]]`` -> ``["kids", [[hash, ...], ...]]``, one round trip
   per level for every differing node of that level (split into frames of KIDS_PER_FRAME nodes,
   all sent before the answers are read). Only children whose hashes differ go down a level.
3. For the differing leaves, ``["pairs", [[leaf, [[key_hash, entry_hash], ...]], ...], repair]``
   in frames of at most PAIRS_PER_FRAME pairs, PAIRS_IN_FLIGHT of them sent ahead of their
   answers so that both nodes work at once; the responder compares them with its own pairs and
   answers ``["diff", [[key, state, entry_hash], ...], [wanted key_hash, ...], compared, more]``:
   its full state of every key that differs or that the initiator lacks, and the key hashes of
   the initiator's keys it lacks. The initiator merges those states (``Keyspace.merge``, the one
   path) and ships back ``["states", [[key, state], ...]]`` for the wanted keys and for the keys
   whose merged state still differs from the responder's.
4. ``["end"]`` -> ``["done", [changed key_hash, ...]]``; then the repaired leaves are
   re-compared (``["leafh", [leaf, ...]]`` -> ``["leafh", [hash, ...]]``) and those back in sync
   leave the suspect set on both sides (``["clear", [leaf, ...]]``).

A key counts as a *difference* only when merging the other side's state changed a replica's
entry hash. A write still in flight on a replication link is therefore not counted: by the time
its state arrives the delta has usually landed, and the merge changes nothing.

Read repair: the leaves found differing are put in ``keyspace.suspect``; a client read of a key
in such a leaf calls ``on_suspect_read``, which queues the key for an immediate targeted repair
with the peer the leaf differs from (``["key", [[key, state or None], ...]]`` -> ``["states",
...]``). The read is answered from local memory at once, without waiting: gossipkv answers every
read without a cross-node round trip, and a read that waited on a slow or partitioned peer would
break that. The repair lands a round trip later.

Every step works in bounded slices (frames of bounded size, a yield between frames), so an
exchange of a million keys never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack
import xxhash

from gossipkv.cluster.bus import Addr, ClusterBus
from gossipkv.cluster.frames import MAX_FRAME, FrameError, pack, unpack_body
from gossipkv.cluster.member import State
from gossipkv.cluster.membership import Membership
from gossipkv.cluster.replication import Replication
from gossipkv.store.entry import Entry
from gossipkv.store.keyspace import Keyspace

log = logging.getLogger("gossipkv.antientropy")

HELLO = "ae"
KIDS_PER_FRAME = 512  # tree nodes per walk frame
PAIRS_PER_FRAME = 1024  # (key hash, entry hash) pairs per frame: about 3 ms of work a side
PAIRS_IN_FLIGHT = 8  # frames of pairs sent ahead of their answers
STATE_BYTES_PER_FRAME = 256 * 1024
STATE_KEYS_PER_FRAME = 512
TIMEOUT = 10.0  # seconds one frame may take to arrive before the exchange is abandoned
READ_REPAIR_BATCH = 256
PACE = 2.0  # after a slice of exchange work longer than PACE_MIN, sleep PACE times as long
PACE_MIN = 0.001

_LEN = struct.Struct(">I")
_key_hash = xxhash.xxh3_64_intdigest


class AntiEntropyError(Exception):
    """An exchange could not run; the message is the one line a user sees."""


class RejoinRequired(AntiEntropyError):
    """The peer expelled this node (away past the GC horizon) and refuses its state."""


@dataclass
class Summary:
    """The figures of one exchange (the last one is shown by INFO and /status)."""

    peer: str = ""
    mode: str = "repair"  # or "dryrun": differences are found and marked, not repaired
    running: bool = True
    in_sync: bool = False
    levels_walked: int = 0
    leaves_differing: int = 0
    keys_compared: int = 0
    candidates: int = 0  # keys whose hashes differed when compared
    differences: int = 0  # keys a merge actually changed (dry run: candidates)
    repaired_here: int = 0
    repaired_there: int = 0
    round_trips: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    ms: float = 0.0
    error: str = ""
    started: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ms"] = round(self.ms, 3)
        return d


class _Stream:
    """One exchange stream with its byte counts."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, summary: Summary | None
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.summary = summary
        self.sent = 0
        self.received = 0

    def send(self, msg: list[Any]) -> None:
        frame = pack(msg)
        self.sent += len(frame)
        if self.summary is not None:
            self.summary.bytes_sent += len(frame)
        self.writer.write(frame)

    async def recv(self, expect: str) -> list[Any]:
        async with asyncio.timeout(TIMEOUT):
            (size,) = _LEN.unpack(await self.reader.readexactly(4))
            if size > MAX_FRAME:
                raise FrameError(f"frame of {size} bytes exceeds {MAX_FRAME}")
            msg = unpack_body(await self.reader.readexactly(size))
        self.received += size + 4
        if self.summary is not None:
            self.summary.bytes_received += size + 4
        if msg[0] == "error":
            if len(msg) > 2 and msg[2] == "rejoin":
                raise RejoinRequired(str(msg[1]))
            raise AntiEntropyError(str(msg[1]) if len(msg) > 1 else "the peer refused")
        if msg[0] != expect:
            raise FrameError(f"expected {expect!r}, got {msg[0]!r}")
        return msg

    async def drain(self) -> None:
        await self.writer.drain()


class AntiEntropy:
    """Periodic and forced exchanges with peers, the responder side, and read repair."""

    def __init__(
        self,
        bus: ClusterBus,
        keyspace: Keyspace,
        membership: Membership,
        replication: Replication,
        interval: float = 10.0,
    ) -> None:
        self.bus = bus
        self.keyspace = keyspace
        self.membership = membership
        self.replication = replication
        self.interval = interval
        # Members whose state must not be merged (back after the GC horizon): see watermark.py.
        self.refuse: Callable[[str], bool] = _never
        self.last: Summary | None = None
        self.current: Summary | None = None
        self.exchanges = 0
        self.total_differences = 0
        self.read_repairs = 0  # keys repaired because a client read them
        self.served = 0
        self._running: asyncio.Lock = asyncio.Lock()
        self._loop_task: asyncio.Task[None] | None = None
        self._suspect_peer: dict[int, str] = {}  # leaf -> the peer it differs from
        # leaf -> keys of it read-repaired since it was marked: a hot key is repaired once,
        # not on every read, while other keys keep its leaf suspect.
        self._repaired: dict[int, set[bytes]] = {}
        self._repair_queue: dict[str, set[bytes]] = {}
        self._repair_tasks: dict[str, asyncio.Task[None]] = {}
        self._soon: dict[str, asyncio.Task[None]] = {}
        bus.on_stream(HELLO, self._serve)
        keyspace.on_suspect_read = self._on_suspect_read

    @property
    def name(self) -> str:
        return self.membership.me.name

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.interval > 0:
            self._loop_task = asyncio.get_running_loop().create_task(
                self._periodic(), name="anti-entropy"
            )

    async def stop(self) -> None:
        tasks = [
            t for t in [self._loop_task, *self._repair_tasks.values(), *self._soon.values()]
            if t is not None
        ]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        self._loop_task = None

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No exchange initiated by this node meanwhile (a running one finishes first)."""
        async with self._running:
            yield

    def exchange_soon(self, peer: str) -> None:
        """An exchange with ``peer`` as soon as the running one ends: replication asks for it
        when the peer's stream said the operations past its backlog are lost to streaming."""
        task = self._soon.get(peer)
        if task is not None and not task.done():
            return
        self._soon[peer] = asyncio.get_running_loop().create_task(
            self._exchange_soon(peer), name=f"anti-entropy-{peer}"
        )

    async def _exchange_soon(self, peer: str) -> None:
        try:
            await self.exchange(peer)
        except AntiEntropyError as e:
            log.info("event=ae_failed peer=%s error=%s", peer, e)
        except Exception:
            log.exception("event=ae_crashed peer=%s", peer)

    async def _periodic(self) -> None:
        """An exchange with a random live peer every ``interval`` (jittered +-25%); an exchange
        still running (a forced one) skips the turn."""
        while True:
            await asyncio.sleep(self.interval * random.uniform(0.75, 1.25))
            if self._running.locked():
                continue
            peers = self.live_peers()
            if not peers:
                continue
            try:
                await self.exchange(random.choice(peers))
            except AntiEntropyError as e:
                log.debug("event=ae_failed error=%s", e)
            except Exception:
                log.exception("event=ae_crashed")

    def live_peers(self) -> list[str]:
        return sorted(
            name for name, m in self.membership.members.items()
            if m.state == State.ALIVE and not self.refuse(name)
        )

    def _addr(self, peer: str) -> Addr:
        m = self.membership.members.get(peer)
        if m is None or m.state not in (State.ALIVE, State.SUSPECT):
            raise AntiEntropyError(f"no live member named '{peer}'")
        return m.cluster_addr

    # -- initiator ----------------------------------------------------------------------------

    async def exchange(
        self, peer: str | None = None, repair: bool = True,
        progress: Callable[[Summary], None] | None = None,
    ) -> Summary:
        """Run one exchange now with ``peer`` (a random live one when None) and return its
        figures; AntiEntropyError when no exchange could run at all."""
        if peer is None:
            peers = self.live_peers()
            if not peers:
                raise AntiEntropyError("no live peer to exchange with")
            peer = random.choice(peers)
        elif peer == self.name:
            raise AntiEntropyError("cannot exchange with this node itself")
        if self.refuse(peer):
            raise AntiEntropyError(
                f"'{peer}' was away longer than the GC horizon and must rejoin by snapshot"
            )
        addr = self._addr(peer)
        async with self._running:
            summary = Summary(peer=peer, mode="repair" if repair else "dryrun")
            self.current = summary
            started = time.monotonic()
            try:
                await self._exchange(peer, addr, summary, repair, progress or _ignore)
            except (OSError, TimeoutError, EOFError, FrameError, AntiEntropyError) as e:
                summary.error = _why(e)
                log.info("event=ae_failed peer=%s error=%s", peer, summary.error)
            finally:
                summary.ms = (time.monotonic() - started) * 1000
                summary.running = False
                self.current = None
                self.last = summary
                self.exchanges += 1
                self.total_differences += summary.differences
            if summary.error and not summary.round_trips:
                raise AntiEntropyError(f"exchange with '{peer}' failed: {summary.error}")
            log.info(
                "event=ae_done peer=%s mode=%s in_sync=%s compared=%d differences=%d "
                "sent=%d received=%d round_trips=%d ms=%.1f",
                peer, summary.mode, summary.in_sync, summary.keys_compared, summary.differences,
                summary.bytes_sent, summary.bytes_received, summary.round_trips, summary.ms,
            )
            return summary

    async def _exchange(
        self, peer: str, addr: Addr, s: Summary, repair: bool,
        progress: Callable[[Summary], None],
    ) -> None:
        tree = self.keyspace.merkle
        # Every operation of the peer's stream up to this cursor is in the peer's state now:
        # an exchange that ends in sync heals any gap below it (replication.gaps).
        run, cursor = self.replication.inbound_cursor(peer)
        reader, writer = await self.bus.open_stream(addr, [HELLO, self.name, "sync"], TIMEOUT)
        st = _Stream(reader, writer, s)
        s.bytes_sent += len(pack([HELLO, self.name, "sync"]))
        try:
            st.send(["root", tree.depth, tree.fanout, tree.root()])
            msg = await st.recv("root")
            s.round_trips += 1
            if (msg[2], msg[3]) != (tree.depth, tree.fanout):
                raise AntiEntropyError(
                    f"hash tree shapes differ (depth/fanout {tree.depth}/{tree.fanout} here, "
                    f"{msg[2]}/{msg[3]} on '{peer}')"
                )
            if msg[1] == tree.root():
                s.in_sync = True
                self._clear_peer(peer)
                self.replication.healed(run, cursor)
                st.send(["end"])
                await st.recv("done")
                return
            differing = [0]
            for level in range(tree.depth):
                differing = await self._walk_level(st, level, differing)
                s.levels_walked = level + 1
                progress(s)
                if not differing:
                    break
            s.leaves_differing = len(differing)
            for leaf in differing:
                self._mark(leaf, peer)
            changed_here: set[int] = set()
            # Up to PAIRS_IN_FLIGHT frames of pairs are sent ahead of their answers, so both
            # nodes hash and compare at once. Nothing waits on a drain meanwhile (the peer may
            # be blocked writing answers we have not read yet); what is buffered is bounded
            # by the window.
            window: deque[dict[int, bytes]] = deque()
            chunks = iter(_chunks_of_pairs(self.keyspace, differing))
            while True:
                started = time.monotonic()
                chunk = next(chunks, None)
                if chunk is None:
                    break
                window.append(self._send_pairs(st, chunk, repair))
                await _pace(started)
                if len(window) >= PAIRS_IN_FLIGHT:
                    await self._receive_diff(st, window.popleft(), repair, changed_here)
                    progress(s)
            while window:
                await self._receive_diff(st, window.popleft(), repair, changed_here)
                progress(s)
            await st.drain()
            st.send(["end"])
            done = await st.recv("done")
            s.round_trips += 1
            changed_there = set(done[1])
            s.repaired_there = len(changed_there)
            if repair:
                s.differences = len(changed_here | changed_there)
                await self._verify(st, differing, peer)
            else:
                s.differences = s.candidates
            s.in_sync = repair and not self._leaves_of(peer)
            if s.in_sync:
                self.replication.healed(run, cursor)
            progress(s)
        finally:
            writer.close()

    async def _walk_level(self, st: _Stream, level: int, indices: list[int]) -> list[int]:
        """Compare the children of every given node of ``level``; return the differing ones
        (indices at level + 1). One round trip, the requests split into bounded frames."""
        tree = self.keyspace.merkle
        fanout = tree.fanout
        chunks = [indices[i:i + KIDS_PER_FRAME] for i in range(0, len(indices), KIDS_PER_FRAME)]
        for chunk in chunks:
            st.send(["kids", level, chunk])
        await st.drain()
        out: list[int] = []
        for chunk in chunks:
            msg = await st.recv("kids")
            theirs_all = msg[1]
            if len(theirs_all) != len(chunk):
                raise FrameError("kids answer of the wrong length")
            for index, theirs in zip(chunk, theirs_all, strict=True):
                mine = tree.children(level, index)
                base = index * fanout
                for j, h in enumerate(mine):
                    if j >= len(theirs) or theirs[j] != h:
                        out.append(base + j)
        assert st.summary is not None
        st.summary.round_trips += 1
        return out

    def _send_pairs(
        self, st: _Stream, chunk: list[tuple[int, list[tuple[bytes, int]]]], repair: bool
    ) -> dict[int, bytes]:
        """Send one frame of pairs; returns its keys by key hash, for the answer."""
        by_hash: dict[int, bytes] = {}
        wire: list[list[Any]] = []
        for leaf, pairs in chunk:
            items = []
            for key, eh in pairs:
                kh = _key_hash(key)
                by_hash[kh] = key
                items.append([kh, eh])
            wire.append([leaf, items])
        st.send(["pairs", wire, repair])
        return by_hash

    async def _receive_diff(
        self, st: _Stream, by_hash: dict[int, bytes], repair: bool, changed_here: set[int]
    ) -> None:
        """Merge the peer's answer to one frame of pairs; ship back what the peer lacks."""
        s = st.summary
        assert s is not None
        ks = self.keyspace
        store = self.keyspace
        back: list[bytes] = []
        while True:
            msg = await st.recv("diff")
            started = time.monotonic()
            _, states, wanted, compared, more = msg[:5]
            s.keys_compared += compared
            s.candidates += len(states) + len(wanted)
            for key, enc, their_eh in states:
                if enc is None:
                    continue
                before = store.entry_hash(key)
                ks.merge(key, Entry.decode(enc))
                after = store.entry_hash(key)
                if after != before:
                    changed_here.add(_key_hash(key))
                    s.repaired_here += 1
                if repair and before and after != their_eh:
                    back.append(key)  # both had changes: the peer needs ours too
            if repair:
                for kh in wanted:
                    mine = by_hash.get(kh)
                    if mine is not None:
                        back.append(mine)
            await _pace(started)
            if not more:
                break
        s.round_trips += 1
        if back:
            for frame in _state_frames(store, back):
                st.send(["states", frame])
                await asyncio.sleep(0)

    async def _verify(self, st: _Stream, leaves: list[int], peer: str) -> None:
        """Re-compare the repaired leaves; those equal now leave the suspect set, both sides."""
        if not leaves:
            return
        tree = self.keyspace.merkle
        fanout = tree.fanout
        level = tree.depth - 1
        st.send(["leafh", leaves])
        msg = await st.recv("leafh")
        assert st.summary is not None
        st.summary.round_trips += 1
        equal = []
        parents: dict[int, list[int]] = {}
        for leaf, theirs in zip(leaves, msg[1], strict=False):
            kids = parents.get(leaf // fanout)
            if kids is None:
                kids = parents[leaf // fanout] = tree.children(level, leaf // fanout)
            if kids[leaf % fanout] == theirs:
                equal.append(leaf)
        for leaf in equal:
            self._unmark(leaf, peer)
        # All equal: the responder holds every write this node had when the walk began.
        st.send(["clear", equal, len(equal) == len(leaves)])
        await st.drain()

    # -- responder ----------------------------------------------------------------------------

    async def _serve(
        self, hello: list[Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if len(hello) < 3 or not isinstance(hello[1], str):
            return
        peer: str = hello[1]
        st = _Stream(reader, writer, None)
        if self.refuse(peer):
            st.send([
                "error", f"'{self.name}' refuses the state of '{peer}' until it rejoins",
                "rejoin",
            ])
            return
        self.served += 1
        tree = self.keyspace.merkle
        store = self.keyspace
        ks = self.keyspace
        changed: list[int] = []
        run, cursor = "", -1
        try:
            while True:
                async with asyncio.timeout(TIMEOUT * 3):
                    (size,) = _LEN.unpack(await reader.readexactly(4))
                    if size > MAX_FRAME:
                        raise FrameError(f"frame of {size} bytes exceeds {MAX_FRAME}")
                    msg = unpack_body(await reader.readexactly(size))
                started = time.monotonic()
                kind = msg[0]
                if kind == "root":
                    # Every operation of the initiator's stream up to here is in its state:
                    # if the exchange ends in sync, a gap below this cursor is healed.
                    run, cursor = self.replication.inbound_cursor(peer)
                    root = tree.root()
                    st.send(["root", root, tree.depth, tree.fanout])
                    if msg[3] == root:
                        self._clear_peer(peer)
                        self.replication.healed(run, cursor)
                elif kind == "kids":
                    level = int(msg[1])
                    st.send(["kids", [tree.children(level, int(i)) for i in msg[2]]])
                elif kind == "pairs":
                    await self._answer_pairs(st, peer, msg[1], bool(msg[2]))
                elif kind == "states":
                    for key, enc in msg[1]:
                        before = store.entry_hash(key)
                        ks.merge(key, Entry.decode(enc))
                        if store.entry_hash(key) != before:
                            changed.append(_key_hash(key))
                elif kind == "end":
                    st.send(["done", changed])
                elif kind == "leafh":
                    st.send(["leafh", self._leaf_hashes([int(x) for x in msg[1]])])
                elif kind == "clear":
                    for leaf in msg[1]:
                        self._unmark(int(leaf), peer)
                    if len(msg) > 2 and msg[2] is True:
                        self.replication.healed(run, cursor)
                elif kind == "key":
                    answer = self._read_repair_answer(msg[1])
                    leaves = [int(x) for x in msg[2]]
                    st.send(["states", answer, self._leaf_hashes(leaves)])
                else:
                    raise FrameError(f"unexpected {kind!r} on an anti-entropy stream")
                busy = time.monotonic() - started
                await writer.drain()
                await asyncio.sleep(busy * PACE if busy > PACE_MIN else 0)
        except asyncio.IncompleteReadError:
            pass  # the initiator is done
        except (TypeError, ValueError, IndexError, KeyError) as e:
            log.warning("event=bad_ae_stream peer=%s error=%r", peer, e)

    async def _answer_pairs(
        self, st: _Stream, peer: str, wire: list[Any], repair: bool
    ) -> None:
        store = self.keyspace
        states: list[list[Any]] = []
        wanted: list[int] = []
        compared = 0
        for leaf, items in wire:
            leaf = int(leaf)
            own = {_key_hash(k): (k, eh) for k, eh in store.leaf_pairs(leaf)}
            differs = False
            compared += len(items)
            for kh, eh in items:
                mine = own.pop(kh, None)
                if mine is None:
                    wanted.append(kh)
                    differs = True
                elif mine[1] != eh:
                    states.append(self._state_item(mine[0], mine[1], repair))
                    differs = True
            compared += len(own)
            for key, eh in own.values():
                states.append(self._state_item(key, eh, repair))
                differs = True
            if differs:
                self._mark(leaf, peer)
            if len(states) >= STATE_KEYS_PER_FRAME:
                st.send(["diff", states, [], compared, True])
                await st.drain()
                await asyncio.sleep(0)
                states = []
                compared = 0
        st.send(["diff", states, wanted, compared, False])

    def _state_item(self, key: bytes, eh: int, repair: bool) -> list[Any]:
        e = self.keyspace.state_of(key) if repair else None
        return [key, None if e is None else e.encode(), eh]

    def _leaf_hashes(self, leaves: list[int]) -> list[int]:
        tree = self.keyspace.merkle
        fanout = tree.fanout
        level = tree.depth - 1
        cache: dict[int, list[int]] = {}
        out = []
        for leaf in leaves:
            kids = cache.get(leaf // fanout)
            if kids is None:
                kids = cache[leaf // fanout] = tree.children(level, leaf // fanout)
            out.append(kids[leaf % fanout])
        return out

    def _read_repair_answer(self, items: list[Any]) -> list[list[Any]]:
        store = self.keyspace
        out: list[list[Any]] = []
        for key, enc in items:
            if enc is not None:
                self.keyspace.merge(key, Entry.decode(enc))
            e = store.state_of(key)
            if e is not None:
                out.append([key, e.encode()])
        return out

    # -- suspect leaves and read repair -------------------------------------------------------

    def _mark(self, leaf: int, peer: str) -> None:
        self.keyspace.suspect.add(leaf)
        self._suspect_peer[leaf] = peer

    def _unmark(self, leaf: int, peer: str) -> None:
        if self._suspect_peer.get(leaf) == peer:
            del self._suspect_peer[leaf]
            self._repaired.pop(leaf, None)
            self.keyspace.suspect.discard(leaf)

    def _clear_peer(self, peer: str) -> None:
        for leaf in [lf for lf, p in self._suspect_peer.items() if p == peer]:
            self._unmark(leaf, peer)

    def _leaves_of(self, peer: str) -> list[int]:
        return [lf for lf, p in self._suspect_peer.items() if p == peer]

    def suspect_leaves(self) -> int:
        return len(self.keyspace.suspect)

    def _on_suspect_read(self, key: bytes) -> None:
        """A client read a key of a suspect leaf: repair that key with the peer, right after."""
        leaf = self.keyspace.merkle.leaf_of(key)
        peer = self._suspect_peer.get(leaf)
        if peer is None:
            self.keyspace.suspect.discard(leaf)
            return
        done = self._repaired.get(leaf)
        if done is not None and key in done:
            return
        queue = self._repair_queue.setdefault(peer, set())
        queue.add(key)
        task = self._repair_tasks.get(peer)
        if task is None or task.done():
            self._repair_tasks[peer] = asyncio.get_running_loop().create_task(
                self._read_repair(peer), name="read-repair"
            )

    async def _read_repair(self, peer: str) -> None:
        while True:
            queue = self._repair_queue.get(peer)
            if not queue:
                self._repair_queue.pop(peer, None)
                return
            keys = [queue.pop() for _ in range(min(len(queue), READ_REPAIR_BATCH))]
            try:
                await self.repair_keys(peer, keys)
            except (OSError, TimeoutError, EOFError, FrameError, AntiEntropyError) as e:
                log.info("event=read_repair_failed peer=%s keys=%d error=%s", peer, len(keys),
                         _why(e))
                # The peer is unreachable: its marks would only make every read retry.
                self._repair_queue.pop(peer, None)
                self._clear_peer(peer)
                return

    async def repair_keys(self, peer: str, keys: Iterable[bytes]) -> int:
        """Targeted repair of some keys with one peer: both sides end with the join of the two
        states. Returns how many keys changed here."""
        store = self.keyspace
        keys = list(keys)
        items = []
        for key in keys:
            e = store.state_of(key)
            items.append([key, None if e is None else e.encode()])
        addr = self._addr(peer)
        reader, writer = await self.bus.open_stream(addr, [HELLO, self.name, "key"], TIMEOUT)
        st = _Stream(reader, writer, None)
        tree = store.merkle
        leaves = sorted({tree.leaf_of(k) for k in keys})
        try:
            st.send(["key", items, leaves])
            msg = await st.recv("states")
        finally:
            writer.close()
        changed = 0
        for key, enc in msg[1]:
            before = store.entry_hash(key)
            self.keyspace.merge(key, Entry.decode(enc))
            if store.entry_hash(key) != before:
                changed += 1
        self.read_repairs += len(keys)
        for key in keys:
            leaf = tree.leaf_of(key)
            if self._suspect_peer.get(leaf) == peer:
                self._repaired.setdefault(leaf, set()).add(key)
        # A leaf leaves the suspect set once it equals the peer's (other keys of it may differ).
        for leaf, mine, theirs in zip(leaves, self._leaf_hashes(leaves), msg[2], strict=False):
            if mine == theirs:
                self._unmark(leaf, peer)
        log.info("event=read_repair peer=%s keys=%d changed=%d", peer, len(keys), changed)
        return changed

    # -- figures ------------------------------------------------------------------------------

    def info(self) -> list[tuple[str, str]]:
        """INFO fields (in the Replication section): totals and the last exchange."""
        cur = self.current
        last = self.last
        lines = [
            ("ae_interval_s", f"{self.interval:g}"),
            ("ae_running", "1" if cur is not None else "0"),
            ("ae_exchanges", str(self.exchanges)),
            ("ae_served", str(self.served)),
            ("ae_total_differences", str(self.total_differences)),
            ("ae_read_repairs", str(self.read_repairs)),
            ("ae_suspect_leaves", str(self.suspect_leaves())),
        ]
        for prefix, s in (("ae_now", cur), ("ae_last", last)):
            if s is None:
                continue
            lines += [
                (f"{prefix}_peer", s.peer),
                (f"{prefix}_mode", s.mode),
                (f"{prefix}_in_sync", "1" if s.in_sync else "0"),
                (f"{prefix}_levels_walked", str(s.levels_walked)),
                (f"{prefix}_keys_compared", str(s.keys_compared)),
                (f"{prefix}_differences", str(s.differences)),
                (f"{prefix}_repaired", str(s.repaired_here + s.repaired_there)),
                (f"{prefix}_bytes_sent", str(s.bytes_sent)),
                (f"{prefix}_bytes_received", str(s.bytes_received)),
                (f"{prefix}_round_trips", str(s.round_trips)),
                (f"{prefix}_ms", f"{s.ms:.3f}"),
            ]
            if s.error:
                # One plain value: no line breaks, and nothing INFO parsers read as a map.
                text = s.error.translate(str.maketrans("\r\n,=", "  ; "))
                lines.append((f"{prefix}_error", text))
        return lines

    def status(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval,
            "exchanges": self.exchanges,
            "served": self.served,
            "total_differences": self.total_differences,
            "read_repairs": self.read_repairs,
            "suspect_leaves": self.suspect_leaves(),
            "running": None if self.current is None else self.current.as_dict(),
            "last": None if self.last is None else self.last.as_dict(),
        }


def _chunks_of_pairs(
    store: Keyspace, leaves: list[int]
) -> Iterable[list[tuple[int, list[tuple[bytes, int]]]]]:
    """The differing leaves' pairs in frames of about PAIRS_PER_FRAME pairs (a leaf is never
    split: the responder compares a leaf as a whole)."""
    chunk: list[tuple[int, list[tuple[bytes, int]]]] = []
    n = 0
    for leaf in leaves:
        pairs = store.leaf_pairs(leaf)
        chunk.append((leaf, pairs))
        n += len(pairs)
        if n >= PAIRS_PER_FRAME:
            yield chunk
            chunk = []
            n = 0
    if chunk:
        yield chunk


def _state_frames(store: Keyspace, keys: list[bytes]) -> Iterable[list[list[Any]]]:
    packer = msgpack.Packer(use_bin_type=True)
    frame: list[list[Any]] = []
    size = 0
    for key in keys:
        e = store.state_of(key)
        if e is None:
            continue
        enc = e.encode()
        frame.append([key, enc])
        size += len(key) + len(packer.pack(enc))
        if len(frame) >= STATE_KEYS_PER_FRAME or size >= STATE_BYTES_PER_FRAME:
            yield frame
            frame = []
            size = 0
    if frame:
        yield frame


async def _pace(started: float) -> None:
    """Yield after a slice of exchange work; after a long one, sleep PACE times as long, so
    that a large exchange leaves clients at least two thirds of the event loop."""
    busy = time.monotonic() - started
    await asyncio.sleep(busy * PACE if busy > PACE_MIN else 0)


def _never(name: str) -> bool:
    return False


def _ignore(s: Summary) -> None:
    return None


def _why(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, asyncio.IncompleteReadError):
        return "the peer closed the stream"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
