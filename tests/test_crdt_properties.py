"""The laws replication relies on, checked by hypothesis on the CRDT types and whole entries.

Merge must be commutative, associative and idempotent, so that deltas may arrive repeated and
in any order; the HLC must stay monotonic whatever the wall clock does. Histories come from
simulated nodes (one Keyspace each, distinct node ids, skewed clocks that may step back) doing
SET/INCR/INCRBYFLOAT/DEL/EXPIRE/PERSIST, through the mutators and through the real commands,
with sinks that capture every delta they emit.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gossipkv.commands.all  # noqa: F401  (registers every command)
from gossipkv.commands.session import Server, Session
from gossipkv.crdt import context as causal
from gossipkv.crdt.counter import Counter
from gossipkv.crdt.hlc import HLC, LOGICAL_BITS, physical_ms
from gossipkv.crdt.numeric import (
    INT64_MAX,
    INT64_MIN,
    Number,
    format_number,
    parse_float,
    parse_int,
)
from gossipkv.crdt.register import wins
from gossipkv.store.entry import Entry, assign, expire, increment
from gossipkv.store.keyspace import Keyspace, Sink

# Timing is never part of a verdict: no per-example deadline, no too-slow health check.
laws = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])

NODES = ("a", "b", "c")
KEYS = (b"k0", b"k1")
EPOCH_MS = 1_700_000_000_000

# -- states drawn directly ----------------------------------------------------------------------
# In a real history a (timestamp, node) pair names exactly one write, so whatever a state holds
# under that stamp (a value, a running total, a deadline) is a function of the stamp. The
# generators below keep that invariant; merge laws are only promised on such states.

timestamps = st.integers(min_value=1, max_value=60)
nodes = st.sampled_from(NODES)


def value_at(ts: int, node: str) -> bytes:
    return b"%d" % (ts * 10 + NODES.index(node)) if ts % 3 else b"%s-%d" % (node.encode(), ts)


def total_at(ts: int, node: str) -> Number:
    base = ts * 7 - 100 + NODES.index(node)
    return Decimal(base) / 4 if ts % 5 == 0 else base


def deadline_at(ts: int, node: str) -> int:
    return 0 if ts % 4 == 0 else EPOCH_MS + ts * 13 + NODES.index(node)


def born_at(ts: int) -> int:
    """A node's running totals start afresh every 4 ticks: one incarnation per block."""
    return ts - ts % 4


versions = st.dictionaries(nodes, timestamps, max_size=3).map(
    lambda d: {n: (ts, total_at(ts, n), born_at(ts)) for n, ts in d.items()}
)
# A floor observed a total; the reset that recorded it is dated (R, r), or undated (old form).
floors = st.dictionaries(
    nodes, st.tuples(timestamps, st.integers(1, 80), st.sampled_from((*NODES, ""))), max_size=3
).map(lambda d: {n: (ts, total_at(ts, n), rts if r else 0, r) for n, (ts, rts, r) in d.items()})
# In normal form, as states are: no floor of an incarnation older than its node's total.
counters = st.builds(lambda t, f: Counter.decode(Counter(t, f).encode()), versions, floors)
contexts = st.dictionaries(nodes, timestamps, max_size=3)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    e = Entry()
    if draw(st.booleans()):
        e.ts, e.node = draw(timestamps), draw(nodes)
        e.value = value_at(e.ts, e.node)
    e.counter = draw(st.none() | counters)
    if draw(st.booleans()):
        ts, node = draw(timestamps), draw(nodes)
        e.exp = (ts, node, deadline_at(ts, node))
    e.ctx = draw(st.none() | contexts)
    return e


def merged(*states: Entry) -> Entry:
    """The join of ``states`` left to right, leaving every argument untouched."""
    out = states[0].copy()
    for s in states[1:]:
        out.merge(s)
    return out


def joined_counter(*states: Counter) -> Counter:
    out = states[0].copy()
    for s in states[1:]:
        out.merge(s)
    return out


def joined_context(*ctxs: causal.Context) -> causal.Context:
    out: causal.Context = {}
    for c in ctxs:
        causal.join(out, c)
    return out


# -- the LWW rule -------------------------------------------------------------------------------


