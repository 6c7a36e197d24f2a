"""FLUSHALL of a large keyspace: removed a slice per event-loop turn, other clients served
meanwhile, and its OK sent once every key is gone."""

from __future__ import annotations

import socket

import redis

from gossipkv.commands.server import FLUSH_SLICE
from tests.differential.harness import encode_command
from tests.servers import ServerProcess

KEYS = 50 * FLUSH_SLICE
TIMEOUT = 30.0  # a guard against a server that never answers, never a pass/fail criterion


def test_a_large_flushall_lets_other_clients_in_and_replies_when_done(gkv: ServerProcess) -> None:
    r = redis.Redis(port=gkv.port, socket_timeout=TIMEOUT)
    r.flushall()
    pipe = r.pipeline(transaction=False)
    for i in range(KEYS):
        pipe.set(f"flush:{i}", "v")
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    assert r.dbsize() == KEYS
    with socket.create_connection(("127.0.0.1", gkv.port), timeout=TIMEOUT) as flusher:
        flusher.sendall(encode_command(["FLUSHALL"]))
        seen: list[int] = []
        while not seen or seen[-1]:
            seen.append(int(r.dbsize()))  # served between the flush's slices
            assert len(seen) < 1_000_000, "FLUSHALL never finished"
        assert flusher.recv(16) == b"+OK\r\n"
    # Some DBSIZE ran while the flush was under way: the keyspace was neither whole nor empty.
    assert any(0 < n < KEYS for n in seen), seen[:5]
    assert seen == sorted(seen, reverse=True)
    assert r.set("flush:after", "1") and r.get("flush:after") == b"1"
    r.flushall()
    assert r.dbsize() == 0
