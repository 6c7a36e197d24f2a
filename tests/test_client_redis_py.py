"""Real clients over real sockets: redis-py (RESP2 and RESP3) and redis-cli, as users run them.

The differential harness checks replies byte for byte; these tests check what the clients make of
them: pipelining at volume, binary safety, many connections, a pool shared by threads, redis-py's
decoded types, its connect handshake, and redis-cli in its one-shot, --raw and --pipe modes.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from tests.differential.harness import RespConnection, encode_command
from tests.servers import ServerProcess

ALL_BYTES = bytes(range(256))
ONE_MB = ALL_BYTES * 4096


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def protocol(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def text_clients(
    protocol: int, gkv: ServerProcess, redis_ref: ServerProcess
) -> Iterator[tuple[redis.Redis, redis.Redis]]:
    """(gossipkv, redis-server) clients with decode_responses=True, both on empty datasets."""
    clients = [
        redis.Redis(port=s.port, protocol=protocol, decode_responses=True, socket_timeout=10)
        for s in (gkv, redis_ref)
    ]
    for c in clients:
        c.flushall()
    yield clients[0], clients[1]
    for c in clients:
        c.close()


# -- pipelining ---------------------------------------------------------------------------------


def test_pipeline_of_hundreds_of_commands(gkv_client: redis.Redis) -> None:
    n = 300
    pipe = gkv_client.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"key:{i}", f"value:{i}")
    for i in range(n):
        pipe.get(f"key:{i}")
    for _ in range(n):
        pipe.incr("counter")
    results = pipe.execute()
    assert results[:n] == [True] * n
    assert results[n : 2 * n] == [f"value:{i}".encode() for i in range(n)]
    assert results[2 * n :] == list(range(1, n + 1))
    assert gkv_client.get("counter") == str(n).encode()


def test_pipeline_keeps_errors_in_place(gkv_client: redis.Redis) -> None:
    pipe = gkv_client.pipeline(transaction=False)
    pipe.set("text", "not a number")
    for _ in range(100):
        pipe.incr("text")
        pipe.incr("number")
    results = pipe.execute(raise_on_error=False)
    assert results[0] is True
    errors, counts = results[1::2], results[2::2]
    assert all(isinstance(e, redis.ResponseError) for e in errors)
    assert {str(e) for e in errors} == {"value is not an integer or out of range"}
    assert counts == list(range(1, 101))


def test_raw_pipeline_in_one_write_gets_every_reply_in_order(gkv: ServerProcess) -> None:
    """Thousands of commands in a single send: the server must answer each, in order."""
    n = 2000
    batch = b"".join(encode_command(["ECHO", str(i)]) for i in range(n))
    with RespConnection(gkv.port) as conn:
        conn.send_raw(batch)
        got = [conn.read_reply().value for _ in range(n)]
    assert got == [str(i).encode() for i in range(n)]


# -- binary safety ------------------------------------------------------------------------------


def test_every_byte_value_round_trips_in_keys_and_values(gkv_client: redis.Redis) -> None:
    key, value = ALL_BYTES, ALL_BYTES[::-1]
    assert gkv_client.set(key, value) is True
    assert gkv_client.get(key) == value
    assert gkv_client.strlen(key) == 256
    assert gkv_client.append(key, b"\r\n\x00") == 259
    assert gkv_client.get(key) == value + b"\r\n\x00"
    assert gkv_client.getrange(key, 250, 258) == value[250:] + b"\r\n\x00"
    singles = {bytes([b]): bytes([255 - b]) for b in range(256)}
    assert gkv_client.mset(singles) is True
    assert gkv_client.mget(list(singles)) == list(singles.values())
    assert gkv_client.exists(*singles) == 256


def test_one_megabyte_value(gkv_client: redis.Redis) -> None:
    assert len(ONE_MB) == 1 << 20
    assert gkv_client.set("big", ONE_MB) is True
    assert gkv_client.strlen("big") == 1 << 20
    assert gkv_client.get("big") == ONE_MB
    pipe = gkv_client.pipeline(transaction=False)
    pipe.get("big")
    pipe.set("big2", ONE_MB[::-1])
    pipe.get("big2")
    assert pipe.execute() == [ONE_MB, True, ONE_MB[::-1]]


# -- many clients -------------------------------------------------------------------------------


def test_many_connections_open_at_once(gkv: ServerProcess) -> None:
    """Every connection is held open while all the others are used too."""
    n = 200
    conns = [RespConnection(gkv.port) for _ in range(n)]
    try:
        assert conns[0].call("FLUSHALL").raw == b"+OK\r\n"
        for i, c in enumerate(conns):
            assert c.call("SET", f"conn:{i}", str(i)).raw == b"+OK\r\n"
        for i, c in enumerate(conns):
            j = (i + 1) % n
            assert c.call("GET", f"conn:{j}").value == str(j).encode()
        assert not any(c.closed for c in conns)
    finally:
        for c in conns:
            c.close()


def test_connection_pool_shared_by_threads(gkv: ServerProcess) -> None:
    threads, rounds = 8, 250
    # A pool as large as the thread count: one more connection would raise "Too many connections".
    client = redis.Redis(port=gkv.port, max_connections=threads, socket_timeout=10)
    client.flushall()
    start = threading.Barrier(threads)

    def worker(t: int) -> list[Any]:
        start.wait()
        seen = []
        for i in range(rounds):
            client.incr("shared")
            client.set(f"thread:{t}:{i}", f"{t}/{i}")
            seen.append(client.get(f"thread:{t}:{i}"))
        return seen

    try:
        with ThreadPoolExecutor(threads) as ex:
            per_thread = list(ex.map(worker, range(threads)))
        for t, seen in enumerate(per_thread):
            assert seen == [f"{t}/{i}".encode() for i in range(rounds)]
        assert client.get("shared") == str(threads * rounds).encode()
    finally:
        client.close()


# -- what redis-py makes of the replies ---------------------------------------------------------


def _string_scenario(r: redis.Redis) -> list[Any]:
    """String and key commands whose redis-py results have distinct Python types."""
    return [
        r.ping(),
        r.echo("héllo ☃"),
        r.set("s", "héllo ☃"),
        r.get("s"),
        r.get("missing"),
        r.set("s", "other", nx=True),
        r.set("s", "again", xx=True, get=True),
        r.incr("n"),
        r.incrby("n", 41),
        r.decrby("n", 2),
        r.incrbyfloat("f", 1.5),
        r.incrbyfloat("f", 0.25),
        r.append("s", "!"),
        r.strlen("s"),
        r.getrange("s", 0, 2),
        r.setrange("s", 1, "XY"),
        r.mset({"m1": "1", "m2": "2"}),
        r.mget(["m1", "missing", "m2"]),
        r.exists("m1", "m2", "missing"),
        r.type("s"),
        r.type("missing"),
        r.expire("m1", 1000),
        r.ttl("m1") > 0,
        r.ttl("m2"),
        r.persist("m1"),
        r.getset("m2", "22"),
        r.getdel("m2"),
        r.delete("m1", "missing"),
        sorted(r.keys("*")),
        r.dbsize(),
    ]


def test_reply_types_as_redis_py_decodes_them(
    text_clients: tuple[redis.Redis, redis.Redis],
) -> None:
    gkv_client, redis_client = text_clients
    got = _string_scenario(gkv_client)
    assert got == _string_scenario(redis_client)
    assert [type(x) for x in got] == [
        bool, str, bool, str, type(None), type(None), str, int, int, int, float, float, int, int,
        str, int, bool, list, int, str, str, bool, bool, int, bool, str, str, int, list, int,
    ]  # fmt: skip
    assert got[3] == "héllo ☃" and got[10] == 1.5 and got[17] == ["1", None, "2"]


def test_redis_py_handshake_then_commands(protocol: int, gkv: ServerProcess) -> None:
    """redis-py sends HELLO (RESP3), CLIENT SETNAME and CLIENT SETINFO before the first command;
    whatever the server answers to those, the next reply must be the command's own."""
    client = redis.Redis(
        port=gkv.port, protocol=protocol, client_name="worker-1", socket_timeout=10
    )
    try:
        assert client.echo("first") == b"first"
        name = client.client_getname()  # redis-py decodes it in RESP2 only
        assert (name.decode() if isinstance(name, bytes) else name) == "worker-1"
        conn = client.connection_pool.get_connection()
        try:
            if protocol == 3:
                assert conn.handshake_metadata is not None
                handshake: dict[Any, Any] = dict(conn.handshake_metadata)
                meta = {k.decode(): v for k, v in handshake.items()}
                assert meta["proto"] == 3
                assert set(meta) >= {"server", "version", "proto", "id", "mode", "role"}
        finally:
            client.connection_pool.release(conn)
    finally:
        client.close()


