"""The string counter rules of DESIGN.md, on two keyspaces that exchange deltas by hand.

Each node runs real commands through a Session on its own Keyspace; a sink captures every
delta it writes, msgpack-encoded as it would travel, and ``deliver`` merges them into the
other node. Writes made before a delivery are concurrent: neither node had seen the other's.
"""

from __future__ import annotations

import itertools

import msgpack
import pytest

import gossipkv.commands.all  # noqa: F401  (registers every command)
from gossipkv.commands.replies import ErrorReply, Reply
from gossipkv.commands.session import Server, Session
from gossipkv.crdt.numeric import INT64_MAX
from gossipkv.store.entry import Entry
from gossipkv.store.keyspace import Keyspace


class Node:
    """One replica: a keyspace, a client session on it, and the deltas it has not shipped."""

    def __init__(self, name: str) -> None:
        self.outbox: list[tuple[bytes, bytes]] = []
        self.keyspace = Keyspace(name, sink=self._capture)
        self.session = Session(Server(self.keyspace))

    def _capture(self, key: bytes, delta: Entry) -> None:
        self.outbox.append((key, msgpack.packb(delta.encode())))

    def __call__(self, *words: str | int) -> Reply:
        reply = self.session.execute([str(w).encode() for w in words])
        if isinstance(reply, ErrorReply):
            raise reply
        return reply

    def error(self, *words: str | int) -> str:
        """The error text a command answers (the test fails if it succeeds)."""
        reply = self.session.execute([str(w).encode() for w in words])
        assert isinstance(reply, ErrorReply), reply
        return reply.message

    def ship(self) -> list[tuple[bytes, bytes]]:
        out, self.outbox = self.outbox, []
        return out


def deliver(deltas: list[tuple[bytes, bytes]], to: Node) -> None:
    for key, wire in deltas:
        to.keyspace.merge(key, Entry.decode(msgpack.unpackb(wire)))


def exchange(a: Node, b: Node) -> None:
    """Both ways at once: what each node wrote since the last exchange reaches the other."""
    from_a, from_b = a.ship(), b.ship()
    deliver(from_a, b)
    deliver(from_b, a)


@pytest.fixture
def nodes() -> tuple[Node, Node]:
    return Node("node-a"), Node("node-b")


def test_concurrent_incrs_on_two_nodes_sum(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    assert a("INCR", "hits") == 1
    assert a("INCRBY", "hits", 10) == 11
    assert b("INCR", "hits") == 1
    assert b("DECRBY", "hits", 3) == -2
    exchange(a, b)
    assert a("GET", "hits") == b("GET", "hits") == b"9"
    assert a("INCR", "hits") == 10  # the next increment starts from the merged sum
    exchange(a, b)
    assert b("GET", "hits") == b"10"


def test_set_concurrent_with_incr_lands_the_increment_on_top(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a("SET", "k", 5)
    exchange(a, b)
    b("INCRBY", "k", 2)  # observed by neither of the SETs below
    a("SET", "k", 100)
    exchange(a, b)
    assert a("GET", "k") == b("GET", "k") == b"102"
    # An increment the SET had observed is reset by it, as in Redis.
    b("SET", "k", 7)
    exchange(a, b)
    assert a("GET", "k") == b("GET", "k") == b"7"


def test_del_concurrent_with_set_keeps_the_set(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a("SET", "k", "old")
    exchange(a, b)
    assert a("DEL", "k") == 1
    b("SET", "k", "new")
    exchange(a, b)
    assert a("GET", "k") == b("GET", "k") == b"new"


def test_del_concurrent_with_incr_keeps_the_unobserved_increment(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    a("INCRBY", "k", 40)
    exchange(a, b)
    a("DEL", "k")
    b("INCRBY", "k", 2)
    exchange(a, b)
    assert a("GET", "k") == b("GET", "k") == b"2"


def test_merged_overflow_is_refused_on_the_writer(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a("INCRBY", "k", INT64_MAX - 10)
    b("INCRBY", "k", 10)  # each node alone is far from the limit; merged, the sum is at it
    exchange(a, b)
    assert a("GET", "k") == str(INT64_MAX).encode()
    assert a.error("INCR", "k") == "ERR increment or decrement would overflow"
    assert b.error("INCRBY", "k", 1) == "ERR increment or decrement would overflow"
    assert a.ship() == [] and b.ship() == []  # a refused write emits no delta
    assert a("DECR", "k") == INT64_MAX - 1


def test_incr_after_del_restarts_from_zero_on_every_node(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a("INCRBY", "k", 5)
    a("DEL", "k")
    assert a("INCR", "k") == 1
    assert a("GET", "k") == b"1"
    exchange(a, b)
    assert b("GET", "k") == b"1"
    assert b("INCR", "k") == 2


def test_concurrent_float_increments_add_exactly(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    assert a("INCRBYFLOAT", "f", "0.1") == b"0.1"
    assert b("INCRBYFLOAT", "f", "0.2") == b"0.2"
    exchange(a, b)
    assert a("GET", "f") == b("GET", "f") == b"0.3"
    assert a("INCRBYFLOAT", "f", "100") == b"100.3"
    exchange(a, b)
    assert b("GET", "f") == b"100.3"


def test_value_that_is_no_number_reads_alone_with_pending_increments(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    a("SET", "k", "abc")
    b("INCR", "k")
    exchange(a, b)
    assert a("GET", "k") == b("GET", "k") == b"abc"
    assert a.error("INCR", "k") == "ERR value is not an integer or out of range"


def test_any_delivery_order_and_repetition_converges() -> None:
    writer_a, writer_b = Node("node-a"), Node("node-b")
    writer_a("SET", "k", 10)
    writer_a("INCRBY", "k", 5)
    writer_b("INCRBYFLOAT", "k", "0.5")
    writer_b("INCRBYFLOAT", "k", "0.25")
    writer_a("APPEND", "k", "0")  # "150": a rewrite that resets the increments it saw
    writer_b("SET", "k", 3, "KEEPTTL")
    deltas = writer_a.ship() + writer_b.ship()
    reads = set()
    for order in itertools.permutations(deltas):
        replica = Node("node-c")
        deliver(list(order), replica)
        deliver(list(order[:2]), replica)  # duplicates change nothing
        reads.add(replica("GET", "k"))
    assert len(reads) == 1


def test_running_totals_past_int64_still_ship(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    for _ in range(3):  # each SET floors the total; the node's running total keeps growing
        a("INCRBY", "k", INT64_MAX)
        a("SET", "k", 0)
    assert a("INCR", "k") == 1
    exchange(a, b)
    assert a("GET", "k") == b("GET", "k") == b"1"
    assert b("INCRBY", "k", INT64_MAX - 1) == INT64_MAX
