"""Rejoining after the GC horizon: which side of a separation drops its state, and how.

A member expelled from the GC watermark (cluster/watermark.py) has its state refused for good:
it may hold writes whose removals the others have collected. To take part again it must drop
that state and rejoin by snapshot, as an empty restart would. This module decides which side
does so and, with ``[cluster] rejoin = "auto"``, does it in-process.

Who. Every tick a node tells each live member whose current run it refuses
``["rj", me, my run, that member's run, my component]``; its component is itself and the live
members it neither refuses nor is refused by. A node that hears this about its own current run
decides (run ids on both ends make sure that a refusal of an earlier run, or by one, never
counts; an anti-entropy refusal, which names no run, is not used):

- refused by a member it does not refuse: it is the one that was away, so it rejoins;
- refused only by members it refuses too (each side expelled the other: a split longer than
  the horizon): the smaller component rejoins; on equal sizes, the one whose smallest member
  name is the greater. Both sides compare the same two name lists, so one side rejoins;
- refusing members that do not refuse it: they were the ones away; it keeps its state and
  readmits them once they come back in a new run (``Watermark.refused``).

A member that merely refuses another never decides to rejoin on that alone: the node that was
stopped (not cut off) past the horizon expelled nobody, and the side that kept running must not
drop its state for it.

How, in-process ("manual" stops at reporting ``gc_rejoin_required:1``):

1. clients get ``-LOADING`` from now on, so no write is acknowledged that step 3 could lose;
2. its writes still in the replication backlog go out: peers merge an expelled member's ordered
   stream of its own writes. It waits (at most FLUSH_TIMEOUT) until every linked peer has
   acknowledged the last one;
3. with anti-entropy paused, every stream stops, the keyspace is dropped without writing a
   removal (``Keyspace.drop_all``), the watermark forgets its samples and expulsions, and a new
   replication run starts: a new run id, by which peers readmit it, and a new counter actor;
4. the links reconnect as in a MEET: each peer finds no cursor of the new run and gets its
   (empty) snapshot, and each peer's own link finds no cursor here and sends its snapshot. The
   dropped state is freed in slices meanwhile;
5. once every peer live at step 3 has delivered its snapshot (or LOAD_TIMEOUT has passed),
   clients are served again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

from gossipkv.cluster.antientropy import AntiEntropy
from gossipkv.cluster.bus import Addr, ClusterBus
from gossipkv.cluster.member import State
from gossipkv.cluster.membership import Membership
from gossipkv.cluster.replication import Replication
from gossipkv.cluster.watermark import Watermark
from gossipkv.store.keyspace import Keyspace, Leftovers

log = logging.getLogger("gossipkv.gc")

KIND = "rj"
LOADING = "LOADING gossipkv is rejoining the cluster"
FLUSH_TIMEOUT = 5.0  # seconds peers get to acknowledge the backlog before the state is dropped
LOAD_TIMEOUT = 60.0  # seconds clients wait at most for the peers' snapshots
LOAD_POLL = 0.05
FREE_BUDGET = 2000  # dropped entries freed per event-loop turn
NOTICE_TICKS = 3  # a refusal not repeated within this many ticks is forgotten


@dataclass(slots=True)
class Refusal:
    """A member refuses this node's current run."""

    run: str  # the refuser's run
    component: tuple[str, ...]  # its side of the split
    at: float


def beats(theirs: Collection[str], mine: Collection[str]) -> bool:
    """Whether the component ``theirs`` keeps its state against ``mine``: the larger one
    keeps it; on equal sizes, the one holding the smaller smallest name."""
    if len(theirs) != len(mine):
        return len(theirs) > len(mine)
    return min(theirs) < min(mine)