@laws
@given(timestamps, nodes, timestamps, nodes)
def test_lww_is_a_strict_total_order(ts1: int, n1: str, ts2: int, n2: str) -> None:
    if (ts1, n1) == (ts2, n2):
        assert not wins(ts1, n1, ts2, n2)
    else:
        assert wins(ts1, n1, ts2, n2) != wins(ts2, n2, ts1, n1)
        assert wins(ts1, n1, ts2, n2) == ((ts1, n1) > (ts2, n2))


@laws
@given(st.lists(st.tuples(timestamps, nodes), min_size=1, max_size=8), st.randoms())
def test_lww_winner_does_not_depend_on_order(
    stamps: list[tuple[int, str]], rnd: random.Random
) -> None:
    def winner(order: list[tuple[int, str]]) -> tuple[int, str]:
        cur = order[0]
        for s in order[1:]:
            if wins(*s, *cur):
                cur = s
        return cur

    shuffled = stamps[:]
    rnd.shuffle(shuffled)
    assert winner(stamps) == winner(shuffled) == max(stamps)


# -- causal contexts ----------------------------------------------------------------------------


@laws
@given(contexts, contexts, contexts)
def test_context_join_laws(a: causal.Context, b: causal.Context, c: causal.Context) -> None:
    assert joined_context(a, b) == joined_context(b, a)
    assert joined_context(joined_context(a, b), c) == joined_context(a, joined_context(b, c))
    assert joined_context(a, a) == a


@laws
@given(contexts, contexts, timestamps, nodes)
def test_context_join_keeps_what_either_side_covered(
    a: causal.Context, b: causal.Context, ts: int, node: str
) -> None:
    both = joined_context(a, b)
    assert causal.covers(both, ts, node) == (causal.covers(a, ts, node)
                                             or causal.covers(b, ts, node))


@laws
@given(contexts, timestamps, nodes)
def test_observed_stamps_are_covered(ctx: causal.Context, ts: int, node: str) -> None:
    causal.observe(ctx, ts, node)
    assert causal.covers(ctx, ts, node)
    assert not causal.covers(ctx, ctx[node] + 1, node)
    assert not causal.covers(None, ts, node)


# -- the counter --------------------------------------------------------------------------------


@laws
@given(counters, counters, counters)
def test_counter_merge_laws(a: Counter, b: Counter, c: Counter) -> None:
    assert joined_counter(a, b).encode() == joined_counter(b, a).encode()
    assert (joined_counter(joined_counter(a, b), c).encode()
            == joined_counter(a, joined_counter(b, c)).encode())
    assert joined_counter(a, a).encode() == a.encode()
    assert joined_counter(a, b, b).encode() == joined_counter(a, b).encode()


@laws
@given(counters)
def test_counter_encoding_round_trips(c: Counter) -> None:
    wire = msgpack.unpackb(msgpack.packb(c.encode()))
    assert Counter.decode(wire).encode() == c.encode()
    assert Counter.decode(wire).pending() == c.pending()


