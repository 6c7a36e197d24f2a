"""Every client write is a delta on the sink, and the deltas alone rebuild the keyspace.

Real commands run through ``Session.execute`` on a keyspace whose sink captures each delta in
its wire form (encode -> msgpack). A shadow keyspace merging those deltas as they come must
equal the original after every command — a command that changed the keyspace without emitting
the change is named at once. Then the whole capture is replayed into a fresh keyspace, shuffled
and with duplicates, and must give the same state (every key's encoding, live and tombstoned)
and the same DEBUG DIGEST.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gossipkv.commands.all  # noqa: F401  (registers every command)
from gossipkv.commands.session import Server, Session
from gossipkv.crdt.hlc import HLC
from gossipkv.store.digest import dataset_digest
from gossipkv.store.entry import Entry
from gossipkv.store.keyspace import Keyspace

EPOCH_MS = 1_700_000_000_000
KEYS = [b"k1", b"k2", b"k3", b"n"]
VALUES = [b"v", b"10", b"-5", b"3.5", b"hello world", b""]


class FakeTime:
    """The wall clock of the test: moves only when a ``tick`` step says so."""

    def __init__(self) -> None:
        self.ms = EPOCH_MS

    def __call__(self) -> int:
        return self.ms


class Recorded:
    """A node whose client writes are captured on the wire, with a shadow fed the same bytes."""

    def __init__(self, time: FakeTime) -> None:
        self.time = time
        self.wire: list[tuple[bytes, bytes]] = []
        self.merges = 0
        ks = Keyspace("node-a", HLC(wall_ms=time), self._capture)
        ks.now_ms = time
        ks.on_change.append(self._count)
        self.keyspace = ks
        self.shadow = replica("node-shadow", time)
        self.session = Session(Server(ks))

    def _capture(self, key: bytes, delta: Entry) -> None:
        wire = msgpack.packb(delta.encode())
        self.wire.append((key, wire))
        self.shadow.merge(key, decode(wire))

    def _count(self, key: bytes, entry: Entry) -> None:
        self.merges += 1

    def run(self, step: list[bytes]) -> Any:
        if step[0] == b"tick":
            self.time.ms += int(step[1])
            return None
        if step[0] == b"active-expire":
            while self.keyspace.expire_cycle(limit=10) == 10:
                pass
            return None
        return self.session.execute(step)


def replica(name: str, time: FakeTime) -> Keyspace:
    ks = Keyspace(name, HLC(wall_ms=time))
    ks.now_ms = time
    return ks


def decode(wire: bytes) -> Entry:
    return Entry.decode(msgpack.unpackb(wire))


def state(ks: Keyspace) -> tuple[dict[bytes, Any], dict[bytes, Any]]:
    """Everything replicated about every key: live entries and tombstones, canonically."""
    return (
        {k: e.encode() for k, e in sorted(ks.live.items())},
        {k: e.encode() for k, e in sorted(ks.tombstones.items())},
    )


def digest(ks: Keyspace) -> Any:
    """DEBUG DIGEST as a client gets it, checked against the digest function it serves."""
    reply = Session(Server(ks)).execute([b"DEBUG", b"DIGEST"])
    assert reply == dataset_digest(ks.live.items(), ks.now_ms()).encode()
    return reply


def visible(ks: Keyspace, time: FakeTime) -> dict[bytes, tuple[bytes, int]]:
    """What clients read, without reaping: value and deadline of each unexpired key."""
    out = {}
    for key, e in ks.live.items():
        deadline = e.deadline()
        if not deadline or deadline > time.ms:
            out[key] = (e.read(), deadline)
    return out


# -- the command mix ----------------------------------------------------------------------------

keys = st.sampled_from(KEYS)
values = st.sampled_from(VALUES)
small = st.integers(-3, 40).map(lambda n: b"%d" % n)


def cmd(*parts: Any) -> Any:
    return st.tuples(*[p if isinstance(p, st.SearchStrategy) else st.just(p) for p in parts]).map(
        lambda t: [x if isinstance(x, bytes) else str(x).encode() for x in t]
    )


steps = st.one_of(
    cmd(b"SET", keys, values),
    cmd(b"SET", keys, values, st.sampled_from([b"EX", b"PX"]), small),
    cmd(b"SET", keys, values, st.sampled_from([b"NX", b"XX", b"KEEPTTL", b"GET"])),
    cmd(b"SETNX", keys, values),
    cmd(b"SETEX", keys, small, values),
    cmd(b"PSETEX", keys, small, values),
    cmd(b"GETSET", keys, values),
    cmd(b"MSET", keys, values, keys, values),
    cmd(b"MSETNX", keys, values, keys, values),
    cmd(b"APPEND", keys, values),
    cmd(b"SETRANGE", keys, st.integers(0, 12), values),
    cmd(st.sampled_from([b"INCR", b"DECR"]), keys),
    cmd(st.sampled_from([b"INCRBY", b"DECRBY"]), keys, st.integers(-100, 100)),
    cmd(b"INCRBYFLOAT", keys, st.sampled_from([b"0.5", b"-1.25", b"3", b"1e3"])),
    cmd(b"GETDEL", keys),
    cmd(b"GETEX", keys, st.sampled_from([b"EX", b"PX"]), small),
    cmd(b"GETEX", keys, b"PERSIST"),
    cmd(st.sampled_from([b"DEL", b"UNLINK"]), keys),
    cmd(b"DEL", keys, keys, keys),
    cmd(st.sampled_from([b"EXPIRE", b"PEXPIRE"]), keys, small),
    cmd(b"PEXPIREAT", keys, st.integers(-50, 300).map(lambda d: EPOCH_MS + d)),
    cmd(b"PERSIST", keys),
    cmd(st.sampled_from([b"RENAME", b"RENAMENX"]), keys, keys),
    cmd(b"COPY", keys, keys),
    cmd(st.sampled_from([b"FLUSHALL", b"FLUSHDB"])),
    cmd(st.sampled_from([b"GET", b"EXISTS", b"TTL", b"STRLEN"]), keys),
    cmd(b"tick", st.integers(1, 5000)),
    cmd(b"active-expire"),
)


def execute(steps: list[list[bytes]], time: FakeTime) -> Recorded:
    """Run the mix; after every step the shadow must hold exactly the node's state."""
    node = Recorded(time)
    for step in steps:
        node.run(step)
        assert state(node.shadow) == state(node.keyspace), f"changed without a delta: {step}"
    # Each write is one sink call and one merge: nothing merged behind the sink's back.
    assert node.merges == len(node.wire)
    return node