class Rejoin:
    """Refusal notices, the decision, and (mode "auto") the in-process rejoin."""

    def __init__(
        self,
        bus: ClusterBus,
        keyspace: Keyspace,
        membership: Membership,
        replication: Replication,
        watermark: Watermark,
        antientropy: AntiEntropy | None = None,
        mode: str = "auto",  # or "manual" (config.REJOIN_MODES)
    ) -> None:
        self.bus = bus
        self.keyspace = keyspace
        self.membership = membership
        self.replication = replication
        self.watermark = watermark
        self.antientropy = antientropy
        self.mode = mode
        self.me = membership.me.name
        self.refusals: dict[str, Refusal] = {}
        self.rejoins = 0
        self.loading = False
        # Told LOADING when clients must wait, "" when they are served again (node.py).
        self.on_loading: Callable[[str], None] = _ignore
        self._loop_task: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        bus.on_packet(KIND, self._on_packet)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="rejoin")

    async def stop(self) -> None:
        for task in (self._loop_task, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._loop_task = self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("event=rejoin_tick_failed")
            await asyncio.sleep(self.watermark.interval)

    def tick(self) -> None:
        """Tell refused members so, decide, and start a rejoin when it is this node's."""
        if self._task is not None and not self._task.done():
            return
        wm = self.watermark
        if wm.rejoin_required:
            self._start()  # again, when one failed
            return
        self._notify()
        if self.must_rejoin():
            wm.rejoin_required = True
            log.warning(
                "event=gc_rejoin_required refused_by=%s mode=%s%s",
                ",".join(sorted(self.refusals)), self.mode,
                "" if self.mode == "auto" else ": restart this node to rejoin by snapshot",
            )
            self._start()

    def _start(self) -> None:
        if self.mode == "auto":
            self._task = asyncio.get_running_loop().create_task(self._rejoin(), name="rejoining")

    # -- who rejoins --------------------------------------------------------------------------

    def _live(self) -> dict[str, Addr]:
        return {
            name: m.cluster_addr for name, m in self.membership.members.items()
            if m.state == State.ALIVE and name != self.me
        }

    def component(self, refusing: Collection[str]) -> set[str]:
        """This node and the live members it neither refuses nor is refused by."""
        wm = self.watermark
        return {self.me} | {
            n for n in self._live() if not wm.stale(n) and n not in refusing
        }

    def _notify(self) -> None:
        wm = self.watermark
        mine: list[str] | None = None
        for name, addr in self._live().items():
            if wm.stale(name):
                if mine is None:
                    mine = sorted(self.component(self._valid()))
                run = wm.expelled[name]
                self.bus.send_packet(addr, [KIND, self.me, self.replication.run_id, run, mine])

    def _on_packet(self, msg: list[Any], addr: Addr) -> None:
        try:
            _, sender, run, target, component = msg
            sender, run, target = str(sender), str(run), str(target)
            names = tuple(str(n) for n in component)
        except (TypeError, ValueError):
            return
        if target == self.replication.run_id and names and sender != self.me:
            self.refusals[sender] = Refusal(run, names, time.monotonic())

    def _valid(self) -> dict[str, Refusal]:
        """The refusals still in force: repeated lately, by a live member, in its run now."""
        now = time.monotonic()
        ttl = NOTICE_TICKS * max(self.watermark.interval, 1.0)
        live = self._live()
        out: dict[str, Refusal] = {}
        for name, r in list(self.refusals.items()):
            current, _ = self.replication.inbound_cursor(name)
            if now - r.at > ttl or (r.run and current and r.run != current):
                del self.refusals[name]
            elif name in live:
                out[name] = r
        return out

    def must_rejoin(self) -> bool:
        """Whether this node is the side that drops its state (see the module docstring)."""
        refusals = self._valid()
        if not refusals:
            return False
        wm = self.watermark
        if any(not wm.stale(name) for name in refusals):
            return True  # refused by a member it never expelled: this node was away
        mine = self.component(refusals)
        return any(beats(r.component, mine) for r in refusals.values())

    # -- the rejoin ---------------------------------------------------------------------------

    async def _rejoin(self) -> None:
        started = time.monotonic()
        repl = self.replication
        self.loading = True
        self.on_loading(LOADING)
        try:
            refused_by = ",".join(sorted(self.refusals))
            log.warning(
                "event=gc_rejoin_start refused_by=%s run_id=%s seq=%d keys=%d",
                refused_by, repl.run_id, repl.seq, len(self.keyspace),
            )
            linked = sum(1 for link in repl.links.values() if link.task is not None)
            acked = 0
            if linked:
                pending = repl.wait(linked, int(FLUSH_TIMEOUT * 1000))
                acked = await pending if isinstance(pending, asyncio.Future) else pending
            if acked < linked:
                log.warning(
                    "event=gc_rejoin_flush_incomplete peers=%d acked=%d seq=%d",
                    linked, acked, repl.seq,
                )
            dropped: list[Leftovers] = []
            async with self._paused():
                await repl.new_run(lambda: dropped.append(self._drop()))
            peers = list(self._live())
            for old in dropped:
                while not old.done:
                    old.free(FREE_BUDGET)
                    await asyncio.sleep(0)
            deadline = time.monotonic() + LOAD_TIMEOUT
            while time.monotonic() < deadline:
                live = self._live()
                if all(repl.synced(p) for p in peers if p in live):
                    break
                await asyncio.sleep(LOAD_POLL)
            else:
                log.warning("event=gc_rejoin_load_timeout waited_s=%g", LOAD_TIMEOUT)
            self.rejoins += 1
            log.warning(
                "event=gc_rejoined refused_by=%s run_id=%s peers=%s keys=%d flushed=%d/%d "
                "ms=%.1f",
                refused_by, repl.run_id, ",".join(peers), len(self.keyspace), acked, linked,
                (time.monotonic() - started) * 1000,
            )
        finally:
            self.loading = False
            self.on_loading("")

    def _drop(self) -> Leftovers:
        """Drop the keyspace and forget per-run state; runs while no stream is open."""
        old = self.keyspace.drop_all()
        self.watermark.reset()
        self.refusals.clear()
        return old

    @contextlib.asynccontextmanager
    async def _paused(self) -> AsyncIterator[None]:
        if self.antientropy is None:
            yield
        else:
            async with self.antientropy.paused():
                yield

    # -- figures ------------------------------------------------------------------------------

    def info(self) -> list[tuple[str, str]]:
        return [
            ("gc_rejoin_mode", self.mode),
            ("gc_rejoining", "1" if self.loading else "0"),
            ("gc_rejoins", str(self.rejoins)),
        ]

    def status(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "rejoining": self.loading,
            "rejoins": self.rejoins,
            "refused_by": sorted(self._valid()),
        }


def _ignore(message: str) -> None:
    return None
