"""The causal frontier of cluster/watermark.py, on one Watermark with the parts it reads.

b samples (own seq, clock) and, per peer, the sequence of the peer's stream merged with no gap;
D[n], the cursor in the sample every member has acknowledged, goes to n; b's causal frontier is
min(frontier, vouched(D_o[b]) over the counted members o), and 0 while a member has not told it
D for b's current run.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gossipkv.cluster.member import Member, State
from gossipkv.cluster.watermark import GONE, Watermark

RUN = "run-b"


class Bus:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, list[Any]]] = []

    def on_packet(self, kind: str, handler: Any) -> None:
        self.handler = handler

    def send_packet(self, addr: Any, msg: list[Any]) -> None:
        self.sent.append((addr, msg))


def _node() -> tuple[Watermark, Bus, SimpleNamespace, SimpleNamespace]:
    members = {
        n: Member(n, "r", "127.0.0.1", 1, port) for n, port in (("a", 10), ("b", 20), ("c", 30))
    }
    membership = SimpleNamespace(me=members["b"], members=members, listeners=[])
    cursors: dict[str, tuple[str, int]] = {"a": ("run-a", 0), "c": ("run-c", 0)}
    replication = SimpleNamespace(
        seq=0, run_id=RUN, links={}, inbound={}, refuse_snapshot=None,
        merged_cursors=lambda: dict(cursors), cursors=cursors,
    )
    keyspace = SimpleNamespace(clock=SimpleNamespace(last=0))
    bus = Bus()
    wm = Watermark(bus, keyspace, membership, replication, horizon=60)  # type: ignore[arg-type]
    for n in ("a", "c"):
        wm.last_live[n] = 0.0
    return wm, bus, replication, keyspace


def _acked(replication: SimpleNamespace, **contiguous: int) -> None:
    replication.links = {n: SimpleNamespace(contiguous=c) for n, c in contiguous.items()}


def _hear(wm: Watermark, origin: str, epoch: int, merged: int, run: str = RUN) -> None:
    wm._on_packet(["wm", origin, f"run-{origin}", epoch, 1, 1, run, merged], ("127.0.0.1", 0))


def test_the_causal_frontier_is_the_least_vouched_merge() -> None:
    wm, _, replication, keyspace = _node()
    # b writes: seq 5 by clock 100, seq 6 by clock 200; a and c have acknowledged both.
    replication.seq, keyspace.clock.last = 5, 100
    wm.tick()
    replication.seq, keyspace.clock.last = 6, 200
    wm.tick()
    _acked(replication, a=6, c=6)
    wm.tick()
    assert wm.frontier == 200
    assert wm.causal_frontier == 0  # no member has said what of b it merged
    _hear(wm, "a", 1, 6)
    wm.tick()
    assert wm.causal_frontier == 0  # c still has not
    _hear(wm, "c", 1, 5)  # c vouches it merged b up to seq 5: b's writes stamped <= 100
    wm.tick()
    assert wm.causal_frontier == 100
    assert wm.cstable()["b"] == 100 and wm.stable()["b"] == 200
    _hear(wm, "c", 2, 6, run="an-earlier-run")  # about another run of b: no information
    wm.tick()
    assert wm.causal_frontier == 0
    _hear(wm, "c", 3, 6)
    wm.tick()
    assert wm.causal_frontier == 200
    # A member's causal frontier is kept beside its frontier; an old-form packet has none.
    wm._on_packet(["wm", "a", "run-a", 5, 7, 3, RUN, 6], ("127.0.0.1", 0))
    assert wm.cstable()["a"] == 3 and wm.stable()["a"] == 7
    wm._on_packet(["wm", "a", "run-a", 6, 8], ("127.0.0.1", 0))
    assert wm.cstable()["a"] == 0 and wm.stable()["a"] == 8
    wm.departed.add("a")
    assert wm.cstable()["a"] == wm.stable()["a"] == GONE


def test_d_is_the_merge_cursor_of_the_sample_everyone_acknowledged() -> None:
    wm, bus, replication, keyspace = _node()
    cursors = replication.cursors
    replication.seq, keyspace.clock.last = 1, 10
    cursors["a"] = ("run-a", 4)
    wm.tick()
    replication.seq, keyspace.clock.last = 2, 20
    cursors["a"] = ("run-a", 9)  # b merged more of a after writing seq 2
    wm.tick()

    def told(member: str) -> list[Any]:
        port = {"a": 10, "c": 30}[member]
        return [msg for addr, msg in bus.sent if addr == ("127.0.0.1", port)][-1]

    _acked(replication, a=1, c=1)  # b's seq 2 is not everywhere yet
    bus.sent.clear()
    wm.tick()
    assert told("a")[-2:] == ["run-a", 4]  # only what b had merged by its seq-1 sample
    assert told("c")[-2:] == ["run-c", 0]
    _acked(replication, a=2, c=-1)  # c has not synced with this run: nothing is vouched
    bus.sent.clear()
    wm.tick()
    assert told("a")[-2:] == ["", -1]
    _acked(replication, a=2, c=2)
    bus.sent.clear()
    wm.tick()
    assert told("a")[-2:] == ["run-a", 9]
    assert told("a")[:2] == ["wm", "b"]
    members = wm.membership.members
    members["c"].state = State.DEAD  # not told, still counted within the horizon
    bus.sent.clear()
    wm.tick()
    assert ("127.0.0.1", 30) not in [addr for addr, _ in bus.sent]