def check_replay(node: Recorded, rnd: random.Random) -> None:
    wire = node.wire
    order = wire + rnd.sample(wire, len(wire) // 4)
    rnd.shuffle(order)
    fresh = replica("node-b", node.time)
    for key, delta in order:
        fresh.merge(key, decode(delta))
    assert state(fresh) == state(node.keyspace)
    assert digest(fresh) == digest(node.keyspace)
    assert visible(fresh, node.time) == visible(node.keyspace, node.time)


@settings(deadline=None, max_examples=150)
@given(st.lists(steps, min_size=5, max_size=60), st.randoms())
def test_shuffled_duplicated_deltas_rebuild_the_keyspace(
    mix: list[list[bytes]], rnd: random.Random
) -> None:
    check_replay(execute(mix, FakeTime()), rnd)


def long_mix(seed: int, length: int) -> Iterator[list[bytes]]:
    """A reproducible mix, long enough for counters, TTLs and renames to pile up."""
    rnd = random.Random(seed)
    for _ in range(length):
        yield draw_step(rnd)


def draw_step(rnd: random.Random) -> list[bytes]:
    key = rnd.choice(KEYS)
    other = rnd.choice(KEYS)
    value = rnd.choice(VALUES)
    n = b"%d" % rnd.randint(1, 40)
    return rnd.choice([
        [b"SET", key, value],
        [b"SET", key, value, b"PX", n],
        [b"INCR", key],
        [b"INCRBY", key, b"%d" % rnd.randint(-50, 50)],
        [b"INCRBYFLOAT", key, b"0.25"],
        [b"APPEND", key, value],
        [b"DEL", key],
        [b"PEXPIRE", key, n],
        [b"PERSIST", key],
        [b"GETDEL", key],
        [b"RENAME", key, other],
        [b"MSET", key, value, other, value],
        [b"GET", key],
        [b"tick", n],
        [b"FLUSHALL"] if rnd.random() < 0.02 else [b"EXISTS", key],
    ])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_long_mix_replays_to_the_same_state(seed: int) -> None:
    node = execute(list(long_mix(seed, 1500)), FakeTime())
    assert len(node.wire) > 150, "the mix wrote too little to prove anything"
    check_replay(node, random.Random(seed))
