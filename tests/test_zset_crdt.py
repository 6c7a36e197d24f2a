"""The sorted set CRDT's laws: merge is commutative, associative and idempotent, replicas that
receive the same deltas in any order, repeated, converge; one replica alone behaves as Redis's
zset; and the concurrency rules of docs/SEMANTICS.md (ZADD wins over a concurrent ZREM, concurrent
ZADDs by LWW, concurrent ZINCRBYs add up, an increment concurrent with a ZADD lands on top of it,
a ZREM concurrent with a ZINCRBY keeps only the increment it did not see).
"""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipkv.crdt.zset import ZSet, sort_key
from tests.servers import ServerProcess
from tests.test_random_sequences import run_sequence

laws = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
NODES = ("a", "b", "c")
MEMBERS = (b"m0", b"m1", b"m2", b"m3")


def wire(z: ZSet) -> ZSet:
    """What a peer receives: the delta through msgpack."""
    return ZSet.decode(msgpack.unpackb(msgpack.packb(z.encode())))


def canon(z: ZSet) -> bytes:
    """A state's canonical form; deltas merged into an empty state to compare as states."""
    s = ZSet()
    s.merge(z)
    return bytes(msgpack.packb(s.encode()))


class Replica:
    """One node's zset with a Lamport clock that observes what it merges, like the HLC."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.state = ZSet()
        self.last = 0
        self.sent: list[ZSet] = []

    def now(self) -> int:
        self.last += 1
        return self.last

    def apply(self, delta: ZSet) -> None:
        self.last = max(self.last, delta.max_ts())
        self.state.merge(delta)

    def local(self, delta: ZSet) -> None:
        self.sent.append(wire(delta))
        self.apply(delta)

    def act(self, op: int, arg: int) -> None:
        s = self.state
        member = MEMBERS[arg % len(MEMBERS)]
        if op == 0:
            self.local(s.add(member, float(arg) / 4, self.now(), self.node))
        elif op == 1:
            d = s.add(member, float(arg), self.now(), self.node)
            s.add(MEMBERS[(arg + 1) % len(MEMBERS)], -float(arg), self.now(), self.node, d)
            self.local(d)
        elif op == 2:
            self.local(s.incr(member, float(arg - 3) / 2, self.now(), self.node))
        elif op == 3:
            self.local(s.remove([member, MEMBERS[(arg + 2) % len(MEMBERS)]]))
        elif op == 4 and s.alive():
            self.local(s.removal())


ops = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 4), st.integers(0, 7), st.booleans()),
    max_size=30,
)


def run(history: list[tuple[int, int, int, bool]]) -> list[Replica]:
    """Replicas act; after a step, a replica may first receive what another has sent so far."""
    replicas = [Replica(n) for n in NODES]
    for who, op, arg, sync in history:
        r = replicas[who]
        if sync:
            other = replicas[(who + 1) % len(replicas)]
            for d in other.sent:
                r.apply(wire(d))
        r.act(op, arg)
    return replicas


@laws
@given(ops, st.randoms(use_true_random=False))
def test_any_delivery_order_with_duplicates_converges(
    history: list[tuple[int, int, int, bool]], rnd: random.Random
) -> None:
    replicas = run(history)
    deltas = [d for r in replicas for d in r.sent]
    finals: list[bytes] = []
    for _ in range(3):
        order = deltas + rnd.sample(deltas, k=len(deltas) // 2)
        rnd.shuffle(order)
        z = ZSet()
        for d in order:
            z.merge(wire(d))
        finals.append(canon(z))
    # The replicas themselves, once they have everything, agree too.
    for r in replicas:
        for d in deltas:
            r.apply(wire(d))
        finals.append(canon(r.state))
    assert len(set(finals)) == 1


@laws
@given(ops, ops, ops)
def test_merge_is_commutative_associative_idempotent(
    h1: list[tuple[int, int, int, bool]],
    h2: list[tuple[int, int, int, bool]],
    h3: list[tuple[int, int, int, bool]],
) -> None:
    # Three states (and deltas) drawn from one history so that every dot names one write.
    replicas = run(h1 + h2 + h3)
    a, b, c = (r.state for r in replicas)
    d = replicas[0].sent[-1] if replicas[0].sent else ZSet(delta=True)

    def join(x: ZSet, y: ZSet) -> ZSet:
        j = x.copy()
        j.merge(wire(y))
        return j

    assert canon(join(a, b)) == canon(join(b, a))
    assert canon(join(join(a, b), c)) == canon(join(a, join(b, c)))
    assert canon(join(a, a)) == canon(a)
    assert canon(join(a, d)) == canon(join(d, a))
    assert canon(join(join(a, d), d)) == canon(join(a, d))
    # A delta read as a state (its copy) joins to the same result as the delta itself.
    via_delta = a.copy()
    via_delta.merge(d)
    assert canon(via_delta) == canon(join(a, d.copy()))


@laws
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 7), st.integers(-6, 6)), max_size=40))
def test_one_replica_is_a_redis_zset(steps: list[tuple[int, int, int]]) -> None:
    """Sequential writes read as Redis computes them: scores, order, ranks."""
    r = Replica("a")
    model: dict[bytes, float] = {}
    for op, arg, n in steps:
        member = MEMBERS[arg % len(MEMBERS)]
        if op == 0:
            r.local(r.state.add(member, n / 3, r.now(), "a"))
            model[member] = n / 3
        elif op == 1:
            r.local(r.state.incr(member, n / 7, r.now(), "a"))
            model[member] = model[member] + n / 7 if member in model else n / 7
        elif op == 2:
            r.local(r.state.remove([member]))
            model.pop(member, None)
        else:
            if r.state.alive():
                r.local(r.state.removal())
            model.clear()
    z = r.state
    assert {m: z.score(m) for m in MEMBERS if z.score(m) is not None} == model
    expected = sorted((score, m) for m, score in model.items())
    assert list(z.items()) == expected
    for rank, (_, m) in enumerate(expected):
        assert z.rank(m) == rank
    assert z.alive() == bool(model)


def replicas_after(*setup: tuple[str, str, float]) -> tuple[Replica, Replica]:
    """Two replicas that both saw the writes of ``setup`` (node, op, amount) on member m."""
    a, b = Replica("a"), Replica("b")
    by = {"a": a, "b": b}
    for node, op, amount in setup:
        r = by[node]
        d = r.state.add(b"m", amount, r.now(), node) if op == "add" else r.state.incr(
            b"m", amount, r.now(), node
        )
        r.local(d)
        other = b if r is a else a
        other.apply(wire(d))
    return a, b


def exchange(a: Replica, b: Replica, da: ZSet, db: ZSet) -> None:
    a.local(da)
    b.local(db)
    a.apply(wire(db))
    b.apply(wire(da))
    assert canon(a.state) == canon(b.state)


def test_zadd_wins_over_concurrent_zrem() -> None:
    a, b = replicas_after(("a", "add", 1.0))
    exchange(a, b, a.state.add(b"m", 5.0, a.now(), "a"), b.state.remove([b"m"]))
    assert a.state.score(b"m") == 5.0


def test_concurrent_zadds_last_writer_wins() -> None:
    a, b = replicas_after(("a", "add", 1.0))
    b.last = a.last + 10  # b's write is later
    exchange(a, b, a.state.add(b"m", 2.0, a.now(), "a"), b.state.add(b"m", 3.0, b.now(), "b"))
    assert a.state.score(b"m") == 3.0


def test_concurrent_zincrbys_add_up() -> None:
    a, b = replicas_after(("a", "add", 10.0))
    exchange(a, b, a.state.incr(b"m", 1.0, a.now(), "a"), b.state.incr(b"m", 2.0, b.now(), "b"))
    assert a.state.score(b"m") == 13.0


def test_zincrby_concurrent_with_zadd_lands_on_top() -> None:
    a, b = replicas_after(("a", "add", 10.0))
    exchange(a, b, a.state.add(b"m", 100.0, a.now(), "a"), b.state.incr(b"m", 2.0, b.now(), "b"))
    assert a.state.score(b"m") == 102.0


def test_zrem_concurrent_with_zincrby_keeps_only_the_unobserved_increment() -> None:
    # m = 10 + 4 (an increment both saw); then A removes m while B increments it by 2.
    a, b = replicas_after(("a", "add", 10.0), ("b", "incr", 4.0))
    assert a.state.score(b"m") == 14.0
    exchange(a, b, a.state.remove([b"m"]), b.state.incr(b"m", 2.0, b.now(), "b"))
    assert a.state.score(b"m") == 2.0
    assert len(a.state) == 1


def test_zadd_after_increments_collapses_records() -> None:
    a, _ = replicas_after(("a", "add", 1.0), ("a", "incr", 1.0), ("b", "incr", 1.0))
    assert len(a.state.records(b"m")) == 3
    assert a.state.score(b"m") == 3.0
    assert len(a.state.members[b"m"]) == 3
    a.local(a.state.add(b"m", 7.0, a.now(), "a"))
    assert a.state.records(b"m") == ((a.last, "a", 7.0, True),)


def test_digest_matches_redis() -> None:
    """DEBUG DIGEST-VALUE on redis-server 7.0 of ZADD z 1 a 2 b, and of a zset with 0.1, inf,
    0, a large integral score and a negative one (the "%.17g" spelling of each)."""
    z = ZSet()
    d = ZSet(delta=True)
    for i, (m, score) in enumerate([(b"a", 1.0), (b"b", 2.0)]):
        z.add(m, score, i + 1, "n", d)
    z.merge(d)
    assert z.value_digest().hex() == "4de4c922f0624dd27cb8fc6bbf04d3d6df72c877"
    more = [(b"c", 0.1), (b"d", float("inf")), (b"e", 0.0), (b"f", 123456789012345678.0),
            (b"g", -2.5)]
    d = ZSet(delta=True)
    for i, (m, score) in enumerate(more):
        z.add(m, score, i + 10, "n", d)
    z.merge(d)
    assert z.value_digest().hex() == "d14b9313fa6abfab0d228f16d4ba03398631eb6c"


@laws
@given(
    st.lists(
        st.tuples(st.floats(allow_nan=False), st.binary(max_size=6)), min_size=2, max_size=20
    )
)
def test_index_keys_sort_as_redis_orders_score_then_member(
    entries: list[tuple[float, bytes]],
) -> None:
    by_key = sorted(entries, key=lambda e: sort_key(*e))
    assert [(s + 0.0, m) for s, m in by_key] == sorted((s + 0.0, m) for s, m in entries)


# -- one node against redis-server: hypothesis-drawn command sequences --------------------------

ZKEYS = ("z", "y", "s")
zkey = st.sampled_from(ZKEYS)
zmember = st.sampled_from(["a", "b", "c", "d", "e", "aa", ""])
zscore = st.one_of(
    st.integers(-5, 5).map(str),
    st.sampled_from(["0.1", "-2.5", "1e3", "inf", "-inf", "+inf", "x", "nan", "0x10", "1e400"]),
)
zbound = st.one_of(
    zscore, st.sampled_from(["(1", "(-2.5", "(inf", "-inf", "+inf", "(", ""])
)
lexbound = st.sampled_from(["-", "+", "[a", "(a", "[c", "(d", "[", "a", "(aa"])
rank = st.integers(-6, 6).map(str)
zadd_flags = st.lists(st.sampled_from(["NX", "XX", "GT", "LT", "CH", "INCR"]), max_size=2)
pairs = st.lists(st.tuples(zscore, zmember), min_size=1, max_size=3)
limit = st.one_of(st.just(()), st.tuples(st.just("LIMIT"), rank, rank))
withscores = st.sampled_from([(), ("WITHSCORES",)])


def _flat(*parts: object) -> tuple[str, ...]:
    out: list[str] = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
        else:
            for q in p:  # type: ignore[attr-defined]
                out.extend(_flat(q))
    return tuple(out)


zcommand = st.one_of(
    st.builds(lambda k, f, ps: _flat("ZADD", k, f, ps), zkey, zadd_flags, pairs),
    st.builds(lambda k, s, m: ("ZINCRBY", k, s, m), zkey, zscore, zmember),
    st.builds(lambda k, ms: _flat("ZREM", k, ms), zkey, st.lists(zmember, min_size=1, max_size=3)),
    st.builds(lambda k, m: ("ZSCORE", k, m), zkey, zmember),
    st.builds(lambda k, m: ("ZRANK", k, m), zkey, zmember),
    st.builds(lambda k, m: ("ZREVRANK", k, m), zkey, zmember),
    st.builds(lambda k: ("ZCARD", k), zkey),
    st.builds(lambda k, a, b: ("ZCOUNT", k, a, b), zkey, zbound, zbound),
    st.builds(lambda k, a, b: ("ZLEXCOUNT", k, a, b), zkey, lexbound, lexbound),
    st.builds(lambda k, a, b, w: _flat("ZRANGE", k, a, b, w), zkey, rank, rank, withscores),
    st.builds(
        lambda k, a, b, r, lim, w: _flat("ZRANGE", k, a, b, "BYSCORE", r, lim, w),
        zkey, zbound, zbound, st.sampled_from([(), ("REV",)]), limit, withscores,
    ),
    st.builds(
        lambda k, a, b, r, lim: _flat("ZRANGE", k, a, b, "BYLEX", r, lim),
        zkey, lexbound, lexbound, st.sampled_from([(), ("REV",)]), limit,
    ),
    st.builds(lambda k, a, b: ("ZREVRANGEBYSCORE", k, a, b), zkey, zbound, zbound),
    st.builds(lambda k, a, b: ("ZREMRANGEBYSCORE", k, a, b), zkey, zbound, zbound),
    st.builds(lambda k, a, b: ("ZREMRANGEBYRANK", k, a, b), zkey, rank, rank),
    st.builds(lambda k, a, b: ("ZREMRANGEBYLEX", k, a, b), zkey, lexbound, lexbound),
    st.builds(lambda k, c: _flat("ZPOPMIN", k, c), zkey, st.sampled_from([(), ("2",), ("0",)])),
    st.builds(lambda k, c: _flat("ZPOPMAX", k, c), zkey, st.sampled_from([(), ("1",), ("9",)])),
    st.builds(
        lambda op, d, a, b, agg: _flat(op, d, "2", a, b, agg),
        st.sampled_from(["ZUNIONSTORE", "ZINTERSTORE"]), zkey, zkey, zkey,
        st.sampled_from([(), ("AGGREGATE", "MAX"), ("WEIGHTS", "2", "-1")]),
    ),
    st.builds(lambda d, a, b: ("ZDIFFSTORE", d, "2", a, b), zkey, zkey, zkey),
    st.builds(lambda d, a, x, y: ("ZRANGESTORE", d, a, x, y), zkey, zkey, rank, rank),
    st.builds(lambda a, b: ("ZUNION", "2", a, b, "WITHSCORES"), zkey, zkey),
    st.builds(lambda k: ("SADD", k, "a"), zkey),
    st.builds(lambda k: ("DEL", k), zkey),
)


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(commands=st.lists(zcommand, min_size=1, max_size=30))
def test_random_zset_sequences_match_redis(
    commands: list[tuple[str, ...]], protocol: int, gkv: ServerProcess, redis_ref: ServerProcess
) -> None:
    run_sequence(list(commands), gkv.port, redis_ref.port, protocol)
