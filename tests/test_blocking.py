"""Blocking list pops on a real server with redis-py: woken by another client's push, timing
out with a null reply, FIFO among waiters, counted in INFO, and forgotten when the client
disconnects while blocked (the element it would have taken stays for the next reader)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import redis

from tests.servers import ServerProcess, wait_for


def blocked_clients(c: redis.Redis) -> int:
    return int(c.info("clients")["blocked_clients"])


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    return t, out


def test_blpop_is_woken_by_a_push_from_another_client(gkv_client: redis.Redis,
                                                      gkv: ServerProcess) -> None:
    waiter = redis.Redis(port=gkv.port)
    t, out = in_thread(lambda: waiter.blpop(["q1", "q2"], timeout=0))
    wait_for(lambda: blocked_clients(gkv_client) == 1, what="the client to block")
    assert gkv_client.rpush("q2", "job") == 1
    t.join(10)
    assert out == [(b"q2", b"job")]
    assert gkv_client.exists("q2") == 0
    assert blocked_clients(gkv_client) == 0
    waiter.close()


def test_blmove_is_woken_and_moves(gkv_client: redis.Redis, gkv: ServerProcess) -> None:
    waiter = redis.Redis(port=gkv.port)
    t, out = in_thread(lambda: waiter.blmove("src", "dst", 0, "RIGHT", "LEFT"))
    wait_for(lambda: blocked_clients(gkv_client) == 1, what="the client to block")
    gkv_client.rpush("src", "a", "b")
    t.join(10)
    assert out == [b"b"]
    assert gkv_client.lrange("src", 0, -1) == [b"a"]
    assert gkv_client.lrange("dst", 0, -1) == [b"b"]
    waiter.close()


def test_waiters_are_served_first_come_first_served(gkv_client: redis.Redis,
                                                    gkv: ServerProcess) -> None:
    first, second = redis.Redis(port=gkv.port), redis.Redis(port=gkv.port)
    t1, out1 = in_thread(lambda: first.brpop(["q"], timeout=0))
    wait_for(lambda: blocked_clients(gkv_client) == 1, what="the first client to block")
    t2, out2 = in_thread(lambda: second.brpop(["q"], timeout=0))
    wait_for(lambda: blocked_clients(gkv_client) == 2, what="the second client to block")
    assert gkv_client.lpush("q", "one") == 1
    t1.join(10)
    assert out1 == [(b"q", b"one")]
    assert blocked_clients(gkv_client) == 1
    gkv_client.lpush("q", "two")
    t2.join(10)
    assert out2 == [(b"q", b"two")]
    first.close()
    second.close()


def test_timeout_replies_null(gkv_client: redis.Redis) -> None:
    assert gkv_client.blpop(["nothing"], timeout=0.05) is None
    assert gkv_client.blmove("nothing", "dst", 0.05, "LEFT", "LEFT") is None  # type: ignore[arg-type]
    assert blocked_clients(gkv_client) == 0


def test_disconnect_while_blocked_unregisters(gkv_client: redis.Redis,
                                              gkv: ServerProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", gkv.port))
    sock.sendall(b"*3\r\n$5\r\nBLPOP\r\n$4\r\ngone\r\n$1\r\n0\r\n")
    wait_for(lambda: blocked_clients(gkv_client) == 1, what="the raw client to block")
    sock.close()
    wait_for(lambda: blocked_clients(gkv_client) == 0, what="the waiter to be unregistered")
    assert gkv_client.rpush("gone", "kept") == 1
    assert gkv_client.lrange("gone", 0, -1) == [b"kept"]


def test_timeout_errors(gkv_client: redis.Redis) -> None:
    for bad, text in ((b"abc", "timeout is not a float or out of range"),
                      (b"-1", "timeout is negative")):
        try:
            gkv_client.execute_command("BLPOP", "k", bad)  # type: ignore[no-untyped-call]
        except redis.ResponseError as e:
            assert str(e) == text
        else:
            raise AssertionError("no error")