@laws
@given(st.lists(st.tuples(nodes, st.integers(-1000, 1000)), max_size=12), st.randoms())
def test_concurrent_increments_all_count(incs: list[tuple[str, int]], rnd: random.Random) -> None:
    """Each node increments its own copy; any delivery order of all deltas sums everything."""
    replicas = {n: Counter() for n in NODES}
    deltas: list[Counter] = []
    for ts, (node, by) in enumerate(incs, start=1):
        d = replicas[node].increment(node, ts, by)
        replicas[node].merge(d)
        deltas.append(d)
    rnd.shuffle(deltas)
    out = Counter()
    for d in deltas + deltas[: len(deltas) // 2]:
        out.merge(d)
    expected = sum(by for _, by in incs) if incs else None
    assert out.pending() == expected


@laws
@given(counters, nodes, st.integers(-50, 50))
def test_reset_drops_exactly_the_observed_increments(c: Counter, node: str, by: int) -> None:
    """A reset zeroes what it saw; an increment it did not see lands on top of it."""
    later = max([0, *(v[0] for v in c.totals.values()), *(v[0] for v in c.floor.values())]) + 1
    reset = c.reset((later, "r"))
    assert joined_counter(c, reset).pending() is None
    # The incrementing node goes on from its own state, which has not seen the reset.
    unseen = c.increment(node, later + 1, by)  # concurrent with the reset
    assert joined_counter(c, reset, unseen).pending() == by
    assert joined_counter(unseen, reset, c).pending() == by


# -- whole entries ------------------------------------------------------------------------------


@laws
@given(entries(), entries(), entries())
def test_entry_merge_laws(a: Entry, b: Entry, c: Entry) -> None:
    assert merged(a, b).encode() == merged(b, a).encode()
    assert merged(merged(a, b), c).encode() == merged(a, merged(b, c)).encode()
    assert merged(a, a).encode() == a.encode()
    assert merged(a, b, a, b).encode() == merged(a, b).encode()


@laws
@given(entries(), entries())
def test_merge_never_shares_mutable_parts(a: Entry, b: Entry) -> None:
    before = b.encode()
    m = merged(a, b)
    m.merge(Entry(counter=Counter({"z": (99, 1, 99)}), ctx={"z": 99}))
    assert b.encode() == before


@laws
@given(entries())
def test_entry_encoding_round_trips_through_msgpack(e: Entry) -> None:
    wire = msgpack.unpackb(msgpack.packb(e.encode()))
    back = Entry.decode(wire)
    assert back.encode() == e.encode()
    assert back.state_digest() == e.state_digest()
    assert back.alive() == e.alive()
    if e.alive():
        assert back.read() == e.read()


@laws
@given(entries(), entries())
def test_merge_only_grows_removals_and_stamps(a: Entry, b: Entry) -> None:
    m = merged(a, b)
    assert m.stamps() == max(a.stamps(), b.stamps())
    for node, ts in joined_context(a.ctx or {}, b.ctx or {}).items():
        assert causal.covers(m.ctx, ts, node)


@laws
@given(entries())
def test_removal_hides_everything_it_observed(e: Entry) -> None:
    gone = merged(e, e.removal())
    assert not gone.alive()
    assert gone.deadline() == 0


# -- the hybrid logical clock -------------------------------------------------------------------

wall_readings = st.lists(st.integers(EPOCH_MS - 10_000, EPOCH_MS + 10_000), min_size=1, max_size=60)


@laws
@given(wall_readings)
def test_hlc_never_goes_back_when_the_wall_clock_does(readings: list[int]) -> None:
    it = iter(readings)
    clock = HLC(wall_ms=lambda: next(it))
    stamps = [clock.now() for _ in readings]
    assert all(x < y for x, y in itertools.pairwise(stamps))
    # The physical part follows the wall clock, holding at the highest reading seen.
    highest = 0
    for stamp, wall in zip(stamps, readings, strict=True):
        highest = max(highest, wall)
        assert physical_ms(stamp) == highest


@laws
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("now"), st.integers(EPOCH_MS - 1000, EPOCH_MS + 1000)),
            st.tuples(st.just("observe"), st.integers(0, (EPOCH_MS + 5000) << LOGICAL_BITS)),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_hlc_orders_local_stamps_after_everything_observed(
    steps: list[tuple[str, int]],
) -> None:
    wall = [EPOCH_MS]
    clock = HLC(wall_ms=lambda: wall[0])
    seen = 0  # the greatest stamp issued or observed so far
    for kind, x in steps:
        if kind == "now":
            wall[0] = x
            ts = clock.now()
            assert ts > seen
            assert physical_ms(ts) >= x
            seen = ts
        else:
            clock.observe(x)
            seen = max(seen, x)


# -- simulated nodes ----------------------------------------------------------------------------
# An operation is a tuple. A cluster runs client writes either through the mutators, as below
# (skipping what a client would get an error for, as the commands refuse it without writing), or
# through the real commands on a Session per node.

ops = st.one_of(
    st.tuples(st.just("set"), nodes, st.sampled_from(KEYS),
              st.sampled_from([b"x", b"7", b"-3", b"2.5", b"hello"]),
              st.sampled_from([0, 0, 5, 40, 200])),
    st.tuples(st.just("incr"), nodes, st.sampled_from(KEYS), st.integers(-20, 20)),
    st.tuples(st.just("incrbyfloat"), nodes, st.sampled_from(KEYS),
              st.sampled_from([Decimal("0.5"), Decimal("-1.25"), Decimal("3")])),
    st.tuples(st.just("del"), nodes, st.sampled_from(KEYS)),
    st.tuples(st.just("expire"), nodes, st.sampled_from(KEYS), st.integers(-5, 300)),
    st.tuples(st.just("persist"), nodes, st.sampled_from(KEYS)),
    st.tuples(st.just("tick"), st.integers(1, 120)),
    st.tuples(st.just("skew"), nodes, st.integers(-80, 80)),
    st.tuples(st.just("reap"), nodes),
    st.tuples(st.just("sync"), nodes, nodes, st.integers(1, 6)),
)


