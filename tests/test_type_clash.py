"""The type-clash rule (DESIGN.md): SET k on one node concurrent with SADD k on another.

Two keyspaces with different node ids run the real commands; each captures its deltas, and the
deltas are then delivered both ways, in both orders and with duplicates. Both replicas must end
with the same key: the kind of the later write by HLC, the loser's contents gone.
"""

from __future__ import annotations

import itertools

import msgpack
import pytest

import gossipkv.commands.all  # noqa: F401  (registers every command)
from gossipkv.commands.replies import ErrorReply, RespSet
from gossipkv.commands.session import Server, Session
from gossipkv.crdt.hlc import HLC
from gossipkv.store.entry import Entry
from gossipkv.store.keyspace import Keyspace


class Node:
    def __init__(self, name: str, wall_ms: int) -> None:
        self.deltas: list[tuple[bytes, list[object]]] = []
        self.ks = Keyspace(name, HLC(lambda: wall_ms), sink=self._capture)
        self.session = Session(Server(self.ks))

    def _capture(self, key: bytes, delta: Entry) -> None:
        self.deltas.append((key, delta.encode()))

    def run(self, *argv: bytes) -> object:
        return self.session.execute(list(argv))

    def receive(self, deltas: list[tuple[bytes, list[object]]]) -> None:
        for key, data in deltas:
            wire = msgpack.unpackb(msgpack.packb(data), use_list=True)
            self.ks.merge(key, Entry.decode(wire))


def _members(node: Node, key: bytes) -> list[bytes]:
    reply = node.run(b"SMEMBERS", key)
    assert isinstance(reply, RespSet)
    return sorted(reply)


@pytest.mark.parametrize("set_is_later", [True, False])
@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_concurrent_set_and_sadd_converge_to_the_later_kind(
    set_is_later: bool, order: tuple[int, ...]
) -> None:
    a = Node("a", 2000 if set_is_later else 1000)
    b = Node("b", 1000 if set_is_later else 2000)
    # b had the key as a set before the clash, a never saw it.
    assert b.run(b"SADD", b"k", b"old") == 1
    before = list(b.deltas)
    assert a.run(b"SET", b"k", b"v") == b"OK"
    assert b.run(b"SADD", b"k", b"x", b"y") == 2
    clash = b.deltas[len(before):]
    batches = [before, a.deltas, clash]
    # Replica c gets every delta in the given order, one batch twice.
    c = Node("c", 500)
    for i in order:
        c.receive(batches[i])
    c.receive(batches[order[0]])
    a.receive(before + clash)
    b.receive(a.deltas)
    for node in (a, b, c):
        if set_is_later:
            assert node.run(b"TYPE", b"k") == b"string", node.ks.node
            assert node.run(b"GET", b"k") == b"v"
            with_err = node.run(b"SMEMBERS", b"k")
            assert isinstance(with_err, ErrorReply) and with_err.message.startswith("WRONGTYPE")
        else:
            assert node.run(b"TYPE", b"k") == b"set", node.ks.node
            assert _members(node, b"k") == [b"old", b"x", b"y"]
            got = node.run(b"GET", b"k")
            assert isinstance(got, ErrorReply) and got.message.startswith("WRONGTYPE")
    digests = {node.run(b"DEBUG", b"DIGEST") for node in (a, b, c)}
    assert len(digests) == 1


def test_set_over_a_seen_set_removes_it_everywhere() -> None:
    """SET on a key the writer saw as a set observed-removes the set: a later DEL and SADD
    start from an empty set on every replica."""
    a = Node("a", 1000)
    b = Node("b", 1000)
    a.run(b"SADD", b"k", b"m1", b"m2")
    b.receive(a.deltas)
    n = len(b.deltas)
    assert b.run(b"SET", b"k", b"v") == b"OK"
    assert b.run(b"DEL", b"k") == 1
    assert b.run(b"SADD", b"k", b"fresh") == 1
    a.receive(b.deltas[n:])
    for node in (a, b):
        assert _members(node, b"k") == [b"fresh"]


def test_string_commands_meet_wrongtype_on_a_set() -> None:
    a = Node("a", 1000)
    a.run(b"SADD", b"s", b"m")
    for argv in ([b"GET", b"s"], [b"INCR", b"s"], [b"APPEND", b"s", b"x"], [b"STRLEN", b"s"]):
        got = a.run(*argv)
        assert isinstance(got, ErrorReply) and got.message.startswith("WRONGTYPE"), argv
    assert a.run(b"MGET", b"s") == [None]


def _interleavings(streams: list[list[int]]) -> list[list[int]]:
    """Every merge of the streams that keeps each stream's own order (one origin's deltas
    arrive in order, as replication delivers them)."""
    if all(not s for s in streams):
        return [[]]
    out: list[list[int]] = []
    for i, s in enumerate(streams):
        if s:
            rest = [t[1:] if j == i else t for j, t in enumerate(streams)]
            out.extend([s[0], *tail] for tail in _interleavings(rest))
    return out


def test_a_later_write_to_a_hidden_kind_converges_in_every_order() -> None:
    # a: SADD then (later, still unaware of b) SADD again; b: SET in between by HLC.
    # Whatever a replica saw first, all end in the same state and show the same kind.
    a = Node("a", 1000)
    b = Node("b", 1500)
    a.run(b"SADD", b"k", b"m1")
    b.run(b"SET", b"k", b"v")
    a.ks.clock.last = 2000 << 16  # a's next write is later than b's SET
    a.run(b"SADD", b"k", b"m2")
    deltas = [*a.deltas, *b.deltas]
    streams = [list(range(len(a.deltas))), [len(a.deltas) + i for i in range(len(b.deltas))]]
    states = set()
    kinds = set()
    for order in _interleavings(streams):
        r = Node("r", 0)
        r.receive([deltas[i] for i in order])
        states.add(msgpack.packb(r.ks.live[b"k"].encode()))
        kinds.add(r.run(b"TYPE", b"k"))
    assert len(states) == 1
    assert kinds == {b"set"}  # a's second SADD is the latest write
