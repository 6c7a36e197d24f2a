"""requirepass: a gossipkv node started from a config file that sets it, next to a redis-server
started with the same password, answering the same bytes.

Before AUTH, only AUTH, HELLO, QUIT and RESET run; the others get NOAUTH (after the unknown
command and arity checks, as in Redis), and requests longer than an unauthenticated client may
send are refused as protocol errors.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator, Sequence

import pytest

from tests.differential.harness import RespConnection, encode_command
from tests.servers import ServerProcess, start_gossipkv, start_redis

PASSWORD = "s3cret-pass"
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def gkv_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("gkv-auth")
    config = tmp / "node.toml"
    config.write_text(f'[node]\nrequirepass = "{PASSWORD}"\n')
    server = start_gossipkv(tmp, "--config", str(config))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_redis(tmp_path_factory.mktemp("redis-auth"), "--requirepass", PASSWORD)
    yield server
    server.stop()


Step = Sequence[str]

# HELLO's reply carries the connection's id, which differs between servers.
_ID = re.compile(rb"(\$2\r\nid\r\n):\d+\r\n")


def transcript(port: int, steps: Sequence[Step]) -> list[bytes]:
    """The raw replies to ``steps`` on one fresh connection (client ids masked)."""
    with RespConnection(port) as conn:
        return [_ID.sub(rb"\1:<id>\r\n", conn.call(*step).raw) for step in steps]


def assert_same_as_redis(steps: Sequence[Step], gkv: ServerProcess, ref: ServerProcess) -> None:
    expected = transcript(ref.port, steps)
    actual = transcript(gkv.port, steps)
    for step, want, got in zip(steps, expected, actual, strict=True):
        assert got == want, f"{' '.join(step)}: redis {want!r}, gossipkv {got!r}"


def test_commands_before_auth_get_noauth(
    gkv_auth: ServerProcess, redis_auth: ServerProcess
) -> None:
    steps = [
        ["PING"],
        ["GET", "k"],
        ["SET", "k", "v"],
        ["CLIENT", "ID"],
        ["CONFIG", "GET", "requirepass"],
        ["INFO"],
        ["SELECT", "0"],
        ["FLUSHALL"],
        ["NOSUCH", "a"],  # unknown commands are reported as such, auth or not
        ["GET"],  # so are arity errors
        ["HELLO"],
        ["HELLO", "3"],
        ["HELLO", "2", "SETNAME", "sneaky"],
        ["PING"],
    ]
    noauth = b"-NOAUTH Authentication required.\r\n"
    replies = transcript(redis_auth.port, steps)
    assert replies[0] == noauth and replies[-1] == noauth
    assert_same_as_redis(steps, gkv_auth, redis_auth)


def test_wrong_passwords_get_wrongpass(gkv_auth: ServerProcess, redis_auth: ServerProcess) -> None:
    steps = [
        ["AUTH", "wrong"],
        ["AUTH", "default", "wrong"],
        ["AUTH", "nosuchuser", PASSWORD],
        ["AUTH", ""],
        ["AUTH", PASSWORD + "x"],
        ["AUTH", "a", "b", "c"],
        ["AUTH"],
        ["HELLO", "3", "AUTH", "default", "wrong"],
        ["HELLO", "3", "AUTH", "nosuchuser", PASSWORD],
        ["PING"],  # still not authenticated
    ]
    replies = transcript(redis_auth.port, steps)
    assert replies[0].startswith(b"-WRONGPASS invalid username-password pair")
    assert_same_as_redis(steps, gkv_auth, redis_auth)


def test_auth_then_commands(gkv_auth: ServerProcess, redis_auth: ServerProcess) -> None:
    steps = [
        ["AUTH", PASSWORD],
        ["PING"],
        ["SET", "auth:k", "v"],
        ["GET", "auth:k"],
        ["AUTH", "wrong"],  # a failed AUTH does not undo the earlier one
        ["GET", "auth:k"],
        ["AUTH", "default", PASSWORD],
        ["DEL", "auth:k"],
        ["RESET"],  # back to unauthenticated
        ["GET", "auth:k"],
        ["AUTH", "DEFAULT", PASSWORD],  # user names are case-sensitive
        ["AUTH", "default", PASSWORD],
        ["PING"],
    ]
    replies = transcript(redis_auth.port, steps)
    assert replies[1] == b"+PONG\r\n" and replies[9].startswith(b"-NOAUTH")
    assert_same_as_redis(steps, gkv_auth, redis_auth)


def test_hello_with_auth_and_setname(gkv_auth: ServerProcess, redis_auth: ServerProcess) -> None:
    steps = [
        ["HELLO", "3", "AUTH", "default", PASSWORD, "SETNAME", "n"],
        ["CLIENT", "GETNAME"],
        ["GET", "missing"],  # RESP3 null
        ["HELLO", "2"],
        ["GET", "missing"],
        ["HELLO", "2", "AUTH", "default", PASSWORD, "SETNAME", "bad name"],
        ["CLIENT", "GETNAME"],
    ]
    replies = transcript(redis_auth.port, steps)
    assert replies[0].startswith(b"%7\r\n") and replies[2] == b"_\r\n"
    assert_same_as_redis(steps, gkv_auth, redis_auth)


def test_quit_needs_no_auth(gkv_auth: ServerProcess, redis_auth: ServerProcess) -> None:
    for server in (gkv_auth, redis_auth):
        with RespConnection(server.port) as conn:
            assert conn.call("QUIT").raw == b"+OK\r\n"
            assert conn.call("PING").kind == "closed"


def _raw(port: int, data: bytes) -> bytes:
    """Send ``data``; everything until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        out = bytearray()
        while True:
            try:
                chunk = sock.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"*11\r\n$4\r\nPING\r\n",  # refused from the count alone
        encode_command(["DEL"] + ["k"] * 10) + b"PING\r\n",
        b"*2\r\n$4\r\nECHO\r\n$16385\r\n",  # bulk longer than 16 KiB
        encode_command(["PING"]) + b"*11\r\n",  # earlier replies come first
    ],
    ids=["eleven-args", "eleven-args-whole", "bulk-over-16k", "after-a-ping"],
)
def test_unauthenticated_request_size_limits(
    request_bytes: bytes, gkv_auth: ServerProcess, redis_auth: ServerProcess
) -> None:
    expected = _raw(redis_auth.port, request_bytes)
    assert b"-ERR Protocol error: unauthenticated" in expected
    assert _raw(gkv_auth.port, request_bytes) == expected


