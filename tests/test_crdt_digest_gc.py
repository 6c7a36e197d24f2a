"""Collection digests and causal-stability GC, for every collection type and for whole entries.

- ``digest()``: after any delivery order of a 3-node history's deltas (through msgpack, with
  duplicates), replicas whose canonical states are equal have equal digests, and a digest kept
  up to date merge by merge equals one computed from scratch.
- ``collect(stable)``: with ``stable`` true of a prefix of every node's writes (each delivered to
  every replica), a replica that collects and then merges everything else, old deltas again
  included, shows what a replica that never collected shows; replicas that saw the same writes
  and collect with the same ``stable`` have equal digests; collecting drops the stable removal
  metadata (a fully stable set keeps no cloud dot).
- ``Entry.is_stable``: a stable tombstone forgotten changes nothing later deliveries show.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipkv.crdt.collection import Collection
from gossipkv.crdt.ormap import ORMap
from gossipkv.crdt.orset import ORSet
from gossipkv.crdt.rga import RGA
from gossipkv.crdt.zset import ZSet
from gossipkv.store import entry as E
from gossipkv.store.entry import Entry

NODES = ("a", "b", "c")
NAMES = (b"m0", b"m1", b"m2", b"m3")
laws = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])

Now = Callable[[], int]


def _set_op(s: Any, now: Now, node: str, op: int, arg: int) -> Any:
    names = [NAMES[arg % 4], NAMES[(arg + op) % 4]]
    if op <= 1:
        return s.add(now, node, names)
    if op <= 3:
        return s.remove(names)
    return s.removal()


def _hash_op(s: Any, now: Now, node: str, op: int, arg: int) -> Any:
    name = NAMES[arg % 4]
    if op <= 1:
        return s.assign(now, node, {name: b"v%d" % arg, NAMES[(arg + 1) % 4]: b"w"})
    if op == 2:
        return s.increment(now(), node, name, arg - 3)
    if op == 3:
        return s.remove([name, NAMES[(arg + 2) % 4]], (now(), node))
    return s.removal((now(), node))


def _zset_op(s: Any, now: Now, node: str, op: int, arg: int) -> Any:
    name = NAMES[arg % 4]
    if op <= 1:
        d = s.add(name, float(arg), now(), node)
        return s.add(NAMES[(arg + 1) % 4], -float(arg), now(), node, d)
    if op == 2:
        return s.incr(name, float(arg - 3) / 2, now(), node)
    if op == 3:
        return s.remove([name, NAMES[(arg + 2) % 4]])
    return s.removal()


def _list_op(s: Any, now: Now, node: str, op: int, arg: int) -> Any:
    if op <= 1:
        return s.push(now, node, [b"v%d" % arg, b"w"], op == 0)
    n = len(s)
    if op == 2 and n:
        return s.insert(now, node, arg % (n + 1), b"i%d" % arg)
    if op == 3 and n:
        return s.pop(1 + arg % 2, arg % 2 == 0, (now(), node))[0]
    return s.removal((now(), node))


def _visible(c: Any) -> Any:
    if isinstance(c, ORSet):
        return sorted(c)
    if isinstance(c, ORMap):
        return sorted(c.items())
    if isinstance(c, ZSet):
        z = ZSet()
        z.merge(c)  # a delta adopted as a state reads as one
        return list(z.items())
    return c.values()


@dataclass
class Kind:
    new: Callable[[], Any]
    op: Callable[[Any, Now, str, int, int], Any]


KINDS = {
    "set": Kind(ORSet, _set_op),
    "hash": Kind(ORMap, _hash_op),
    "zset": Kind(ZSet, _zset_op),
    "list": Kind(RGA, _list_op),
}

ops = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 4), st.integers(0, 7), st.booleans()),
    max_size=30,
)


def wire(x: Any) -> Any:
    return type(x).decode(msgpack.unpackb(msgpack.packb(x.encode())))


@dataclass
class Write:
    node: str
    ts: int  # the write's own stamp: greater than every stamp inside its delta
    delta: Any


def history(kind: Kind, script: list[tuple[int, int, int, bool]]) -> list[Write]:
    """Three replicas write and now and then merge another's state, so later removals observe
    remote writes. Returns every write, in the order it was made."""
    states = [kind.new() for _ in NODES]
    clocks = [0, 0, 0]
    writes: list[Write] = []
    for i, op, arg, sync in script:
        if sync:
            j = (i + 1) % 3
            states[i].merge(states[j].copy())
            clocks[i] = max(clocks[i], states[j].max_ts())
            continue

        def now(i: int = i) -> int:
            clocks[i] += 1
            return clocks[i]

        d = kind.op(states[i], now, NODES[i], op, arg)
        writes.append(Write(NODES[i], now(), wire(d)))
        states[i].merge(d)
    return writes


def join(kind: Kind, deltas: list[Any], digest_early: bool = False) -> Any:
    out = kind.new()
    if digest_early:
        out.digest()  # from here on the digest is kept up to date by each merge
    for d in deltas:
        out.merge(wire(d))
    return out


def canon(x: Any) -> bytes:
    x = x.copy()
    x.settle()
    return bytes(msgpack.packb(x.encode()))


@laws
@given(st.sampled_from(sorted(KINDS)), ops, st.randoms(use_true_random=False))
def test_equal_states_have_equal_digests_kept_or_recomputed(
    name: str, script: list[tuple[int, int, int, bool]], rnd: random.Random
) -> None:
    kind = KINDS[name]
    deltas = [w.delta for w in history(kind, script)]
    reference = join(kind, deltas, digest_early=True)
    shuffled = deltas + rnd.sample(deltas, len(deltas) // 2)
    rnd.shuffle(shuffled)
    other = join(kind, shuffled, digest_early=True)
    assert canon(other) == canon(reference)
    assert other.digest() == reference.digest()
    # Kept up to date merge by merge == from scratch (decode starts with no cached digest).
    assert reference.digest() == wire(reference).digest()
    assert other.digest() == join(kind, shuffled).digest()
    if deltas:  # and the digest does see the state: an empty state hashes apart
        assert (reference.digest() == kind.new().digest()) == (
            canon(reference) == canon(kind.new())
        )


def _cut(writes: list[Write], keep: list[int]) -> tuple[list[Write], list[Write], dict[str, int]]:
    """The first ``keep[n]`` writes of each node as the stable prefix, and ``stable``."""
    seen = dict.fromkeys(NODES, 0)
    prefix: list[Write] = []
    rest: list[Write] = []
    stable = dict.fromkeys(NODES, 0)  # every node named, as the cluster's watermark does
    for w in writes:
        k = NODES.index(w.node)
        if seen[w.node] < keep[k]:
            seen[w.node] += 1
            prefix.append(w)
            stable[w.node] = w.ts
        else:
            rest.append(w)
    return prefix, rest, stable


@laws
@given(
    st.sampled_from(sorted(KINDS)),
    ops,
    st.lists(st.integers(0, 12), min_size=3, max_size=3),
    st.randoms(use_true_random=False),
)
def test_collect_is_safe_and_convergent(
    name: str, script: list[tuple[int, int, int, bool]], keep: list[int], rnd: random.Random
) -> None:
    kind = KINDS[name]
    writes = history(kind, script)
    prefix, rest, stable = _cut(writes, keep)
    everything = [w.delta for w in writes]
    reference = join(kind, everything)  # never collects

    # Replica x has the stable prefix and some other writes, collects, then gets the rest
    # and every old delta again, in any order.
    # ``shadow`` gets the same deliveries and never collects: both must always show the same.
    early = [w.delta for w in rest if rnd.random() < 0.5]
    x = join(kind, [w.delta for w in prefix] + early, digest_early=True)
    shadow = x.copy()
    x.collect(stable)
    assert _visible(x) == _visible(shadow)
    late = [w.delta for w in rest] + everything  # every old delta delivered again
    rnd.shuffle(late)
    for d in late:
        x.merge(wire(d))
        shadow.merge(wire(d))
        assert _visible(x) == _visible(shadow)
        x.collect(stable)  # collecting again at any time is harmless
    assert _visible(x) == _visible(reference)

    # Replicas that saw the same writes and collect with the same ``stable`` agree.
    y = join(kind, list(reversed(everything)))
    y.collect(stable)
    x.collect(stable)
    assert canon(x) == canon(y)
    assert x.digest() == y.digest() == wire(x).digest()


@laws
@given(st.sampled_from(["set", "hash", "zset"]), ops)
def test_a_fully_stable_collection_keeps_no_cloud(
    name: str, script: list[tuple[int, int, int, bool]]
) -> None:
    kind = KINDS[name]
    writes = history(kind, script)
    x = join(kind, [w.delta for w in writes])
    cloud = len(x.ctx.cloud)
    stable = {n: max([w.ts for w in writes if w.node == n], default=0) for n in NODES}
    assert x.collect(stable) == cloud
    assert not x.ctx.cloud
    counted = name == "hash" and any(
        not isinstance(fs, tuple) and fs.counter is not None for fs in x.fields.values()
    )
    assert x.stable_in(stable) == (not counted)  # no causal frontier known: floors stay
    for w in writes:  # nothing seen by every replica changes it any more
        before = x.digest()
        x.merge(wire(w.delta))
        assert x.digest() == before
    if name == "hash":
        # Every write everywhere, and every write made before merging it: the causal frontier
        # is past everything. Counters whose every node's total is reset go; a field left with
        # nothing goes; what is kept still judges a pending increment.
        before_read = sorted(x.items())
        x.collect(stable, stable)
        assert sorted(x.items()) == before_read
        assert x.digest() == wire(x).digest()
        kept = [fs.counter for fs in x.fields.values() if not isinstance(fs, tuple) and fs.counter]
        for c in kept:
            assert c.totals and all(
                a in c.totals and c.totals[a][0] > f[0] for a, f in c.floor.items()
            )
        assert x.stable_in(stable, stable) == (not kept)


def test_collect_drops_stable_removed_dots_only() -> None:
    s = ORSet()
    ticks = iter(range(1, 100))
    s.merge(s.add(lambda: next(ticks), "a", [b"x", b"y", b"z"]))  # dots 1, 2, 3
    s.merge(s.remove([b"x", b"z"]))
    assert s.ctx.cloud == {(1, "a"), (3, "a")}
    assert s.collect({"a": 2}) == 1  # (3, a) is not stable yet
    assert s.ctx.cloud == {(3, "a")} and s.ctx.vv == {"a": 1}
    old_add = ORSet.decode([[[b"x", [[1, "a"]]]], [[], []]])
    s.merge(old_add)  # the stable add of x, delivered again: x stays removed
    assert sorted(s) == [b"y"]
    assert not s.stable_in({"a": 2}) and s.stable_in({"a": 3})


# -- whole entries: strings, expiry, key-level contexts -------------------------------------


def entry_history(script: list[tuple[int, int, int, bool]]) -> list[Write]:
    states: list[Entry | None] = [None, None, None]
    clocks = [0, 0, 0]
    writes: list[Write] = []
    for i, op, arg, sync in script:
        j = (i + 1) % 3
        if sync:
            other = states[j]
            if other is not None:
                cur = states[i]
                if cur is None:
                    states[i] = other.copy()
                else:
                    cur.merge(other)
                clocks[i] = max(clocks[i], other.stamps())
            continue
        clocks[i] += 1
        ts, node, old = clocks[i], NODES[i], states[i]
        d: Entry
        if op == 0:
            d = E.assign(ts, node, b"v%d" % arg, old)
        elif op == 1:
            d = E.increment(ts, node, arg - 3, old)
        elif op == 2:
            d = E.expire(ts, node, 1000 + arg)
        elif op == 3 and old is not None:
            ks = ORSet() if old.coll is None else old.coll
            d = Entry(coll=ks.add(lambda i=i: _tick(clocks, i), node, [NAMES[arg % 4]]))  # type: ignore[union-attr]
        else:
            if old is None:
                continue
            d = old.removal()
        clocks[i] += 1
        sent = Entry.decode(msgpack.unpackb(msgpack.packb(d.encode())))
        writes.append(Write(node, clocks[i], sent))
        if old is None:
            states[i] = Entry.decode(d.encode())
        else:
            old.merge(d)
    return writes


def _tick(clocks: list[int], i: int) -> int:
    clocks[i] += 1
    return clocks[i]


def _entry_join(deltas: list[Entry]) -> Entry | None:
    out: Entry | None = None
    for d in deltas:
        d = Entry.decode(msgpack.unpackb(msgpack.packb(d.encode())))
        if out is None:
            out = d
            out.settle()
        else:
            out.merge(d)
    return out


def _entry_visible(e: Entry | None) -> Any:
    if e is None or not e.alive():
        return None
    c = e.visible_coll()
    return (e.kind(), e.read() if c is None else sorted(c), e.deadline())  # type: ignore[call-overload]


@settings(deadline=None, max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(ops, st.lists(st.integers(0, 12), min_size=3, max_size=3), st.randoms(use_true_random=False))
def test_entry_collect_and_forgetting_stable_tombstones_are_safe(
    script: list[tuple[int, int, int, bool]], keep: list[int], rnd: random.Random
) -> None:
    writes = entry_history(script)
    prefix, rest, stable = _cut(writes, keep)
    everything = [w.delta for w in writes]
    reference = _entry_join(everything)

    # ``shadow`` gets the same deliveries and never collects: both must always show the same.
    early = [w.delta for w in prefix] + [w.delta for w in rest if rnd.random() < 0.5]
    x = _entry_join(early)
    shadow = _entry_join(early)
    if x is not None:
        x.collect(stable)
        assert _entry_visible(x) == _entry_visible(shadow)
        if not x.alive() and x.is_stable(stable):
            x = None  # a stable tombstone may be forgotten
    late = [w.delta for w in rest] + everything  # every old delta delivered again
    rnd.shuffle(late)
    if x is None:
        # Forgotten: old deltas are not delivered again (the stream is past them).
        late = [w.delta for w in rest]
        rnd.shuffle(late)
    for d in late:
        for which in ("x", "shadow"):
            d = Entry.decode(msgpack.unpackb(msgpack.packb(d.encode())))
            cur = x if which == "x" else shadow
            if cur is None:
                cur = d
            else:
                cur.merge(d)
            if which == "x":
                x = cur
            else:
                shadow = cur
        assert _entry_visible(x) == _entry_visible(shadow)
    assert _entry_visible(x) == _entry_visible(reference)

    y = _entry_join(list(reversed(everything)))
    if x is not None and y is not None and not rest:
        x.collect(stable)
        y.collect(stable)
        assert x.state_digest() == y.state_digest()


def test_state_digest_sees_every_part_and_survives_the_wire() -> None:
    e = Entry(coll=ORSet())
    ticks = iter(range(1, 10**6))
    base = e.state_digest()
    s: Collection = e.coll  # type: ignore[assignment]
    e.merge(Entry(coll=s.add(lambda: next(ticks), "a", [b"x"])))  # type: ignore[attr-defined]
    with_x = e.state_digest()
    assert with_x != base
    e.merge(Entry(exp=(10**6, "a", 5)))
    assert e.state_digest() != with_x
    assert e.state_digest() == Entry.decode(e.encode()).state_digest()


def test_a_tombstone_whose_forgetting_would_show_otherwise_is_not_stable() -> None:
    everyone = dict.fromkeys(NODES, 100)
    # A counter's floor judges increments still in flight: an undated reset is never forgotten,
    # a dated one once the causal frontier has passed it.
    incr = E.increment(1, "a", 5, None)
    undated = _entry_join([incr, Entry(counter=incr.counter).removal()])
    assert undated is not None and not undated.is_stable(everyone, everyone)
    t = _entry_join([incr, Entry(counter=incr.counter).removal((20, "b"))])
    assert t is not None and not t.alive()
    assert not t.is_stable(everyone)  # no causal frontier known
    assert not t.is_stable(everyone, {"a": 100, "b": 19, "c": 100})
    assert t.is_stable(everyone, everyone)
    later = E.increment(200, "a", 1, t)  # a new running total, which the floor does not judge
    assert later.read() == b"1"
    t.merge(later)
    assert t.read() == b"1" and not t.counter.floor  # type: ignore[union-attr]
    # An EXPIRE that overtook the SET it applies to.
    exp = E.expire(5, "b", 10_000)
    assert not exp.alive() and not exp.is_stable(everyone)
    # A removed register still beats a concurrent write stamped below it.
    s = E.assign(50, "b", b"old", None)
    t = _entry_join([s, s.removal()])
    assert t is not None
    t.collect({"a": 10, "b": 100, "c": 100})
    assert not t.is_stable({"a": 10, "b": 100, "c": 100})  # a may still send a write < 50
    t.merge(E.assign(40, "a", b"late", None))
    assert not t.alive()
    assert t.is_stable(everyone)


def test_a_dated_removal_holds_its_tombstone_until_it_is_stable() -> None:
    s = E.assign(10, "a", b"v", None)
    t = _entry_join([s, s.removal((20, "b"))])
    assert t is not None and not t.alive()
    assert not t.is_stable({"a": 100, "b": 19})  # b's removal may not have reached everyone
    assert t.is_stable({"a": 100, "b": 20})
    t.merge(E.assign(15, "b", b"older", None))  # b's own earlier write: seen by its removal
    assert not t.alive()


def test_commands_that_empty_a_collection_date_the_tombstone() -> None:
    import gossipkv.commands.all  # noqa: F401  (registers every command)
    from gossipkv.commands.session import Server, Session
    from gossipkv.store.keyspace import Keyspace

    ks = Keyspace("n1")
    s = Session(Server(ks))
    script = [
        ([b"SADD", b"s", b"a", b"b"], [b"SREM", b"s", b"a"], [b"SPOP", b"s"]),
        ([b"HSET", b"h", b"f", b"v", b"g", b"w"], [b"HDEL", b"h", b"f"], [b"HDEL", b"h", b"g"]),
        ([b"ZADD", b"z", b"1", b"a", b"2", b"b"], [b"ZPOPMIN", b"z"], [b"ZREM", b"z", b"b"]),
        ([b"RPUSH", b"l", b"a", b"b"], [b"LPOP", b"l"], [b"RPOP", b"l"]),
    ]
    for fill, partial, last in script:
        key = fill[1]
        s.execute(fill)
        s.execute(partial)
        assert ks.live[key].ctx is None  # a removal that leaves elements is not dated
        s.execute(last)
        t = ks.tombstones[key]
        assert t.ctx is not None and set(t.ctx) == {"n1"}
        dated = t.ctx["n1"]
        assert dated >= t.stamps()
        everyone_but_the_date = {"n1": dated - 1}
        assert not t.is_stable(everyone_but_the_date)
        # A list's tombstones go first (RGA.collect); then the key's tombstone may go too.
        t.collect({"n1": dated}, {"n1": dated})
        assert t.is_stable({"n1": dated})
        s.execute(fill)  # the key comes back as new
        assert key in ks.live
