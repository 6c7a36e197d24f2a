"""The hash OR-map's laws: merge is commutative, associative and idempotent, and replicas that
receive the same deltas in any order, repeated, converge; plus the concurrency rules of
docs/SEMANTICS.md (HSET wins over a concurrent HDEL, concurrent HSETs by LWW, an increment
concurrent with HDEL or HSET lands on top of it).
"""

from __future__ import annotations

import random
from decimal import Decimal

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipkv.crdt.ormap import ORMap

laws = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
NODES = ("a", "b", "c")
FIELDS = (b"f0", b"f1", b"f2")


class Replica:
    """One node's hash with a Lamport clock that observes what it merges, like the HLC."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.state = ORMap()
        self.last = 0
        self.sent: list[ORMap] = []

    def now(self) -> int:
        self.last += 1
        return self.last

    def apply(self, delta: ORMap) -> None:
        self.last = max(self.last, delta.max_ts())
        self.state.merge(delta)

    def local(self, delta: ORMap) -> None:
        self.sent.append(wire(delta))
        self.apply(delta)

    def act(self, op: int, arg: int) -> None:
        s = self.state
        name = FIELDS[arg % len(FIELDS)]
        value = b"%s%d" % (self.node.encode(), self.last)
        if op == 0:
            self.local(s.assign(self.now, self.node, {name: value}))
        elif op == 1:
            other = FIELDS[(arg + 1) % len(FIELDS)]
            self.local(s.assign(self.now, self.node, {name: b"%d" % arg, other: value}))
        elif op == 2:
            self.local(s.remove([name, FIELDS[(arg + 2) % len(FIELDS)]]))
        elif op == 3:
            self.local(s.increment(self.now(), self.node, name, arg - 3))
        elif op == 4:
            self.local(s.increment(self.now(), self.node, name, Decimal(arg) / 4))
        elif op == 5 and s.alive():
            self.local(s.removal())


def wire(m: ORMap) -> ORMap:
    """Through msgpack, as replication ships it."""
    return ORMap.decode(msgpack.unpackb(msgpack.packb(m.encode())))


def enc(m: ORMap) -> bytes:
    """The state's encoding without the scope hint a delta carries (a merge drops it)."""
    return bytes(msgpack.packb(m.encode()[:2]))


def joined(*states: ORMap) -> ORMap:
    out = ORMap()
    for s in states:
        out.merge(wire(s))
    return out


steps = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 5), st.integers(0, 11),
              st.integers(0, 3)),
    max_size=40,
)


def run(history: list[tuple[int, int, int, int]]) -> list[Replica]:
    """Nodes act and, now and then, receive a random earlier delta of another node."""
    replicas = [Replica(n) for n in NODES]
    for who, op, arg, gossip in history:
        r = replicas[who]
        r.act(op, arg)
        if gossip:
            src = replicas[(who + gossip) % 3]
            if src.sent:
                r.apply(wire(src.sent[(arg * 7) % len(src.sent)]))
    return replicas


@laws
@given(steps)
def test_merge_laws(history: list[tuple[int, int, int, int]]) -> None:
    """On the states of one history's replicas (a dot names one write in a real history)."""
    replicas = run(history)
    deltas = [d for r in replicas for d in r.sent]
    triples = [tuple(r.state for r in replicas), tuple(deltas[-3:])]
    for a, b, c in (t for t in triples if len(t) == 3):
        assert enc(merged(a, b)) == enc(merged(b, a))
        assert enc(merged(merged(a, b), c)) == enc(merged(a, merged(b, c)))
        assert enc(merged(a, a)) == enc(a)


def merged(x: ORMap, y: ORMap) -> ORMap:
    out = wire(x)
    out.merge(wire(y))
    return out


