"""Reply encoding for RESP2 and RESP3, dispatched on the reply's type for speed."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final

from gossipkv.commands.replies import ErrorReply, NullArray, RespSet, Status, Verbatim

Encoder = Callable[[Any], bytes]

_OK: Final = b"+OK\r\n"


_BULK_HEAD_MAX: Final = 1024
_BULK_HEADS: Final = [b"$%d" % n for n in range(_BULK_HEAD_MAX)]  # CRLF added by the join


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def _bulk_array(values: list[bytes]) -> bytes:
    """An array of bulk strings, the same in RESP2 and RESP3: no dispatch per value; the length
    headers of short values come ready-made, and the join puts in every CRLF."""
    out = [b"*%d" % len(values)]
    for x in values:
        n = len(x)
        out.append(_BULK_HEADS[n] if n < _BULK_HEAD_MAX else b"$%d" % n)
        out.append(x)
    out.append(b"")
    return b"\r\n".join(out)


def _int(i: int) -> bytes:
    return b":%d\r\n" % i


def _status(s: bytes) -> bytes:
    return b"+%s\r\n" % s


def error_bytes(message: str) -> bytes:
    """Error replies are one line: Redis turns CR and LF inside the message into spaces."""
    msg = message.encode("utf-8", "surrogateescape").replace(b"\r", b" ").replace(b"\n", b" ")
    return b"-%s\r\n" % msg


def _error(e: ErrorReply) -> bytes:
    return error_bytes(e.message)


def format_double(d: float) -> bytes:
    """Redis's %.17g with inf/-inf/nan spelled as it does."""
    if -1e17 < d < 1e17:  # finite, and an integral value prints as %.17g would
        i = int(d)
        if i == d:
            if i == 0 and math.copysign(1.0, d) < 0:
                return b"-0"
            return b"%d" % i
        return b"%.17g" % d
    if d != d:
        return b"nan"
    if d == math.inf:
        return b"inf"
    if d == -math.inf:
        return b"-inf"
    return b"%.17g" % d


def _make(resp3: bool) -> Encoder:
    null = b"_\r\n" if resp3 else b"$-1\r\n"
    null_array = b"_\r\n" if resp3 else b"*-1\r\n"
    table: dict[type, Encoder] = {}

    def encode(r: Any) -> bytes:
        return table[type(r)](r)

    def array(items: Sequence[Any]) -> bytes:
        if type(items) is list:
            # Typed as a list, the loops below compile to direct item access: a third cheaper
            # than through the Sequence protocol (LRANGE, MGET, SMEMBERS...).
            values: list[Any] = items
            plain = True
            for x in values:
                if type(x) is not bytes:
                    plain = False
                    break
            if plain:
                return _bulk_array(values)
        # Members with scores (ZPOPMIN, WITHSCORES) encode their two types without dispatch.
        out = [b"*%d\r\n" % len(items)]
        for x in items:
            t = type(x)
            if t is bytes:
                out.append(_bulk(x))
            elif t is float:
                out.append(double(x))
            else:
                out.append(encode(x))
        return b"".join(out)

    def mapping(d: dict[Any, Any]) -> bytes:
        parts = [b"%%%d\r\n" % len(d) if resp3 else b"*%d\r\n" % (2 * len(d))]
        for k, v in d.items():
            parts.append(encode(k))
            parts.append(encode(v))
        return b"".join(parts)

    def rset(items: RespSet) -> bytes:
        head = b"~%d\r\n" if resp3 else b"*%d\r\n"
        return head % len(items) + b"".join([encode(x) for x in items])

    def double(d: float) -> bytes:
        s = format_double(d)
        return b",%s\r\n" % s if resp3 else _bulk(s)

    def verbatim(v: Verbatim) -> bytes:
        if resp3:
            return b"=%d\r\ntxt:%s\r\n" % (len(v) + 4, v)
        return _bulk(v)

    def boolean(b: bool) -> bytes:
        if resp3:
            return b"#t\r\n" if b else b"#f\r\n"
        return b":1\r\n" if b else b":0\r\n"

    table.update(
        {
            bytes: _bulk,
            int: _int,
            bool: boolean,
            Status: lambda s: _OK if s == b"OK" else _status(s),
            type(None): lambda _: null,
            NullArray: lambda _: null_array,
            list: array,
            tuple: array,
            RespSet: rset,
            dict: mapping,
            float: double,
            Verbatim: verbatim,
            ErrorReply: _error,
            str: lambda s: _bulk(s.encode()),
        }
    )
    return encode


encode_resp2: Final[Encoder] = _make(resp3=False)
encode_resp3: Final[Encoder] = _make(resp3=True)
ENCODERS: Final[dict[int, Encoder]] = {2: encode_resp2, 3: encode_resp3}