# Long enough for a key to be written, removed and written again by several nodes.
histories = st.lists(ops, min_size=10, max_size=80)


class Cluster:
    """Nodes that write locally and exchange deltas as per-origin, in-order streams."""

    def __init__(self, names: tuple[str, ...], via_commands: bool = False) -> None:
        self.time = EPOCH_MS
        self.skew: dict[str, int] = {}
        self.streams: dict[str, list[tuple[bytes, bytes]]] = {}
        # received[dst][src]: how much of src's stream dst has merged.
        self.received: dict[str, dict[str, int]] = {}
        self.nodes: dict[str, Keyspace] = {}
        for name in names:
            self.skew[name] = 0
            self.streams[name] = []
            self.received[name] = {}
            wall = self._wall(name)
            ks = Keyspace(name, HLC(wall_ms=wall), self._sink(self.streams[name]))
            ks.now_ms = wall
            self.nodes[name] = ks
        self.sessions = (
            {name: Session(Server(ks)) for name, ks in self.nodes.items()} if via_commands else {}
        )

    def _wall(self, name: str) -> Callable[[], int]:
        return lambda: self.time + self.skew[name]

    @staticmethod
    def _sink(stream: list[tuple[bytes, bytes]]) -> Sink:
        # Encoded at once: the keyspace may adopt the delta object as the key's state.
        return lambda key, delta: stream.append((key, msgpack.packb(delta.encode())))

    def log(self) -> list[tuple[bytes, bytes]]:
        return [d for s in self.streams.values() for d in s]

    def deliver(self, dst: str, src: str, count: int | None = None) -> None:
        ks = self.nodes[dst]
        start = self.received[dst].get(src, 0)
        stream = self.streams[src]
        end = len(stream) if count is None else min(len(stream), start + count)
        for key, wire in stream[start:end]:
            ks.merge(key, Entry.decode(msgpack.unpackb(wire)))
        self.received[dst][src] = end

    def sync_all(self) -> None:
        """Every node merges every stream to its end (its own included: merge is idempotent)."""
        for dst in self.nodes:
            for src in self.nodes:
                self.deliver(dst, src)

    def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "tick":
            self.time += op[1]
        elif kind == "skew":
            self.skew[op[1]] = op[2]
        elif kind == "reap":
            self.nodes[op[1]].expire_cycle()
        elif kind == "sync":
            self.deliver(op[1], op[2], op[3])
        elif self.sessions:
            self.sessions[op[1]].execute(command_argv(op))
        else:
            client_write(self.nodes[op[1]], kind, *op[2:])


def command_argv(op: tuple[Any, ...]) -> list[bytes]:
    """The Redis command a write operation stands for."""
    kind, key, args = op[0], op[2], op[3:]
    if kind == "set":
        value, ttl_ms = args
        return [b"SET", key, value] + ([b"PX", b"%d" % ttl_ms] if ttl_ms else [])
    if kind == "incr":
        return [b"INCRBY", key, b"%d" % args[0]]
    if kind == "incrbyfloat":
        return [b"INCRBYFLOAT", key, str(args[0]).encode()]
    if kind == "expire":
        return [b"PEXPIRE", key, b"%d" % args[0]]
    return [kind.upper().encode(), key]  # DEL, PERSIST


def client_write(ks: Keyspace, kind: str, key: bytes, *args: Any) -> None:
    """What the string and key commands do: read, check as Redis would, emit one delta."""
    live = ks.lookup(key)  # reaps an expired key first, as every command's lookup does
    node = ks.node
    if kind == "set":
        value, ttl_ms = args
        deadline = ks.now_ms() + ttl_ms if ttl_ms else None
        ks.write(key, assign(ks.clock.now(), node, value, live, deadline=deadline))
    elif kind in ("incr", "incrbyfloat"):
        by: Number = args[0]
        if live is not None:
            current = live.read()
            base = parse_int(current) if kind == "incr" else parse_float(current)
            if base is None:
                return  # ERR value is not an integer / not a valid float
            if kind == "incr" and not INT64_MIN <= int(base) + int(by) <= INT64_MAX:
                return
        # The running total continues from everything this node holds, removed or not.
        state = ks.live.get(key) or ks.tombstones.get(key)
        ks.write(key, increment(ks.clock.now(), node, by, state))
    elif kind == "del":
        ks.delete(key)
    elif kind == "expire":
        if live is None:
            return
        if args[0] <= 0:
            ks.write(key, live.removal())  # a deadline in the past deletes, as in Redis
        else:
            ks.write(key, expire(ks.clock.now(), node, ks.now_ms() + args[0]))
    elif kind == "persist" and live is not None and live.deadline():
        ks.write(key, expire(ks.clock.now(), node, 0))


