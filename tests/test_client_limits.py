"""CONFIG maxclients and timeout, enforced as redis-server enforces them.

Each case runs the same script against a fresh redis-server and a fresh gossipkv node (both real
processes) and asserts the same bytes and the same closes on both.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.differential.harness import RespConnection, encode_command
from tests.servers import ServerProcess, start_gossipkv, start_redis, wait_for

TIMEOUT = 10.0  # a guard against a server that never answers, never a pass/fail criterion

Starter = Callable[[Path], ServerProcess]


@pytest.fixture(params=["redis", "gossipkv"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    start: Starter = start_redis if request.param == "redis" else start_gossipkv
    proc = start(tmp_path)
    yield proc
    proc.stop()


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (polls without blocking)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def _stat(conn: RespConnection, name: str) -> str:
    text = conn.call("INFO", "all").value.decode()
    for line in text.split("\r\n"):
        if line.startswith(name + ":"):
            return line.split(":", 1)[1]
    raise AssertionError(f"INFO has no {name}")


def test_maxclients_refuses_past_the_limit(server: ServerProcess) -> None:
    with RespConnection(server.port) as admin, RespConnection(server.port) as second:
        assert admin.call("CONFIG", "SET", "maxclients", "2").raw == b"+OK\r\n"
        assert second.call("PING").raw == b"+PONG\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as third:
            refused = bytearray()
            while True:  # the error comes unasked, then the connection closes
                chunk = third.recv(1 << 10)
                if not chunk:
                    break
                refused += chunk
        assert bytes(refused) == b"-ERR max number of clients reached\r\n"
        assert _stat(admin, "rejected_connections") == "1"
        assert _stat(admin, "connected_clients") == "2"
        maxclients = admin.call("CONFIG", "GET", "maxclients").raw
        assert maxclients == b"*2\r\n$10\r\nmaxclients\r\n$1\r\n2\r\n"
        # Raising the limit admits new clients again; the ones connected were never touched.
        assert admin.call("CONFIG", "SET", "maxclients", "10000").raw == b"+OK\r\n"
        with RespConnection(server.port) as fourth:
            assert fourth.call("PING").raw == b"+PONG\r\n"
        assert second.call("PING").raw == b"+PONG\r\n"


def test_timeout_closes_idle_clients_but_not_blocked_ones(server: ServerProcess) -> None:
    with RespConnection(server.port) as admin:
        assert admin.call("CONFIG", "SET", "timeout", "1").raw == b"+OK\r\n"
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        blocked = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        try:
            idle.sendall(encode_command(["PING"]))
            assert idle.recv(64) == b"+PONG\r\n"
            blocked.sendall(encode_command(["BLPOP", "limits:queue", "0"]))
            wait_for(lambda: _stat(admin, "blocked_clients") == "1", TIMEOUT, "BLPOP to block")
            # The admin connection stays active (a PING at every poll); the idle one is closed
            # once it has been idle for more than a second.
            wait_for(
                lambda: admin.call("PING").raw == b"+PONG\r\n" and _closed(idle),
                TIMEOUT, "the idle client to be closed",
            )
            assert not _closed(blocked)
            listing = admin.call("CLIENT", "LIST").value.decode()
            clients = [dict(f.split("=", 1) for f in line.split(" ")) for line in
                       listing.splitlines()]
            assert [c["flags"] for c in clients if c["cmd"] == "blpop"] == ["b"]
            assert admin.call("RPUSH", "limits:queue", "v").raw == b":1\r\n"
            assert blocked.recv(64) == b"*2\r\n$12\r\nlimits:queue\r\n$1\r\nv\r\n"
            assert admin.call("CONFIG", "SET", "timeout", "0").raw == b"+OK\r\n"
        finally:
            idle.close()
            blocked.close()