@laws
@given(steps, st.integers(0, 2**32))
def test_deltas_in_any_order_with_duplicates_converge(
    history: list[tuple[int, int, int, int]], seed: int
) -> None:
    replicas = run(history)
    deltas = [d for r in replicas for d in r.sent]
    rng = random.Random(seed)
    finals = []
    for _ in range(3):
        order = deltas + rng.sample(deltas, len(deltas) // 2)  # with duplicates
        rng.shuffle(order)
        m = ORMap()
        for d in order:
            m.merge(wire(d))
        finals.append(m)
    reference = joined(*[r.state for r in replicas])
    for m in finals:
        assert dict(m.items()) == dict(reference.items())
        assert m.value_digest() == reference.value_digest()
        assert m.alive() == reference.alive()
    # Each replica, once it has everyone's deltas, reads the same as well.
    for r in replicas:
        for d in deltas:
            r.apply(wire(d))
        assert dict(r.state.items()) == dict(reference.items())


@laws
@given(steps)
def test_scoped_delta_merge_equals_full_merge(history: list[tuple[int, int, int, int]]) -> None:
    """A delta's scope only saves work: dropping it gives the same join."""
    replicas = run(history)
    fast = ORMap()
    full = ORMap()
    for r in replicas:
        for d in r.sent:
            fast.merge(wire(d))
            unscoped = wire(d)
            unscoped.scope = None
            full.merge(unscoped)
    assert enc(fast) == enc(full)


def test_deltas_carry_their_scope_on_the_wire_and_states_do_not() -> None:
    a, _ = pair()
    hset = a.state.assign(a.now, "a", {b"f": b"2", b"new": b"3"})
    hdel = a.state.remove([b"g", b"missing"])
    assert wire(hset).scope == {b"f", b"new"}
    assert wire(hdel).scope == {b"g"}
    a.local(hset)
    assert a.state.scope is None


# -- the concurrency rules of docs/SEMANTICS.md ----------------------------------------------------


def pair() -> tuple[Replica, Replica]:
    a, b = Replica("a"), Replica("b")
    a.local(a.state.assign(a.now, "a", {b"f": b"1", b"g": b"x"}))
    for d in a.sent:
        b.apply(wire(d))
    return a, b


def exchange(a: Replica, b: Replica) -> None:
    for d in list(a.sent):
        b.apply(wire(d))
    for d in list(b.sent):
        a.apply(wire(d))
    assert enc(a.state) == enc(b.state)


def test_hset_wins_over_concurrent_hdel() -> None:
    a, b = pair()
    a.local(a.state.remove([b"f"]))
    b.local(b.state.assign(b.now, "b", {b"f": b"2"}))
    exchange(a, b)
    assert a.state.get(b"f") == b"2"


def test_hdel_removes_what_it_observed() -> None:
    a, b = pair()
    b.local(b.state.remove([b"f", b"g"]))
    exchange(a, b)
    assert not a.state.alive() and len(a.state) == 0


def test_concurrent_hsets_last_writer_wins() -> None:
    a, b = pair()
    a.local(a.state.assign(a.now, "a", {b"f": b"from-a"}))
    b.local(b.state.assign(b.now, "b", {b"f": b"from-b"}))  # same ts: node id "b" > "a"
    exchange(a, b)
    assert a.state.get(b"f") == b"from-b"
    a.local(a.state.assign(a.now, "a", {b"f": b"after"}))  # observes both writes
    exchange(a, b)
    assert a.state.get(b"f") == b"after"
    assert len(a.state.encode()[0][1][1]) == 1  # one write left for the field


def test_increment_concurrent_with_hdel_keeps_only_the_unobserved_part() -> None:
    a, b = pair()
    a.local(a.state.increment(a.now(), "a", b"n", 5))
    exchange(a, b)
    b.local(b.state.remove([b"n"]))
    a.local(a.state.increment(a.now(), "a", b"n", 2))
    exchange(a, b)
    assert a.state.get(b"n") == b"2"


def test_increment_concurrent_with_hset_lands_on_top() -> None:
    a, b = pair()
    a.local(a.state.increment(a.now(), "a", b"f", 10))
    exchange(a, b)
    assert a.state.get(b"f") == b"11"
    b.local(b.state.assign(b.now, "b", {b"f": b"100"}))
    a.local(a.state.increment(a.now(), "a", b"f", 1))
    exchange(a, b)
    assert a.state.get(b"f") == b"101"


def test_concurrent_increments_all_count() -> None:
    a, b = pair()
    a.local(a.state.increment(a.now(), "a", b"f", 3))
    b.local(b.state.increment(b.now(), "b", b"f", Decimal("0.5")))
    exchange(a, b)
    assert a.state.get(b"f") == b"4.5"
    assert a.state.exact_number(b"f") == Decimal("4.5")


def test_key_removal_observes_everything() -> None:
    a, b = pair()
    a.local(a.state.increment(a.now(), "a", b"n", 5))
    exchange(a, b)
    b.local(b.state.removal())
    a.local(a.state.assign(a.now, "a", {b"new": b"v"}))
    exchange(a, b)
    assert dict(a.state.items()) == {b"new": b"v"}


def test_value_digest_matches_redis_debug_digest_value() -> None:
    """DEBUG DIGEST-VALUE of HSET h a 1 b 2 on redis-server 7.0 (order-independent)."""
    m = ORMap()
    clock = iter(range(1, 100))
    m.merge(m.assign(lambda: next(clock), "a", {b"b": b"2", b"a": b"1"}))
    other = ORMap()
    other.merge(other.assign(lambda: next(clock), "b", {b"a": b"1", b"b": b"2"}))
    assert m.value_digest() == other.value_digest()
    assert m.value_digest().hex() == REDIS_DIGEST_VALUE_H


REDIS_DIGEST_VALUE_H = "6c8f22b3bf510fdcfd6122dd0f908a80e88243bf"