def snapshot(ks: Keyspace) -> tuple[dict[bytes, Any], dict[bytes, Any]]:
    """The whole replicated state, canonically: every live and tombstoned key's encoding."""
    return (
        {k: e.encode() for k, e in sorted(ks.live.items())},
        {k: e.encode() for k, e in sorted(ks.tombstones.items())},
    )


def check_indexes(ks: Keyspace) -> None:
    """The live map, the tombstones and the expiry index agree with the entries they hold."""
    assert not ks.live.keys() & ks.tombstones.keys()
    assert all(e.alive() for e in ks.live.values())
    assert not any(e.alive() for e in ks.tombstones.values())
    assert ks.expiry.deadlines == {k: e.deadline() for k, e in ks.live.items() if e.deadline()}


via = pytest.mark.parametrize("via_commands", [False, True], ids=["mutators", "commands"])


@via
@laws
@given(histories, st.randoms())
def test_any_delivery_order_with_duplicates_converges(
    via_commands: bool, history: list[tuple[Any, ...]], rnd: random.Random
) -> None:
    cluster = Cluster(NODES, via_commands)
    for op in history:
        cluster.apply(op)
    log = cluster.log()

    # Each node catches up on what it missed, each stream in order.
    cluster.sync_all()
    states = [snapshot(ks) for ks in cluster.nodes.values()]
    for ks in cluster.nodes.values():
        check_indexes(ks)

    # A fresh node fed every delta shuffled, some twice; another fed them in reverse.
    shuffled = log + rnd.sample(log, len(log) // 3)
    rnd.shuffle(shuffled)
    for order in (shuffled, log[::-1]):
        fresh = Keyspace("z")
        for key, wire in order:
            fresh.merge(key, Entry.decode(msgpack.unpackb(wire)))
        check_indexes(fresh)
        states.append(snapshot(fresh))

    assert all(s == states[0] for s in states[1:])


@via
@laws
@given(histories)
def test_causally_ordered_writes_keep_redis_meaning(
    via_commands: bool, history: list[tuple[Any, ...]]
) -> None:
    """With every delta delivered before the next command, the cluster acts as one Redis.

    Clocks are not skewed here: deadlines are absolute wall times, so with skew two nodes
    rightly disagree about whether a key has expired yet.
    """
    cluster = Cluster(NODES, via_commands)
    model: dict[bytes, tuple[bytes, int]] = {}  # key -> (value, deadline or 0)
    for op in history:
        if op[0] in ("skew", "sync"):
            continue
        cluster.apply(op)
        cluster.sync_all()
        now = cluster.time
        for key in [k for k, (_, dl) in model.items() if dl and dl <= now]:
            del model[key]
        redis_model(model, op, now)
        for ks in cluster.nodes.values():
            seen = {}
            for key in KEYS:
                e = ks.lookup(key)
                if e is not None:
                    seen[key] = (e.read(), e.deadline())
            assert seen == model, op
            cluster.sync_all()  # a lookup may have reaped, which is a write to replicate


def redis_model(model: dict[bytes, tuple[bytes, int]], op: tuple[Any, ...], now: int) -> None:
    """What one Redis does with the same command, on plain values."""
    kind = op[0]
    if kind in ("tick", "reap"):
        return
    key = op[2]
    cur = model.get(key)
    if kind == "set":
        model[key] = (op[3], now + op[4] if op[4] else 0)
    elif kind in ("incr", "incrbyfloat"):
        value, deadline = cur if cur is not None else (b"0", 0)
        base = parse_int(value) if kind == "incr" else parse_float(value)
        if base is None or (kind == "incr" and not INT64_MIN <= int(base) + op[3] <= INT64_MAX):
            return
        model[key] = (format_number(base + op[3]), deadline)
    elif kind == "del":
        model.pop(key, None)
    elif kind == "expire":
        if cur is not None:
            if op[3] <= 0:
                del model[key]
            else:
                model[key] = (cur[0], now + op[3])
    elif kind == "persist" and cur is not None:
        model[key] = (cur[0], 0)
