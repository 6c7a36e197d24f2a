"""The request parser: the hiredis fast path and the exact path must agree on every input.

Redis's own framing rules are checked against redis-server in tests/test_protocol.py; here the
two parsers are held to each other over random streams split at random points.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipkv.resp.parser import ProtocolError, RequestParser, split_args


def run(chunks: list[bytes], exact: bool = False) -> tuple[list[list[bytes]], str | None]:
    parser = RequestParser()
    out: list[list[bytes]] = []
    try:
        for c in chunks:
            if not c:
                continue
            if exact:
                parser._feed_exact(c, out)
            else:
                parser.feed(c, out)
    except ProtocolError as e:
        return out, e.message
    return out, None


def encode(argv: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(argv) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in argv)


args = st.lists(st.binary(max_size=40), min_size=1, max_size=6)
noise = st.sampled_from(
    [
        b"*-1\r\n", b"*0\r\n", b"*1\r\n+PING\r\n", b"*1\r\n:1\r\n", b"*2\r\n$-1\r\n",
        b"*1\r\n$03\r\nabc\r\n", b"*99999999999\r\n", b"*1\r\n$600000000\r\n",
        b"PING\r\n", b"SET a 'b c'\r\n", b"\r\n", b'ECHO "x\r\n', b"*1\r\n*1\r\n$1\r\na\r\n",
        b"*x\r\n", b"*1\r\n$x\r\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.one_of(args.map(encode), noise), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_fast_path_agrees_with_exact_parser(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts)
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert run(chunks) == run([stream], exact=True)


def test_a_short_element_cannot_hide_a_partial_request() -> None:
    # "+PING" is three bytes shorter than its canonical "$4"; with three bytes of the next
    # request in the same read, the byte count alone would balance.
    stream = b"*1\r\n+PING\r\n" + encode([b""])
    assert run([stream[:14], stream[14:]]) == ([], "expected '$', got '+'")


def test_pipelined_requests_parse_in_order() -> None:
    stream = encode([b"SET", b"k", b"v"]) + encode([b"GET", b"k"]) * 3
    assert run([stream]) == ([[b"SET", b"k", b"v"]] + [[b"GET", b"k"]] * 3, None)


def test_a_request_split_byte_by_byte() -> None:
    stream = encode([b"SET", b"key", b"x" * 100])
    assert run([bytes([b]) for b in stream]) == ([[b"SET", b"key", b"x" * 100]], None)


@pytest.mark.parametrize(
    ("stream", "error"),
    [
        (b"*3000000000\r\n", "invalid multibulk length"),
        (b"*1\r\n+PING\r\n", "expected '$', got '+'"),
        (b"*1\r\n$-5\r\n", "invalid bulk length"),
        (b"*1\r\n$536870913\r\n", "invalid bulk length"),
        (b"*1\r\n$03\r\nabc\r\n", "invalid bulk length"),
        (b'SET a "b\r\n', "unbalanced quotes in request"),
        (b"x" * (64 * 1024 + 1), "too big inline request"),
    ],
)
def test_redis_protocol_errors(stream: bytes, error: str) -> None:
    assert run([stream])[1] == error


def test_huge_count_is_refused_from_the_header_alone() -> None:
    # Nothing but the header has arrived: the refusal cannot depend on the elements.
    assert run([b"*2147483648\r\n"])[1] == "invalid multibulk length"


def test_unauthenticated_limits() -> None:
    parser = RequestParser()
    parser.authenticated = False
    with pytest.raises(ProtocolError, match="unauthenticated multibulk length"):
        parser.feed(b"*11\r\n", [])


@pytest.mark.parametrize(
    ("line", "argv"),
    [
        (b"SET a b", [b"SET", b"a", b"b"]),
        (b'SET "a b" c', [b"SET", b"a b", b"c"]),
        (b'ECHO "\\x41\\n"', [b"ECHO", b"A\n"]),
        (b"ECHO 'it\\'s'", [b"ECHO", b"it's"]),
        (b"   ", []),
        (b'ECHO "a"b', None),
        (b"ECHO 'a", None),
    ],
)
def test_inline_splitting(line: bytes, argv: list[bytes] | None) -> None:
    assert split_args(line) == argv
