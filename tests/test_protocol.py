"""The wire protocol over raw sockets: the same bytes to gossipkv and to redis-server, the same
bytes back, connection closes included.

Framing errors, limits checked from a header alone, inline commands, pipelining in front of bad
input, requests split across many sends, connections closed by QUIT and CLIENT KILL, INFO and
DEBUG DIGEST over the wire, a client that floods requests without reading its replies, many
clients pipelining at once, and what redis-py and redis-cli make of the server commands' replies.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence

import pytest
import redis

from tests.differential.harness import RespConnection, encode_command
from tests.servers import ServerProcess, start_redis, wait_for

TIMEOUT = 10.0  # a guard against a server that never answers, never a pass/fail criterion
END = encode_command(["ECHO", "end-of-case"])
END_REPLY = b"$11\r\nend-of-case\r\n"


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def read_until(sock: socket.socket, tail: bytes) -> bytes:
    data = bytearray()
    while not data.endswith(tail):
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise AssertionError(f"connection closed after {bytes(data)[-200:]!r}")
        data += chunk
    return bytes(data)


def exchange(port: int, chunks: Sequence[bytes], closes: bool) -> bytes:
    """Send ``chunks`` one send each; return every reply. A case that ``closes`` the connection
    is read to its end; any other is followed by an ECHO whose reply marks the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for chunk in chunks:
            sock.sendall(chunk)
        if closes:
            return read_until_closed(sock) + b"<closed>"
        sock.sendall(END)
        return read_until(sock, END_REPLY)[: -len(END_REPLY)]


def ping(n: int = 1) -> bytes:
    return encode_command(["PING"]) * n


# (id, chunks sent one by one, whether the server closes the connection)
CASES: list[tuple[str, list[bytes], bool]] = [
    # multibulk counts
    ("count-not-a-number", [b"*abc\r\n"], True),
    ("count-with-plus-sign", [b"*+1\r\n$4\r\nPING\r\n"], True),
    ("count-with-leading-zero", [b"*01\r\n$4\r\nPING\r\n"], True),
    ("count-above-int-max", [b"*2147483648\r\n"], True),
    ("count-far-above-int-max", [b"*99999999999999999999\r\n"], True),
    ("count-negative-is-skipped", [b"*-1\r\n" + ping()], False),
    ("count-zero-is-skipped", [b"*0\r\n" + ping()], False),
    ("count-string-too-long", [b"*" + b"1" * (65 * 1024)], True),
    # bulk headers
    ("expected-dollar", [b"*1\r\nx\r\n"], True),
    ("expected-dollar-got-colon", [b"*2\r\n$4\r\nECHO\r\n:1\r\n"], True),
    ("bulk-length-negative", [b"*1\r\n$-1\r\n"], True),
    ("bulk-length-not-a-number", [b"*1\r\n$abc\r\n"], True),
    ("bulk-length-empty", [b"*1\r\n$\r\n"], True),
    ("bulk-length-huge", [b"*1\r\n$99999999999\r\n"], True),
    ("bulk-length-above-512mb", [b"*2\r\n$4\r\nECHO\r\n$536870913\r\n"], True),
    ("bulk-count-string-too-long", [b"*1\r\n$" + b"1" * (65 * 1024)], True),
    ("bulk-not-followed-by-crlf", [b"*2\r\n$4\r\nECHO\r\n$3\r\nabcXY" + ping()], False),
    # inline commands
    ("inline-too-big", [b"A" * (65 * 1024)], True),
    ("inline-just-under-limit", [b"ECHO " + b"a" * (64 * 1024 - 10) + b"\r\n"], False),
    ("inline-unbalanced-double-quote", [b'SET "a b\r\n'], True),
    ("inline-unbalanced-single-quote", [b"SET 'a b\r\n"], True),
    ("inline-quote-followed-by-text", [b'ECHO "a"b\r\n'], True),
    ("inline-hex-and-escapes", [b'ECHO "a\\x41\\n\\tb\\a\\b\\"\\\\z"\r\n'], False),
    ("inline-bad-hex-escape", [b'ECHO "\\xZZ"\r\n'], False),
    ("inline-single-quotes", [b"ECHO 'it\\'s' 'a\\nb'\r\n"], False),
    ("inline-empty-quoted", [b'ECHO ""\r\n'], False),
    ("inline-cr-inside-quotes", [b'ECHO "a\rb"\r\n'], False),
    ("inline-tabs-separate", [b"ECHO\thello\r\n"], False),
    ("inline-lf-only", [b"PING\nECHO x\n"], False),
    ("inline-empty-lines", [b"\r\n\r\n\n   \r\n" + ping()], False),
    ("inline-unknown-command", [b"NOSUCH a 'b c'\r\n"], False),
    ("inline-wrong-arity", [b"GET\r\n"], False),
    # pipelines: earlier replies first, then the error, then the close
    ("pipeline-then-garbage", [b"PING\r\nECHO x\r\n" + ping(3) + b"*1\r\nfoo\r\n"], True),
    ("pipeline-then-bad-bulk", [ping(2) + b"*1\r\n$-5\r\n" + ping()], True),
    ("pipeline-then-unbalanced-inline", [ping(2) + b'ECHO "x\r\n' + ping()], True),
    ("pipeline-of-mixed-forms", [b"PING\r\n" + encode_command(["ECHO", "a b"]) + b"ECHO c\n"],
     False),
    # one request split over many sends
    ("split-every-byte", [bytes([c]) for c in encode_command(["ECHO", "0123456789"])], False),
    ("split-inside-headers", [b"*", b"2\r", b"\n$", b"4\r\nEC", b"HO\r\n$1", b"0\r\n01234",
                              b"56789\r", b"\n"], False),
    ("split-inline", [b"EC", b"HO \"a", b" b\"", b"\r", b"\n"], False),
]


