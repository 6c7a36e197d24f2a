"""The add-wins OR-set (crdt/orset.py): merge laws, convergence under any delivery order with
duplicates, and the concurrency rule of docs/SEMANTICS.md (SREM removes only observed adds)."""

from __future__ import annotations

import random

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipkv.crdt.hlc import HLC
from gossipkv.crdt.orset import ORSet

MEMBERS = [b"a", b"b", b"c", b"d"]
NODES = ["n1", "n2", "n3"]

Op = tuple[int, str, list[bytes], int]  # (node index, "add"|"rem"|"clear"|"sync", members, peer)

ops_strategy = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from(["add", "add", "rem", "clear", "sync"]),
        st.lists(st.sampled_from(MEMBERS), min_size=1, max_size=3),
        st.integers(0, 2),
    ),
    max_size=25,
)


def _wire(x: ORSet) -> ORSet:
    """Through msgpack, as replication ships it."""
    return ORSet.decode(msgpack.unpackb(msgpack.packb(x.encode())))


def _history(ops: list[Op]) -> tuple[list[ORSet], list[ORSet]]:
    """Run ops on three replicas; 'sync' merges one replica's state into another (so later
    removes observe remote adds). Returns the final states and every delta emitted."""
    clocks = [HLC(lambda: 1000) for _ in NODES]
    states = [ORSet() for _ in NODES]
    deltas: list[ORSet] = []
    for i, kind, members, peer in ops:
        s = states[i]
        if kind == "add":
            d = s.add(clocks[i].now, NODES[i], members)
        elif kind == "rem":
            d = s.remove(members)
        elif kind == "clear":
            d = s.removal()
        else:
            if peer != i:
                s.merge(states[peer].copy())
                clocks[i].observe(states[peer].max_ts())
            continue
        deltas.append(_wire(d))
        s.merge(d)
    return states, deltas


def _join(parts: list[ORSet]) -> ORSet:
    out = ORSet()
    for p in parts:
        out.merge(p.copy())
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops_strategy, st.randoms(use_true_random=False))
def test_any_delivery_order_with_duplicates_converges(ops: list[Op], rnd: random.Random) -> None:
    _, deltas = _history(ops)
    reference = _join(deltas).encode()
    shuffled = deltas + rnd.sample(deltas, len(deltas) // 2)
    rnd.shuffle(shuffled)
    assert _join(shuffled).encode() == reference


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops_strategy, ops_strategy, ops_strategy)
def test_merge_is_commutative_associative_idempotent(
    o1: list[Op], o2: list[Op], o3: list[Op]
) -> None:
    a = _join(_history(o1)[1])
    b = _join(_history(o2)[1])
    c = _join(_history(o3)[1])
    assert _join([a, b]).encode() == _join([b, a]).encode()
    assert _join([_join([a, b]), c]).encode() == _join([a, _join([b, c])]).encode()
    assert _join([a, a]).encode() == a.encode()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops_strategy)
def test_replicas_equal_the_join_of_all_deltas(ops: list[Op]) -> None:
    """Each replica's state, once it has every delta, equals the join of all of them."""
    states, deltas = _history(ops)
    reference = _join(deltas)
    for s in states:
        s.merge(reference)
        assert s.encode() == reference.encode()
        assert sorted(s) == sorted(reference)


def test_add_wins_over_a_concurrent_remove() -> None:
    a, b = ORSet(), ORSet()
    clock_a, clock_b = HLC(lambda: 1), HLC(lambda: 2)
    d0 = a.add(clock_a.now, "a", [b"x"])
    a.merge(d0)
    b.merge(d0)
    # b removes the x it saw while a re-adds x concurrently: a's new add was not observed.
    readd = ORSet()
    readd.merge(a.add(clock_a.now, "a", [b"y"]))
    rem = b.remove([b"x"])
    again = a.removal()  # a clears x ...
    a.merge(again)
    fresh = a.add(clock_a.now, "a", [b"x"])  # ... and adds it back, unseen by b
    for order in ([rem, again, fresh], [fresh, rem, again], [again, fresh, rem]):
        r = _join([d0, *order])
        assert sorted(r) == [b"x"]
    assert clock_b.now() > 0


def test_remove_takes_only_observed_adds() -> None:
    """SREM on b of an x added on a that b never saw leaves a's x in place."""
    a, b = ORSet(), ORSet()
    ca, cb = HLC(lambda: 1), HLC(lambda: 1)
    db = b.add(cb.now, "b", [b"x"])
    b.merge(db)
    da = a.add(ca.now, "a", [b"x"])
    rem = b.remove([b"x"])
    assert sorted(_join([db, rem, da])) == [b"x"]
    assert sorted(_join([da, db, rem])) == [b"x"]
    assert sorted(_join([db, rem])) == []


def test_value_digest_matches_redis_for_a_known_set() -> None:
    """DEBUG DIGEST-VALUE of SADD n 1 2 3 10 -5 007 "with space" x on redis-server 7.0."""
    s = ORSet()
    clock = HLC(lambda: 1)
    s.merge(s.add(clock.now, "a", [b"1", b"2", b"3", b"10", b"-5", b"007", b"with space", b"x"]))
    assert s.value_digest().hex() == "f7936b4f0cec441b82c8fbec0d29106926e2bb97"


@settings(max_examples=100, deadline=None)
@given(
    members=st.lists(st.binary(min_size=1, max_size=3), min_size=1, max_size=20),
    removed=st.lists(st.binary(min_size=1, max_size=3), max_size=8),
)
def test_a_scoped_removal_merges_like_a_full_scan(
    members: list[bytes], removed: list[bytes]
) -> None:
    # An SREM delta names its members, on the wire too, so merging skips the scan; the same
    # delta without its scope is merged by scanning. Both must give the same state.
    clock = iter(range(1, 10_000))
    base = ORSet()
    base.merge(base.add(lambda: next(clock), "a", members))
    delta = base.remove([*removed, *members[:2]])
    scoped, scanned = base.copy(), base.copy()
    wire = _wire(delta)
    assert wire.scope == frozenset(m for m in removed + members[:2] if m in base)
    scoped.merge(wire)
    wire.scope = None
    scanned.merge(wire)
    assert scoped.encode() == scanned.encode()
    assert scoped.digest() == scanned.digest()


def test_spop_picks_draw_every_live_member_once_while_adds_and_removes_interleave() -> None:
    # The pick pool is kept across merges: members added later join it, removed ones are
    # skipped, so popping until empty returns each live member exactly once.
    rnd = random.Random(7)
    clock = iter(range(1, 10_000))
    s = ORSet()
    s.merge(s.add(lambda: next(clock), "a", [b"m%d" % i for i in range(50)]))
    popped: list[bytes] = []
    for _ in range(20):
        m = s.random_member(rnd.randrange, take=True)
        popped.append(m)
        s.merge(s.remove([m]))
    s.merge(s.remove([b"m49", b"m48"]))  # removed behind the pool's back
    s.merge(s.add(lambda: next(clock), "b", [b"new%d" % i for i in range(10)] + [popped[0]]))
    live = set(s)
    drawn = []
    while len(s):
        m = s.random_member(rnd.randrange, take=True)
        assert m in s
        drawn.append(m)
        s.merge(s.remove([m]))
    assert sorted(drawn) == sorted(live)