def test_hello_and_client_setinfo_answer_like_redis(
    gkv: ServerProcess, redis_ref: ServerProcess
) -> None:
    with RespConnection(gkv.port) as ours, RespConnection(redis_ref.port) as theirs:
        for args in (("CLIENT", "SETINFO", "LIB-NAME", "redis-py"), ("CLIENT", "SETINFO",
                     "LIB-VER", "8.1.0")):  # fmt: skip
            got, want = ours.call(*args), theirs.call(*args)
            # Redis 7.0 predates SETINFO; answering OK like 7.2 would is also acceptable.
            assert got.raw in (want.raw, b"+OK\r\n"), (args, got.show(), want.show())
        for version in ("3", "2"):
            got, want = ours.call("HELLO", version), theirs.call("HELLO", version)
            assert got.kind == want.kind
            assert [k.raw for k in got.elements[::2]] == [k.raw for k in want.elements[::2]]
        got, want = ours.call("HELLO", "4"), theirs.call("HELLO", "4")
        assert got.raw == want.raw


# -- redis-cli ----------------------------------------------------------------------------------


def _cli_runner(port: int) -> Callable[..., str]:
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed")

    def run(*args: str, stdin: bytes | None = None) -> str:
        done = subprocess.run(
            [cli, "-p", str(port), *args], input=stdin, capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.decode("utf-8", "replace")

    return run


@pytest.fixture
def cli(gkv: ServerProcess) -> Callable[..., str]:
    run = _cli_runner(gkv.port)
    assert run("FLUSHALL") == "OK\n"
    return run


def test_redis_cli_one_shot_commands(cli: Callable[..., str]) -> None:
    assert cli("SET", "k", "v") == "OK\n"
    assert cli("GET", "k") == "v\n"
    assert cli("--no-raw", "GET", "k") == '"v"\n'
    assert cli("--no-raw", "GET", "missing") == "(nil)\n"
    assert cli("--no-raw", "INCR", "n") == "(integer) 1\n"
    assert cli("SET", "multi", "line one\nline two") == "OK\n"
    assert cli("--raw", "GET", "multi") == "line one\nline two\n"
    assert cli("--no-raw", "GET", "multi") == '"line one\\nline two"\n'
    info = cli("INFO")
    assert "# Server" in info
    assert "redis_version:" in info


def test_redis_cli_output_matches_redis(gkv: ServerProcess, redis_ref: ServerProcess) -> None:
    commands = [
        ("SET", "k", "v"), ("--no-raw", "MGET", "k", "nope", "k"), ("--no-raw", "INCRBY", "n", "5"),
        ("INCRBYFLOAT", "n", "0.5"), ("--no-raw", "GET", "n"), ("--no-raw", "INCR", "k"),
        ("NOSUCHCOMMAND",), ("--no-raw", "EXISTS", "k", "n", "nope"), ("--no-raw", "DEL", "k"),
        ("--no-raw", "TYPE", "n"), ("--no-raw", "PING"), ("--raw", "ECHO", "a b"),
    ]  # fmt: skip
    ours, theirs = _cli_runner(gkv.port), _cli_runner(redis_ref.port)
    ours("FLUSHALL")
    theirs("FLUSHALL")
    for args in commands:
        assert ours(*args) == theirs(*args), args


def test_redis_cli_pipe_mass_insert(cli: Callable[..., str], gkv: ServerProcess) -> None:
    n = 3000
    payload = b"".join(encode_command(["SET", f"bulk:{i}", f"v{i}"]) for i in range(n))
    out = cli("--pipe", stdin=payload)
    assert f"errors: 0, replies: {n}" in out
    client = redis.Redis(port=gkv.port, socket_timeout=10)
    try:
        assert client.dbsize() == n
        assert client.mget(["bulk:0", f"bulk:{n // 2}", f"bulk:{n - 1}"]) == [
            b"v0",
            f"v{n // 2}".encode(),
            f"v{n - 1}".encode(),
        ]
    finally:
        client.close()