@pytest.mark.parametrize(("chunks", "closes"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_same_bytes_back_as_redis(
    chunks: list[bytes], closes: bool, gkv: ServerProcess, redis_ref: ServerProcess
) -> None:
    expected = exchange(redis_ref.port, chunks, closes)
    assert exchange(gkv.port, chunks, closes) == expected


def test_a_large_bulk_in_small_pieces(gkv: ServerProcess, redis_ref: ServerProcess) -> None:
    value = bytes(range(256)) * 1024  # 256 KiB, every byte value
    request = encode_command(["SET", "split:big", value]) + encode_command(["GET", "split:big"])
    chunks = [request[i : i + 1000] for i in range(0, len(request), 1000)]
    expected = exchange(redis_ref.port, chunks, closes=False)
    assert expected == b"+OK\r\n$262144\r\n" + value + b"\r\n"
    assert exchange(gkv.port, chunks, closes=False) == expected


@pytest.mark.parametrize(
    "header",
    [b"*2\r\n$3\r\nGET\r\n$536870913\r\n", b"*4294967296\r\n", b"*1\r\n$9223372036854775808\r\n"],
    ids=["bulk-over-512mb", "count-over-uint32", "bulk-over-int64"],
)
def test_oversized_headers_are_refused_before_any_body(
    header: bytes, gkv: ServerProcess, redis_ref: ServerProcess
) -> None:
    """The limit is enforced from the header alone: the reply and the close come without the
    server waiting for (or allocating) the body the header announced."""
    expected = exchange(redis_ref.port, [header], closes=True)
    assert expected.startswith(b"-ERR Protocol error: invalid")
    assert exchange(gkv.port, [header], closes=True) == expected


# -- connections closed by commands ---------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [b"QUIT\r\nPING\r\n", encode_command(["QUIT", "extra"]) + ping(), ping(2) + b"QUIT\r\n"],
    ids=["inline", "with-argument", "after-pipeline"],
)
def test_quit_replies_ok_then_closes(
    request_bytes: bytes, gkv: ServerProcess, redis_ref: ServerProcess
) -> None:
    expected = exchange(redis_ref.port, [request_bytes], closes=True)
    assert expected.endswith(b"+OK\r\n<closed>")
    assert exchange(gkv.port, [request_bytes], closes=True) == expected


@pytest.mark.parametrize("server", ["gkv", "redis_ref"])
def test_client_kill_closes_the_named_connection(
    server: str, request: pytest.FixtureRequest
) -> None:
    port = request.getfixturevalue(server).port
    with RespConnection(port) as victim, RespConnection(port) as killer:
        victim_id = victim.call("CLIENT", "ID").value
        assert killer.call("CLIENT", "KILL", "ID", str(victim_id)).raw == b":1\r\n"
        assert victim.call("PING").kind == "closed"
        assert killer.call("PING").raw == b"+PONG\r\n"
        assert killer.call("CLIENT", "KILL", "ID", str(victim_id)).raw == b":0\r\n"


@pytest.mark.parametrize("server", ["gkv", "redis_ref"])
def test_client_kill_by_address_old_form(server: str, request: pytest.FixtureRequest) -> None:
    port = request.getfixturevalue(server).port
    with RespConnection(port) as victim, RespConnection(port) as killer:
        addr = re.search(rb" addr=(\S+) ", victim.call("CLIENT", "INFO").value)
        assert addr is not None
        assert killer.call("CLIENT", "KILL", addr.group(1)).raw == b"+OK\r\n"
        assert victim.call("PING").kind == "closed"
        assert killer.call("CLIENT", "KILL", addr.group(1)).raw == b"-ERR No such client\r\n"


@pytest.mark.parametrize("server", ["gkv", "redis_ref"])
def test_client_kill_of_itself_replies_then_closes(
    server: str, request: pytest.FixtureRequest
) -> None:
    port = request.getfixturevalue(server).port
    with RespConnection(port) as conn:
        own_id = conn.call("CLIENT", "ID").value
        assert conn.call("CLIENT", "KILL", "ID", str(own_id)).raw == b":0\r\n"  # SKIPME yes
        killed = conn.call("CLIENT", "KILL", "ID", str(own_id), "SKIPME", "no")
        assert killed.raw == b":1\r\n"
        assert conn.call("PING").kind == "closed"


def test_client_list_shows_connections_as_redis_does(gkv: ServerProcess) -> None:
    with RespConnection(gkv.port) as a, RespConnection(gkv.port) as b:
        assert a.call("CLIENT", "SETNAME", "first").raw == b"+OK\r\n"
        b.call("HELLO", "3")
        assert b.call("CLIENT", "NO-EVICT", "on").raw == b"+OK\r\n"
        a_id, b_id = a.call("CLIENT", "ID").value, b.call("CLIENT", "ID").value
        listing = a.call("CLIENT", "LIST", "ID", str(a_id), str(b_id))
        assert listing.kind == "bulk"
        lines = listing.value.decode().splitlines()
        fields = [dict(f.split("=", 1) for f in line.split(" ")) for line in lines]
        assert [f["id"] for f in fields] == [str(a_id), str(b_id)]
        assert fields[0]["name"] == "first" and fields[0]["flags"] == "N"
        assert fields[1]["flags"] == "e" and fields[1]["resp"] == "3"
        verbatim = b.call("CLIENT", "INFO")
        assert verbatim.kind == "verbatim" and verbatim.value.startswith(b"txt:id=")


# -- INFO, DEBUG ----------------------------------------------------------------------------


def test_info_fields_and_reply_types(gkv: ServerProcess) -> None:
    with RespConnection(gkv.port) as conn:
        conn.call("FLUSHALL")
        conn.call("SET", "info:a", "1")
        conn.call("SET", "info:b", "2")
        conn.call("PEXPIRE", "info:b", "100000")
        conn.call("GET", "info:a")
        conn.call("GET", "info:missing")
        text = conn.call("INFO").value.decode()
        fields = dict(
            line.split(":", 1) for line in text.split("\r\n") if line and not line.startswith("#")
        )
        for name in ("redis_version", "gossipkv_version", "arch_bits", "blocked_clients",
                     "connected_clients", "used_memory", "keyspace_hits", "keyspace_misses",
                     "expired_keys", "total_commands_processed", "cluster_enabled"):
            assert name in fields, name
        assert fields["redis_version"] == "7.0.15"
        assert fields["cluster_enabled"] == "0"
        assert int(fields["used_memory"]) > 0
        assert int(fields["keyspace_hits"]) >= 1 and int(fields["keyspace_misses"]) >= 1
        assert fields["db0"] == "keys=2,expires=1,avg_ttl=0"
        assert text.startswith("# Server\r\n") and text.endswith("\r\n")
        assert "\r\n\r\n# Keyspace\r\n" in text
        assert "# Commandstats" not in text
        assert "# Commandstats" in conn.call("INFO", "all").value.decode()
        assert conn.call("HELLO", "3").kind == "map"
        info3 = conn.call("INFO", "keyspace")
        assert info3.kind == "verbatim"
        assert info3.raw.startswith(b"=") and info3.value == b"txt:# Keyspace\r\n" + (
            b"db0:keys=2,expires=1,avg_ttl=0\r\n"
        )


@pytest.fixture(scope="module")
def redis_debug(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A redis-server that allows DEBUG (the shared reference refuses it by default)."""
    server = start_redis(tmp_path_factory.mktemp("redis-debug"), "--enable-debug-command", "yes")
    yield server
    server.stop()


DATASET = [("a", "1"), ("b", "hello"), ("counter", "42"), ("spaced key", "v a l u e"),
           ("empty", "")]


def _load(conn: RespConnection, pairs: Sequence[tuple[str, str]]) -> None:
    assert conn.call("FLUSHALL").raw == b"+OK\r\n"
    for key, value in pairs:
        assert conn.call("SET", key, value).raw == b"+OK\r\n"


def test_debug_digest_is_redis_digest(gkv: ServerProcess, redis_debug: ServerProcess) -> None:
    with RespConnection(gkv.port) as g, RespConnection(redis_debug.port) as r:
        for conn in (g, r):
            assert conn.call("FLUSHALL").raw == b"+OK\r\n"
        empty = r.call("DEBUG", "DIGEST")
        assert empty.raw == b"+" + b"0" * 40 + b"\r\n"
        assert g.call("DEBUG", "DIGEST").raw == empty.raw
        for conn in (g, r):
            _load(conn, DATASET)
        assert g.call("DEBUG", "DIGEST").raw == r.call("DEBUG", "DIGEST").raw
        keys = ["a", "b", "missing", "spaced key", "empty"]
        per_key = r.call("DEBUG", "DIGEST-VALUE", *keys)
        assert g.call("DEBUG", "DIGEST-VALUE", *keys).raw == per_key.raw
        assert g.call("DEBUG", "DIGEST-VALUE").raw == r.call("DEBUG", "DIGEST-VALUE").raw
        for args in (["DEBUG", "NOSUCH"], ["DEBUG", "DIGEST", "x"], ["DEBUG", "SLEEP"],
                     ["DEBUG", "SLEEP", "0"], ["DEBUG", "SLEEP", "abc"], ["DEBUG"]):
            assert g.call(*args).raw == r.call(*args).raw, args


def test_debug_digest_ignores_write_order_and_sees_every_change(gkv: ServerProcess) -> None:
    with RespConnection(gkv.port) as conn:
        _load(conn, DATASET)
        forward = conn.call("DEBUG", "DIGEST").value
        _load(conn, list(reversed(DATASET)))
        assert conn.call("DEBUG", "DIGEST").value == forward
        conn.call("SET", "a", "2")
        changed = conn.call("DEBUG", "DIGEST").value
        assert changed != forward
        conn.call("SET", "a", "1")
        assert conn.call("DEBUG", "DIGEST").value == forward
        # Deadlines count: the same absolute deadline digests alike, another one does not.
        deadline = str(4_000_000_000_000)
        conn.call("PEXPIREAT", "a", deadline)
        with_ttl = conn.call("DEBUG", "DIGEST").value
        assert with_ttl not in (forward, changed)
        conn.call("PEXPIREAT", "a", str(4_000_000_000_001))
        assert conn.call("DEBUG", "DIGEST").value != with_ttl
        conn.call("PEXPIREAT", "a", deadline)
        assert conn.call("DEBUG", "DIGEST").value == with_ttl
        conn.call("PERSIST", "a")
        assert conn.call("DEBUG", "DIGEST").value == forward
        conn.call("FLUSHALL")
        assert conn.call("DEBUG", "DIGEST").value == b"0" * 40


# -- backpressure ---------------------------------------------------------------------------

VALUE_SIZE = 1024 * 1024
# gossipkv's per-connection write buffer high-water mark is 4 MiB. Without backpressure a
# client sending GETs of a 1 MiB value would have gigabytes queued within a second.
OUTPUT_BOUND = 64 * 1024 * 1024
RSS_GROWTH_BOUND = 256 * 1024 * 1024


def _client_field(listing: bytes | None, client_id: int, name: str) -> int:
    assert listing is not None, "the server stopped answering CLIENT LIST"
    for line in listing.decode().splitlines():
        fields = dict(f.split("=", 1) for f in line.split(" "))
        if fields["id"] == str(client_id):
            return int(fields[name])
    raise AssertionError(f"client {client_id} is not in CLIENT LIST")


def _rss(conn: RespConnection) -> int:
    text = conn.call("INFO", "memory").value.decode()
    match = re.search(r"used_memory_rss:(\d+)", text)
    assert match is not None
    return int(match.group(1))


def test_a_client_that_never_reads_stays_bounded(gkv: ServerProcess) -> None:
    with RespConnection(gkv.port) as monitor:
        assert monitor.call("SET", "flood:big", b"v" * VALUE_SIZE).raw == b"+OK\r\n"
        rss_before = _rss(monitor)
        flooder = socket.create_connection(("127.0.0.1", gkv.port))
        flooder.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stop = threading.Event()
        sent = [0]

        def flood() -> None:
            batch = encode_command(["GET", "flood:big"]) * 1000
            try:
                while not stop.is_set():
                    flooder.sendall(batch)  # blocks for good once the server stops reading
                    sent[0] += len(batch)
            except OSError:
                pass

        thread = threading.Thread(target=flood, daemon=True)
        try:
            flooder.sendall(encode_command(["CLIENT", "ID"]))
            flooder_id = int(read_until(flooder, b"\r\n")[1:-2])
            thread.start()
            peak = [0]

            def buffered_past_high_water() -> bool:
                omem = _client_field(monitor.call("CLIENT", "LIST").value, flooder_id, "omem")
                peak[0] = max(peak[0], omem)
                assert omem <= OUTPUT_BOUND, f"output buffer grew to {omem} bytes"
                return omem > 4 * 1024 * 1024

            wait_for(buffered_past_high_water, TIMEOUT, "the flooder's replies to pile up")
            # The server is now holding replies the flooder will never read. Whatever it still
            # accepts from the socket, its buffer for that client stays under the bound ...
            for _ in range(50):
                listing = monitor.call("CLIENT", "LIST").value
                omem = _client_field(listing, flooder_id, "omem")
                assert omem <= OUTPUT_BOUND, f"output buffer grew to {omem} bytes"
            assert _rss(monitor) - rss_before <= RSS_GROWTH_BOUND
            # ... and every other client is served as usual.
            assert monitor.call("PING").raw == b"+PONG\r\n"
            big = monitor.call("GET", "flood:big")
            assert big.kind == "bulk" and len(big.value) == VALUE_SIZE
            with RespConnection(gkv.port) as other:
                assert other.call("SET", "flood:other", "x").raw == b"+OK\r\n"
                assert other.call("GET", "flood:other").raw == b"$1\r\nx\r\n"
            # The flooder was held back: far less went through than unbounded reading allows.
            assert sent[0] < OUTPUT_BOUND
        finally:
            stop.set()
            with contextlib.suppress(OSError):
                flooder.shutdown(socket.SHUT_RDWR)  # wakes the sender blocked in sendall
            flooder.close()
            thread.join(TIMEOUT)
        wait_for(
            lambda: f"id={flooder_id} ".encode() not in monitor.call("CLIENT", "LIST").value,
            TIMEOUT,
            "the flooder's connection to be gone",
        )
        monitor.call("DEL", "flood:big")


def test_many_clients_pipelining_at_once_each_get_their_own_replies_in_order(
    gkv: ServerProcess,
) -> None:
    """Replies wait for the end of the event loop's iteration and then go out for every
    connection at once: none may be lost, reordered or written to another connection."""
    clients, depth, rounds = 32, 50, 3
    socks = [
        socket.create_connection(("127.0.0.1", gkv.port), timeout=TIMEOUT) for _ in range(clients)
    ]
    try:
        for r in range(rounds):
            expected = []
            for i, sock in enumerate(socks):
                words = [f"c{i}-r{r}-{j}".encode() for j in range(depth)]
                sock.sendall(b"".join(encode_command(["ECHO", w]) for w in words) + END)
                expected.append(b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
            for sock, want in zip(socks, expected, strict=True):
                assert read_until(sock, END_REPLY) == want + END_REPLY
    finally:
        for sock in socks:
            sock.close()


# -- what real clients make of these replies ------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_redis_py_reads_server_replies(protocol: int, gkv: ServerProcess) -> None:
    client = redis.Redis(port=gkv.port, protocol=protocol, socket_timeout=TIMEOUT)
    try:
        commands = client.command()
        assert commands["get"]["arity"] == 2 and "readonly" in commands["get"]["flags"]
        assert client.command_count() == len(commands)
        assert b"config|get" in client.command_list() or "config|get" in client.command_list()
        assert client.command_getkeys("SET", "k", "v") in ([b"k"], ["k"])
        assert client.config_get("maxmemory") in ({"maxmemory": "0"}, {b"maxmemory": b"0"})
        info = client.info()
        assert info["redis_version"] == "7.0.15" and info["cluster_enabled"] == 0
        assert client.info("keyspace") is not None
        assert client.client_setname("py-client") is True
        assert any(c["name"] == "py-client" for c in client.client_list())
        assert client.client_info()["id"] == client.client_id()
        assert client.dbsize() >= 0
        assert client.time()[0] > 0
        assert client.ping() is True
        assert client.echo("hi") == b"hi"
        assert client.select(0) is True
        with pytest.raises(redis.ResponseError, match="DB index is out of range"):
            client.select(1)
    finally:
        client.close()


def test_redis_cli_fetches_command_docs(gkv: ServerProcess) -> None:
    """redis-cli's interactive mode builds its hints from COMMAND DOCS."""
    out = subprocess.run(
        ["redis-cli", "-p", str(gkv.port), "COMMAND", "DOCS", "get", "config"],
        capture_output=True, timeout=TIMEOUT, check=True,
    ).stdout.decode()
    assert "summary" in out and "subcommands" in out and "config|get" in out