def test_limits_lift_after_auth(gkv_auth: ServerProcess, redis_auth: ServerProcess) -> None:
    for server in (gkv_auth, redis_auth):
        with RespConnection(server.port) as conn:
            assert conn.call("AUTH", PASSWORD).raw == b"+OK\r\n"
            assert conn.call("DEL", *[f"k{i}" for i in range(20)]).raw == b":0\r\n"
            big = "x" * 20000
            assert conn.call("ECHO", big).raw == b"$20000\r\n" + big.encode() + b"\r\n"
    # Ten words or fewer are parsed before AUTH (and answered as usual); more after it.
    assert_same_as_redis([["ECHO", *"abcdefghi"], ["GET", *"abcdefghi"]], gkv_auth, redis_auth)
    assert_same_as_redis([["AUTH", PASSWORD], ["PING", *"abcdefghijk"]], gkv_auth, redis_auth)


def test_auth_pipelined_with_a_long_request(
    gkv_auth: ServerProcess, redis_auth: ServerProcess
) -> None:
    # AUTH and a request longer than the unauthenticated limit in ONE write: Redis runs AUTH
    # before it parses the next request, so the long one is accepted.
    payload = (
        encode_command(["AUTH", PASSWORD])
        + encode_command(["DEL"] + [f"k{i}" for i in range(20)])
        + encode_command(["ECHO", "y" * 20000])
        + encode_command(["QUIT"])
    )
    expected = _raw(redis_auth.port, payload)
    assert expected.startswith(b"+OK\r\n:0\r\n$20000\r\n")
    assert _raw(gkv_auth.port, payload) == expected


def test_requirepass_can_change_at_runtime(gkv_auth: ServerProcess) -> None:
    with RespConnection(gkv_auth.port) as admin:
        assert admin.call("AUTH", PASSWORD).raw == b"+OK\r\n"
        with RespConnection(gkv_auth.port) as waiting:
            assert waiting.call("PING").raw.startswith(b"-NOAUTH")
            try:
                assert admin.call("CONFIG", "SET", "requirepass", "").raw == b"+OK\r\n"
                # No password: every connection may run commands, as in Redis.
                assert waiting.call("PING").raw == b"+PONG\r\n"
                with RespConnection(gkv_auth.port) as fresh:
                    assert fresh.call("PING").raw == b"+PONG\r\n"
                assert admin.call("CONFIG", "SET", "requirepass", "other").raw == b"+OK\r\n"
                with RespConnection(gkv_auth.port) as fresh:
                    assert fresh.call("PING").raw.startswith(b"-NOAUTH")
                    assert fresh.call("AUTH", PASSWORD).raw.startswith(b"-WRONGPASS")
                    assert fresh.call("AUTH", "other").raw == b"+OK\r\n"
                # Connections that were authenticated stay so.
                assert admin.call("PING").raw == b"+PONG\r\n"
            finally:
                admin.call("CONFIG", "SET", "requirepass", PASSWORD)
        assert admin.call("CONFIG", "GET", "requirepass").raw == (
            b"*2\r\n$11\r\nrequirepass\r\n$%d\r\n%s\r\n" % (len(PASSWORD), PASSWORD.encode())
        )
