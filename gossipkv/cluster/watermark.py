"""The GC watermark: which writes every member has merged, and the collection it allows.

``stable[origin] = ts`` means every write of ``origin`` stamped at or below ``ts`` has been
merged by every member that counts (alive, suspect, or dead for less than the GC horizon).
The keyspace then forgets tombstones and removal metadata whose stamps are all stable
(``Keyspace.collect``, run here in bounded slices).

Each origin computes its own frontier and gossips it; nobody else can, because only the origin
knows which sequence numbers its writes got:

- Every tick the origin samples ``(outbox seq, clock.last)`` in one synchronous step. Any write
  made after the sample is stamped above ``clock.last`` (the HLC only moves forward), so every
  write stamped at or below that value has a sequence number at or below the sample's.
- A peer's acknowledged sequence (``PeerLink.acked``: replication applies each origin's stream
  in order and never past a gap; a snapshot acknowledges the sequence it covers) therefore
  vouches for the stamp of the newest sample at or below it. A frame lost to a fault or an
  overflow stops the peer's cursor at the gap, so the frontier never moves past it.
- The origin's frontier is the minimum of that over every member that counts; a member without
  a link, or not yet synced with this run, holds it at 0.
- ``["wm", origin, run, epoch, frontier, causal frontier, merged run, merged seq]`` goes by UDP
  to every live member every tick; a receiver keeps the newest epoch of each origin. The stable
  vector holds those frontiers (this node's own included). An origin never heard from is absent,
  so nothing it wrote is ever collected.

The causal frontier (``cstable``) is what a list tombstone waits for: an insert naming a removed
element may have been made by a node before it merged the removal, and may arrive after it. A
counter's floor waits for it too, for an increment made before its maker merged the reset.
Each sample also records, per origin n, the sequence of n's stream (its current run) this node
has merged contiguously (a snapshot covers the sequence it covers). ``merged[n]``, this node's
D[n], is that cursor in the newest sample whose own sequence every counted member has
acknowledged contiguously, the same sample the frontier vouches by: every write this node made
before merging n's writes up to D[n] is then everywhere. It goes to n in the tick's packet
(tagged with n's run), and n computes ``CF = min(frontier, min over counted o of
vouched(D_o[n]))``. ``CF >= R`` means every counted member has merged n's writes stamped up to
R, and every write any member made before merging them. A member that has not told n its D
for n's current run holds CF at 0; expelled and departed members count as the stable vector
counts them.

A member dead for longer than ``horizon`` seconds stops holding the watermark back: it is
*expelled*, in the replication run it had then. Its stale state must never be merged again,
since it may hold writes whose removals were collected meanwhile: anti-entropy with it is
refused both ways and snapshot frames from it are dropped, while its ordered stream of its own
writes (from the replication backlog) is still merged. Which side of such a separation drops
its state and rejoins by snapshot (``rejoin_required``) is cluster/rejoin.py's decision; a
member that comes back in a new run (restarted empty, or rejoined in-process) is readmitted.
docs/SEMANTICS.md says what a rejoining node keeps and loses.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections import deque
from typing import Any

from gossipkv.cluster.bus import Addr, ClusterBus
from gossipkv.cluster.member import Member, State
from gossipkv.cluster.membership import Membership
from gossipkv.cluster.replication import Replication
from gossipkv.store.keyspace import Keyspace

log = logging.getLogger("gossipkv.gc")

KIND = "wm"
MAX_SAMPLES = 4096
GC_BUDGET = 2000  # entries per collection slice
GC_SLICE_MS = 20  # at most this long collecting per tick
GONE = 2**63 - 1  # the frontier of a member that left or was expelled


class Watermark:
    """Frontiers, the stable vector, the horizon, and the periodic collection."""

    def __init__(
        self,
        bus: ClusterBus,
        keyspace: Keyspace,
        membership: Membership,
        replication: Replication,
        horizon: float,
        interval: float = 1.0,
    ) -> None:
        self.bus = bus
        self.keyspace = keyspace
        self.membership = membership
        self.replication = replication
        self.horizon = horizon
        self.interval = interval
        self.me = membership.me.name
        self.epoch = 0
        self._seqs: deque[int] = deque(maxlen=MAX_SAMPLES)
        self._stamps: deque[int] = deque(maxlen=MAX_SAMPLES)
        # Per sample: origin -> (its run, its sequence merged contiguously here).
        self._merged: deque[dict[str, tuple[str, int]]] = deque(maxlen=MAX_SAMPLES)
        self.frontier = 0  # this node's own, as last computed
        self.causal_frontier = 0  # this node's own CF, as last computed
        self.heard: dict[str, tuple[str, int, int]] = {}  # origin -> (run, epoch, frontier)
        self.heard_causal: dict[str, int] = {}  # origin -> its CF, from the same packets
        # Member -> (this node's run, the sequence of it the member vouches it merged): D_o[me].
        self.merged_by: dict[str, tuple[str, int]] = {}
        self.last_live: dict[str, float] = {}  # member -> monotonic time last seen alive
        self.expelled: dict[str, str] = {}  # member -> the replication run it was expelled in
        self.rejoin_required = False
        self.departed: set[str] = set()  # members that left gracefully
        self.collect_passes = 0
        self._task: asyncio.Task[None] | None = None
        bus.on_packet(KIND, self._on_packet)
        membership.listeners.append(self._on_member)
        replication.refuse_snapshot = self._refuse_snapshot

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        now = time.monotonic()
        for name, m in self.membership.members.items():
            if m.state in (State.ALIVE, State.SUSPECT):
                self.last_live[name] = now
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="gc-watermark")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                self.tick()
                await self.collect()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=gc_tick_failed")
            await asyncio.sleep(self.interval)

    # -- membership ---------------------------------------------------------------------------

    def _on_member(self, m: Member) -> None:
        if m.name == self.me:
            return
        if m.state in (State.ALIVE, State.SUSPECT):
            if m.name in self.expelled and m.state == State.ALIVE and not self.rejoin_required:
                log.warning(
                    "event=gc_member_back_after_horizon member=%s: its state is refused until "
                    "one side rejoins by snapshot", m.name,
                )
            self.last_live[m.name] = time.monotonic()
            self.departed.discard(m.name)
        elif m.state == State.LEFT:
            self.last_live.pop(m.name, None)  # a graceful leave flushed everything first
            self.departed.add(m.name)

    def reset(self) -> None:
        """Forget every sample, frontier and expulsion, as an empty restart would: a rejoin
        starts a new replication run with an empty keyspace (cluster/rejoin.py)."""
        self._seqs.clear()
        self._stamps.clear()
        self.frontier = 0
        self.heard.clear()
        self.expelled.clear()
        self.rejoin_required = False
        now = time.monotonic()
        self.last_live = {
            name: now for name, m in self.membership.members.items()
            if m.state in (State.ALIVE, State.SUSPECT) and name != self.me
        }

    def counted(self, now: float | None = None) -> list[str]:
        """The members that hold the watermark back: alive, suspect, or dead within the
        horizon. Expels the ones past it."""
        now = time.monotonic() if now is None else now
        members = self.membership.members
        out = []
        for name, seen in list(self.last_live.items()):
            m = members.get(name)
            if m is not None and m.state in (State.ALIVE, State.SUSPECT):
                if name not in self.expelled:
                    self.last_live[name] = now
                    out.append(name)
                continue
            if now - seen > self.horizon:
                if name not in self.expelled:
                    self.expelled[name] = self._run_of(name)
                    log.warning(
                        "event=gc_member_expelled member=%s away_s=%.1f horizon_s=%g",
                        name, now - seen, self.horizon,
                    )
                continue
            out.append(name)
        return out

    def _run_of(self, name: str) -> str:
        inbound = self.replication.inbound.get(name)
        return inbound.run_id if inbound is not None else ""

    def stale(self, name: str) -> bool:
        """Whether ``name`` is expelled and still in the run it was expelled in."""
        run = self.expelled.get(name)
        return run is not None and run == self._run_of(name)

    def refused(self, name: str) -> bool:
        """Whether ``name``'s state must not be merged: it was away past the horizon and
        has not restarted since. A node that was itself the one away refuses nobody."""
        run = self.expelled.get(name)
        if run is None:
            return False
        current = self._run_of(name)
        if current != run:  # restarted empty: its state came from the cluster by snapshot
            del self.expelled[name]
            self.last_live[name] = time.monotonic()
            log.info("event=gc_member_readmitted member=%s", name)
            return False
        return not self.rejoin_required

    def _refuse_snapshot(self, name: str, run_id: str) -> bool:
        run = self.expelled.get(name)
        if run is None or run != run_id:
            return False
        return self.refused(name)

    # -- frontiers ----------------------------------------------------------------------------

    def tick(self) -> None:
        """Sample, compute this node's frontiers, tell every live member."""
        seq = self.replication.seq
        stamp = self.keyspace.clock.last  # read together with seq: no write in between
        merged = self.replication.merged_cursors()  # and this: no merge in between
        if self._seqs and self._seqs[-1] == seq:
            self._stamps[-1] = stamp
            self._merged[-1] = merged
        else:
            self._seqs.append(seq)
            self._stamps.append(stamp)
            self._merged.append(merged)
        counted = self.counted()
        everywhere = self._acked_everywhere(counted)
        self.frontier = self._vouched(everywhere)
        self.causal_frontier = self._own_causal_frontier(counted)
        vouched = self._sample(everywhere)
        mine = self._merged[vouched] if vouched >= 0 else {}
        self.epoch += 1
        head = [
            KIND, self.me, self.replication.run_id, self.epoch, self.frontier,
            self.causal_frontier,
        ]
        for m in self.membership.members.values():
            if m.state in (State.ALIVE, State.SUSPECT) and m.name not in self.expelled:
                run, upto = mine.get(m.name, ("", -1))
                self.bus.send_packet(m.cluster_addr, [*head, run, upto])

    def _sample(self, acked: int) -> int:
        """The newest sample whose own sequence is at or below ``acked``; -1 for none."""
        return bisect.bisect_right(self._seqs, acked) - 1

    def _vouched(self, acked: int) -> int:
        """The stamp a peer's acknowledged sequence vouches for."""
        i = self._sample(acked)
        return self._stamps[i] if i >= 0 else 0

    def _acked_everywhere(self, counted: list[str]) -> int:
        """The sequence every counted member has acknowledged contiguously (-1: some member
        has not synced with this run); when alone, the newest sample's."""
        links = self.replication.links
        lowest: int | None = None
        for name in counted:
            link = links.get(name)
            acked = link.contiguous if link is not None else -1
            lowest = acked if lowest is None else min(lowest, acked)
        if lowest is None:  # alone: every write of this node is everywhere it needs to be
            return self._seqs[-1] if self._seqs else -1
        return max(lowest, -1)

    def _own_causal_frontier(self, counted: list[str]) -> int:
        """min(frontier, vouched(D_o[me]) over counted members o): see the module's doc."""
        run = self.replication.run_id
        lowest = self.frontier
        for name in counted:
            got = self.merged_by.get(name)
            if got is None or got[0] != run:
                return 0
            lowest = min(lowest, self._vouched(got[1]))
        return lowest

    def _on_packet(self, msg: list[Any], addr: Addr) -> None:
        try:
            _, origin, run, epoch, frontier = msg[:5]
            origin = str(origin)
            run = str(run)
            epoch = int(epoch)
            frontier = int(frontier)
            # An earlier form carries no causal frontier: none is kept for it then.
            causal: tuple[int, str, int] | None = None
            if len(msg) >= 8:
                causal = (int(msg[5]), str(msg[6]), int(msg[7]))
        except (TypeError, ValueError):
            return
        if origin == self.me or self.refused(origin):
            return
        prev = self.heard.get(origin)
        if prev is None or run != prev[0] or epoch > prev[1]:
            self.heard[origin] = (run, epoch, frontier)
            if causal is None:
                self.heard_causal.pop(origin, None)
                self.merged_by.pop(origin, None)
            else:
                self.heard_causal[origin] = causal[0]
                self.merged_by[origin] = (causal[1], causal[2])

    def stable(self) -> dict[str, int]:
        """The stable vector: origin -> stamp every counted member has merged up to."""
        out = {origin: f for origin, (_, _, f) in self.heard.items()}
        return self._vector(out, self.frontier)

    def cstable(self) -> dict[str, int]:
        """The causal frontiers: origin -> CF (see the module's doc); a list tombstone
        removed by origin at R may go once CF >= R."""
        out = {origin: self.heard_causal.get(origin, 0) for origin in self.heard}
        return self._vector(out, self.causal_frontier)

    def _vector(self, out: dict[str, int], own: int) -> dict[str, int]:
        for origin in out:
            if origin in self.departed or (origin in self.expelled and not self.rejoin_required):
                # Gone: no state of it is merged any more, and its own stream carries only
                # writes no one removed. Its stamps must not hold collection back for ever.
                out[origin] = GONE
        out[self.me] = own
        return out

    # -- collection ---------------------------------------------------------------------------

    async def collect(self) -> int:
        """One pass (or GC_SLICE_MS of it) of tombstone and metadata collection, in slices
        with a yield between them; the rest of the GC_SLICE_MS goes to hot keys (a busy
        queue: one collect call drops a bounded number of its tombstones)."""
        ks = self.keyspace
        stable = self.stable()
        cstable = self.cstable()
        passes = ks.gc.passes
        work = 0
        started = time.monotonic()
        while ks.gc.passes == passes:
            work += ks.collect(stable, GC_BUDGET, cstable)
            await asyncio.sleep(0)
            if (time.monotonic() - started) * 1000 > GC_SLICE_MS:
                break
        if ks.gc.passes != passes:
            self.collect_passes += 1
        # What is left of the slice goes to keys whose collection stopped at its budget.
        while (time.monotonic() - started) * 1000 <= GC_SLICE_MS and ks.collect_hot(
            stable, cstable
        ):
            await asyncio.sleep(0)
        return work

    # -- figures ------------------------------------------------------------------------------

    def info(self) -> list[tuple[str, str]]:
        return [
            ("gc_horizon_s", f"{self.horizon:g}"),
            ("gc_frontier", str(self.frontier)),
            ("gc_causal_frontier", str(self.causal_frontier)),
            ("gc_stable_origins", str(len(self.heard) + 1)),
            ("gc_counted_members", str(len(self.counted()))),
            ("gc_expelled_members", ",".join(sorted(self.expelled))),
            ("gc_rejoin_required", "1" if self.rejoin_required else "0"),
            ("gc_passes", str(self.collect_passes)),
        ]

    def status(self) -> dict[str, Any]:
        return {
            "horizon_s": self.horizon,
            "frontier": self.frontier,
            "causal_frontier": self.causal_frontier,
            "stable": self.stable(),
            "cstable": self.cstable(),
            "counted": self.counted(),
            "expelled": sorted(self.expelled),
            "rejoin_required": self.rejoin_required,
            "passes": self.collect_passes,
        }
