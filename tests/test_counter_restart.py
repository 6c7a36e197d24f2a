"""A node restarted empty under the same name must not erase its previous run's increments.

Its first INCRBY, made before any peer's state reached it, starts a running total from zero.
Were totals keyed by node name, that total (stamped later) would replace the old run's total
everywhere and the increments acknowledged before the crash would be lost.
"""

from __future__ import annotations

import msgpack

import gossipkv.commands.all  # noqa: F401  (registers every command)
from gossipkv.commands.session import Server, Session
from gossipkv.store.entry import Entry
from gossipkv.store.keyspace import Keyspace


class Node:
    """One process start of a node: a keyspace whose client writes are captured as deltas."""

    def __init__(self, name: str) -> None:
        self.deltas: list[tuple[bytes, bytes]] = []
        self.keyspace = Keyspace(name, sink=self._capture)
        self.session = Session(Server(self.keyspace))

    def _capture(self, key: bytes, delta: Entry) -> None:
        self.deltas.append((key, msgpack.packb(delta.encode())))

    def run(self, *argv: bytes) -> object:
        return self.session.execute(list(argv))

    def receive(self, other: Node) -> None:
        for key, wire in other.deltas:
            self.keyspace.merge(key, Entry.decode(msgpack.unpackb(wire)))


def test_an_empty_restart_counts_on_top_of_the_previous_run() -> None:
    first_run, peer = Node("eu-1"), Node("us-1")
    for _ in range(5):
        first_run.run(b"INCRBY", b"c", b"10")
    peer.receive(first_run)
    assert peer.run(b"GET", b"c") == b"50"

    second_run = Node("eu-1")  # kill -9, then an empty start under the same name
    assert second_run.run(b"INCRBY", b"c", b"1") == 1  # before any snapshot arrived
    peer.receive(second_run)
    second_run.receive(first_run)
    assert peer.run(b"GET", b"c") == b"51"
    assert second_run.run(b"GET", b"c") == b"51"


def test_hash_field_counters_survive_an_empty_restart_too() -> None:
    first_run, peer = Node("eu-1"), Node("us-1")
    first_run.run(b"HINCRBY", b"h", b"f", b"7")
    peer.receive(first_run)
    second_run = Node("eu-1")
    second_run.run(b"HINCRBY", b"h", b"f", b"1")
    peer.receive(second_run)
    assert peer.run(b"HGET", b"h", b"f") == b"8"
