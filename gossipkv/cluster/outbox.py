"""The replication outbox: this node's own writes, numbered and encoded once, in a bounded backlog.

``append`` is the keyspace's sink, so it runs on every client write: it numbers the delta,
encodes ``[seq, key, state]`` with msgpack at once (the keyspace may adopt the delta object right
after), and keeps the bytes in a backlog indexed by sequence number. The backlog is bounded by a
count and by a byte total; the oldest operations fall out, and a peer that needs them gets a
snapshot instead. Appending never blocks and never waits for a peer.

The backlog is a list of chunks: appending is a list append, and the oldest chunk falls out
whole, so eviction costs a little every thousand writes instead of index arithmetic on every
write, and never a long pause.

Links that have sent everything park on a future; the first append after a wake-up schedules
the next one for all of them, at the end of the event-loop iteration or, under load, LINK_PACE
after the previous wake-up, so that many writes leave as one frame. That same first append
records the time, which is all lag needs: the writes that follow it until the wake-up were made
within LINK_PACE of it.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from array import array
from collections.abc import Callable

import msgpack

from gossipkv.store.entry import Entry

CHUNK_OPS = 1024
# Under load, idle links are woken at most this often (seconds), so that each frame, write
# syscall and acknowledgement carries more operations; an isolated write leaves at once.
LINK_PACE = 0.0005
MARK_EVERY = 0.001  # seconds: the resolution of append times, hence of lag in ms
# A trimmed prefix of the time marks is compacted away once it is this long.
_MARKS_COMPACT = 4096


class Outbox:
    """Sequence numbers, the backlog, append times, and the wake-up of idle links."""

    __slots__ = (
        "_armed",
        "_chunk_bytes",
        "_chunk_ops",
        "_chunks",
        "_idle",
        "_mark_seq",
        "_mark_start",
        "_mark_time",
        "_pack",
        "_roll_bytes",
        "_starts",
        "_tail",
        "_woke",
        "bytes",
        "capacity",
        "evicted",
        "first",
        "max_bytes",
        "needed",
        "retaining",
        "seq",
    )

    def __init__(self, max_ops: int = 1_000_000, max_bytes: int = 256 * 2**20) -> None:
        if max_ops < 1 or max_bytes < 1:
            raise ValueError("the backlog must hold at least one operation and one byte")
        self.capacity = max_ops
        self.max_bytes = max_bytes
        self.seq = 0  # the last sequence number assigned
        self.first = 1  # the oldest sequence number still held; seq + 1 when none is
        self.bytes = 0  # encoded bytes held
        self.evicted = 0  # operations dropped to keep the bounds
        # Chunks of consecutive operations, oldest first; _starts[i] is the sequence number of
        # _chunks[i][0]. The last chunk, the tail, takes appends until it holds _chunk_ops
        # operations or _chunk_bytes bytes; then a new tail opens and old chunks fall out.
        self._chunk_ops = max(1, min(CHUNK_OPS, max_ops // 8))
        self._chunk_bytes = max(1, max_bytes // 8)
        self._tail: list[bytes] = []
        self._chunks: list[list[bytes]] = [self._tail]
        self._starts: list[int] = [1]
        self._roll_bytes = self._chunk_bytes  # the total at which the tail is full by bytes
        self._pack = msgpack.Packer(use_bin_type=True).pack
        # (first seq of an event-loop iteration, monotonic time) pairs, oldest first, at most
        # one per MARK_EVERY seconds; packed arrays, as there may be one per held operation.
        self._mark_seq = array("q")
        self._mark_time = array("d")
        self._mark_start = 0
        self._armed = False
        self._woke = 0.0  # when idle links were last woken
        self._idle: list[asyncio.Future[None]] = []
        # The oldest sequence number any peer may still ask for; older chunks are released.
        # Replication sets it; with no peer to resume, nothing needs keeping.
        self.needed: Callable[[], int] = lambda: self.seq + 1
        # False until the node has a peer: a lone node numbers its writes and keeps nothing,
        # since a peer that appears later starts from a snapshot anyway.
        self.retaining = True

    def retain(self, on: bool) -> None:
        """Start (or stop) keeping writes for peers; stopping drops what is held."""
        if not on:
            self._tail = []
            self._chunks = [self._tail]
            self._starts = [self.seq + 1]
            self.first = self.seq + 1
            self.bytes = 0
            self._roll_bytes = self._chunk_bytes
        self.retaining = on

    def __len__(self) -> int:
        return self.seq - self.first + 1

    # -- the write path ------------------------------------------------------------------------

    def append(self, key: bytes, delta: Entry) -> None:
        """The keyspace sink: number, encode and keep one local write."""
        seq = self.seq + 1
        self.seq = seq
        if not self.retaining:
            self.first = seq + 1
            self._starts[0] = seq + 1
            return
        item: bytes = self._pack((seq, key, delta.encode()))
        tail = self._tail
        tail.append(item)
        size = self.bytes + len(item)
        self.bytes = size
        if len(tail) >= self._chunk_ops or size >= self._roll_bytes:
            self._roll()
        if not self._armed:
            self._arm(seq)

    def _roll(self) -> None:
        """Open a new tail, and drop the oldest chunks so that closed chunks plus a full tail
        stay within both bounds."""
        self._tail = []
        self._chunks.append(self._tail)
        self._starts.append(self.seq + 1)
        # After any append the tail holds fewer than _chunk_ops operations and _chunk_bytes.
        keep_ops = self.capacity - self._chunk_ops + 1
        keep_bytes = self.max_bytes - self._chunk_bytes
        chunks = self._chunks
        needed = self.needed()
        while len(chunks) > 1 and (
            self.seq - self.first + 1 > keep_ops
            or self.bytes > keep_bytes
            or self._starts[1] <= needed  # every peer is past the oldest chunk
        ):
            old = chunks.pop(0)
            del self._starts[0]
            self.first += len(old)
            self.bytes -= sum(map(len, old))
            self.evicted += len(old)
        self._roll_bytes = self.bytes + self._chunk_bytes

    def _arm(self, seq: int) -> None:
        """The first write since links were last woken: mark its time, wake them soon."""
        now = time.monotonic()
        times = self._mark_time
        if len(times) <= self._mark_start or now - times[-1] >= MARK_EVERY:
            self._mark_seq.append(seq)
            times.append(now)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # No loop, so no link to wake; every write is marked, and trimmed here.
            self._trim_marks()
            return
        self._armed = True
        delay = self._woke + LINK_PACE - now
        if delay > 0:
            loop.call_later(delay, self._flush)
        else:
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._armed = False
        self._woke = time.monotonic()
        idle = self._idle
        if idle:
            self._idle = []
            for fut in idle:
                if not fut.done():
                    fut.set_result(None)
        self._trim_marks()

    def _trim_marks(self) -> None:
        """Forget marks that only describe operations no longer held."""
        seqs = self._mark_seq
        start = self._mark_start
        first = self.first
        while start + 1 < len(seqs) and seqs[start + 1] <= first:
            start += 1
        if start >= _MARKS_COMPACT and start * 2 >= len(seqs):
            del seqs[:start]
            del self._mark_time[:start]
            start = 0
        self._mark_start = start

    # -- what links read -----------------------------------------------------------------------

    def holds(self, seq: int) -> bool:
        """Whether a link can send from ``seq`` on out of the backlog (seq + 1 = nothing yet)."""
        return self.first <= seq <= self.seq + 1

    def read(self, start: int, max_ops: int, max_bytes: int) -> list[bytes]:
        """Encoded operations from ``start`` on, out of one chunk: at least one, at most
        max_ops or about max_bytes. ``start`` must be held and not beyond ``seq``."""
        if not self.first <= start <= self.seq:
            raise IndexError(f"operation {start} is not in the backlog")
        i = bisect.bisect_right(self._starts, start) - 1
        offset = start - self._starts[i]
        items = self._chunks[i][offset : offset + max_ops]
        if sum(map(len, items)) > max_bytes:
            total = 0
            for n, item in enumerate(items):
                total += len(item)
                if total > max_bytes:
                    del items[max(n, 1) :]
                    break
        return items

    async def wait_beyond(self, seq: int) -> None:
        """Return once an operation after ``seq`` has been appended."""
        while self.seq <= seq:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle.append(fut)
            await fut

    def appended_at(self, seq: int) -> float | None:
        """The monotonic time operation ``seq`` was appended (to the event-loop iteration),
        or the oldest time known when it has fallen out; None when nothing was appended."""
        seqs = self._mark_seq
        if len(seqs) <= self._mark_start:
            return None
        i = bisect.bisect_right(seqs, seq, self._mark_start) - 1
        return self._mark_time[max(i, self._mark_start)]
