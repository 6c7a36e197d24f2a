"""The RGA list's laws: merge is commutative, associative and idempotent, and replicas that
receive the same deltas in any order, repeated, converge to the same list; concurrent pushes
and inserts are all kept, ordered by id the same everywhere; concurrent pops may return the same
element (at-least-once). The visible order kept incrementally always equals the one rebuilt
from the tree.
"""

from __future__ import annotations

import random

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipkv.crdt.rga import RGA

laws = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
NODES = ("a", "b", "c")


class Replica:
    """One node's list with a Lamport clock that observes what it merges, like the HLC."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.state = RGA()
        self.last = 0
        self.sent: list[RGA] = []

    def now(self) -> int:
        self.last += 1
        return self.last

    def apply(self, delta: RGA) -> None:
        self.last = max(self.last, delta.max_ts())
        self.state.merge(delta)

    def local(self, delta: RGA) -> None:
        self.sent.append(RGA.decode(delta.encode()))  # what goes on the wire
        self.apply(delta)

    def act(self, op: int, arg: int) -> None:
        s = self.state
        n = len(s)
        value = b"%s%d" % (self.node.encode(), self.last)
        if op == 0:
            self.local(s.push(self.now, self.node, [value, value + b"'"], left=True))
        elif op == 1:
            self.local(s.push(self.now, self.node, [value], left=False))
        elif op == 2:
            self.local(s.insert(self.now, self.node, arg % (n + 1), value))
        elif op == 3 and n:
            self.local(s.pop(1 + arg % 2, left=bool(arg & 4), stamp=(self.now(), self.node))[0])
        elif op == 4 and n:
            self.local(s.assign(self.now, self.node, arg % n, value + b"=set"))
        elif op == 5 and n:
            # Dated, as commands date them; now and then undated, as the earlier form was.
            stamp = (self.now(), self.node) if arg % 3 else None
            self.local(s.remove([s.ids()[arg % n]], stamp))


def visible(r: RGA) -> list[bytes]:
    return r.values()


def rebuilt(r: RGA) -> list[bytes]:
    return RGA.decode(msgpack.unpackb(msgpack.packb(r.encode()))).values()


steps = st.lists(
    st.tuples(st.sampled_from(NODES), st.integers(0, 5), st.integers(0, 50),
              st.booleans()),
    max_size=40,
)


def run(history: list[tuple[str, int, int, bool]]) -> dict[str, Replica]:
    """Nodes act; after a step flagged ``sync`` one node catches up with another."""
    replicas = {n: Replica(n) for n in NODES}
    for node, op, arg, sync in history:
        r = replicas[node]
        r.act(op, arg)
        assert visible(r.state) == rebuilt(r.state)
        if sync:
            other = replicas[NODES[(NODES.index(node) + 1 + arg) % 3]]
            for d in r.sent:
                other.apply(RGA.decode(d.encode()))
    return replicas


@laws
@given(steps, st.randoms(use_true_random=False))
def test_any_delivery_order_with_duplicates_converges(
    history: list[tuple[str, int, int, bool]], rnd: random.Random
) -> None:
    replicas = run(history)
    deltas = [d for r in replicas.values() for d in r.sent]
    finals = []
    for _ in range(3):
        target = RGA()
        shuffled = deltas + rnd.sample(deltas, len(deltas) // 2)  # duplicates
        rnd.shuffle(shuffled)
        for d in shuffled:
            target.merge(d)
            assert visible(target) == rebuilt(target)
        finals.append(target)
    for r in replicas.values():  # the replicas themselves catch up with everything
        for d in deltas:
            r.apply(d)
        finals.append(r.state)
    encodings = {msgpack.packb(f.encode()) for f in finals}
    assert len(encodings) == 1
    assert len({tuple(visible(f)) for f in finals}) == 1
    assert len({f.value_digest() for f in finals}) == 1


@laws
@given(steps, steps, steps)
def test_merge_is_commutative_associative_idempotent(
    h1: list[tuple[str, int, int, bool]],
    h2: list[tuple[str, int, int, bool]],
    h3: list[tuple[str, int, int, bool]],
) -> None:
    # Three states of one history's nodes: each replica's state after its own steps.
    replicas = run(h1 + h2 + h3)
    a, b, c = (replicas[n].state for n in NODES)

    def join(x: RGA, y: RGA) -> RGA:
        z = x.copy()
        z.merge(y)
        return z

    def enc(x: RGA) -> bytes:
        return bytes(msgpack.packb(x.encode()))

    assert enc(join(a, b)) == enc(join(b, a))
    assert visible(join(a, b)) == visible(join(b, a))
    assert enc(join(join(a, b), c)) == enc(join(a, join(b, c)))
    assert enc(join(a, a)) == enc(a)
    assert visible(join(join(a, b), b)) == visible(join(a, b))


def test_concurrent_pushes_are_all_kept_in_id_order() -> None:
    a, b = Replica("a"), Replica("b")
    base = a.state.push(a.now, "a", [b"x"], left=False)
    a.local(base)
    b.apply(base)
    a.local(a.state.push(a.now, "a", [b"a1"], left=False))
    b.local(b.state.push(b.now, "b", [b"b1"], left=False))
    a.local(a.state.push(a.now, "a", [b"a0"], left=True))
    b.local(b.state.push(b.now, "b", [b"b0"], left=True))
    for d in b.sent:
        a.apply(d)
    for d in a.sent:
        b.apply(d)
    # Same ids on both sides (3 at "a" and "b"): ties break by node id, greater first.
    assert a.state.values() == b.state.values() == [b"b0", b"a0", b"x", b"b1", b"a1"]


def test_concurrent_pops_return_the_same_element() -> None:
    a, b = Replica("a"), Replica("b")
    base = a.state.push(a.now, "a", [b"1", b"2"], left=False)
    a.local(base)
    b.apply(base)
    delta_a, popped_a = a.state.pop(1, left=True)
    delta_b, popped_b = b.state.pop(1, left=True)
    assert popped_a == popped_b == [b"1"]  # at-least-once: both clients got it
    a.local(delta_a)
    b.local(delta_b)
    a.apply(delta_b)
    b.apply(delta_a)
    assert a.state.values() == b.state.values() == [b"2"]


def test_lset_is_last_writer_wins_and_removal_beats_it() -> None:
    a, b = Replica("a"), Replica("b")
    base = a.state.push(a.now, "a", [b"v"], left=False)
    a.local(base)
    b.apply(base)
    set_a = a.state.assign(a.now, "a", 0, b"from-a")
    set_b = b.state.assign(b.now, "b", 0, b"from-b")
    a.local(set_a)
    b.local(set_b)
    a.apply(set_b)
    b.apply(set_a)
    assert a.state.values() == b.state.values() == [b"from-b"]  # same stamp: "b" > "a"
    removal = a.state.removal()
    b.local(b.state.assign(b.now, "b", 0, b"later"))
    b.apply(removal)
    assert b.state.values() == []
    assert not b.state.alive()
