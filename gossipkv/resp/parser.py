"""Request parsing with Redis's exact framing rules and error texts.

Two parsers share one contract. hiredis (C) parses the common case: a read batch that starts at
a request boundary, holds only complete multibulk requests, and passes a guard. The guard is a
regex scan for headers that could make hiredis allocate by a client-declared size (``*`` counts of
a million and more, ``$`` lengths of 100 MB and more), plus a check after parsing that the batch
was exactly the canonical ``*N``/``$len`` encoding of what hiredis returned, every argument a bulk
string. Anything else — inline commands, partial requests, big values, malformed input, clients
before AUTH — goes to the Python parser below, which applies Redis's checks header by header,
before anything is allocated, and raises Redis's exact protocol errors.
"""

from __future__ import annotations

import re
from typing import Final

import hiredis

from gossipkv.crdt.numeric import parse_int

INLINE_MAX: Final = 64 * 1024  # PROTO_INLINE_MAX_SIZE
INT_MAX: Final = 2**31 - 1
DEFAULT_MAX_BULK: Final = 512 * 1024 * 1024
UNAUTH_MAX_COUNT: Final = 10
UNAUTH_MAX_BULK: Final = 16384


class ProtocolError(Exception):
    """Malformed input: the reply is ``-ERR <message>`` and the connection closes after it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_ESCAPES: Final = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_HEX: Final = b"0123456789abcdefABCDEF"


def split_args(line: bytes) -> list[bytes] | None:
    """sdssplitargs: whitespace-separated words, "double" quotes with escapes, 'single' quotes.

    Returns None on unbalanced quotes, like Redis, so the caller can reply with its error.
    """
    out: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in b" \n\r\t\v\f\x00":
            i += 1
        if i >= n:
            return out
        cur = bytearray()
        inq = insq = False
        while True:
            if inq:
                if i >= n:
                    return None
                c = line[i]
                if (
                    c == 92
                    and i + 3 < n
                    and line[i + 1] == 120
                    and line[i + 2] in _HEX
                    and line[i + 3] in _HEX
                ):
                    cur.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 92 and i + 1 < n:
                    i += 1
                    cur.append(_ESCAPES.get(line[i], line[i]))
                elif c == 34:
                    if i + 1 < n and line[i + 1] not in b" \n\r\t\v\f\x00":
                        return None
                    inq = False
                    i += 1
                    break
                else:
                    cur.append(c)
            elif insq:
                if i >= n:
                    return None
                c = line[i]
                if c == 92 and i + 1 < n and line[i + 1] == 39:
                    i += 1
                    cur.append(39)
                elif c == 39:
                    if i + 1 < n and line[i + 1] not in b" \n\r\t\v\f\x00":
                        return None
                    insq = False
                    i += 1
                    break
                else:
                    cur.append(c)
            else:
                if i >= n:
                    break
                c = line[i]
                if c in b" \n\r\t\x00":
                    break
                if c == 34:
                    inq = True
                elif c == 39:
                    insq = True
                else:
                    cur.append(c)
            i += 1
        out.append(bytes(cur))


# A multibulk count hiredis would allocate a list for as soon as it reads the header: checked
# by Redis's rules first. Other odd headers (negative lengths, a bulk past the limit) either
# make hiredis fail or leave a request incomplete, or fail the size checks after parsing; each
# sends the batch to the exact parser.
_HUGE_COUNT: Final = re.compile(rb"\*\d{7}").search
# Decimal digits of small numbers, so the canonical-size check costs no string formatting.
_DIGITS: Final = [len(str(i)) for i in range(10000)]


class RequestParser:
    """Turns a byte stream into argument vectors, keeping any partial request for later."""

    __slots__ = ("_need", "_pending", "_reader", "authenticated", "max_bulk")

    def __init__(self, max_bulk: int = DEFAULT_MAX_BULK) -> None:
        self._reader = hiredis.Reader()
        self._pending = bytearray()
        self._need = 0  # buffer length below which re-parsing cannot make progress
        self.max_bulk = max_bulk
        self.authenticated = True  # the connection sets this False while AUTH is required

    @property
    def buffered(self) -> int:
        """Bytes received but not yet parsed into a request (the query buffer)."""
        return len(self._pending)

    def feed(self, data: bytes, out: list[list[bytes]]) -> None:
        """Append complete requests from ``data`` to ``out``; raise ProtocolError on bad input.

        Requests parsed before the bad one are in ``out`` when the error is raised, so the
        caller can answer them before the error, as Redis does.
        """
        if self._pending or not self.authenticated or data[:1] != b"*" or _HUGE_COUNT(data):
            self._feed_exact(data, out)
            return
        reader = self._reader
        reader.feed(data)
        first = len(out)
        digits = _DIGITS
        try:
            size = 0
            req = reader.gets()
            while req is not False:
                # _canonical_size, inlined: this loop runs once per request.
                n = len(req)
                if n == 0 or n >= 10000:
                    raise TypeError("not a plain request")
                size += 3 + digits[n]
                for a in req:
                    if type(a) is not bytes:
                        raise TypeError("not a bulk string")
                    m = len(a)
                    if m >= 10000:
                        if m > self.max_bulk:
                            raise TypeError("a bulk past the limit")
                        size += m + 5 + len(str(m))
                    else:
                        size += m + 5 + digits[m]
                out.append(req)
                req = reader.gets()
            # Every byte accounted for by canonical requests, and nothing left half-parsed:
            # a shorter non-canonical element plus a partial request can add up to the same.
            if size == len(data) and not reader.has_data():
                return
        except (hiredis.ProtocolError, TypeError):
            pass
        # Not the plain case: start over on the same bytes with the exact parser.
        del out[first:]
        self._reader = hiredis.Reader()
        self._feed_exact(data, out)

    def _feed_exact(self, data: bytes, out: list[list[bytes]]) -> None:
        pending = self._pending
        if pending:
            pending += data
            if len(pending) < self._need:
                return
            buf = bytes(pending)
            pending.clear()
        else:
            buf = data
        n = len(buf)
        pos = 0
        self._need = 0
        find = buf.find
        while pos < n:
            if buf[pos] != 42:  # not '*': an inline command
                nl = find(b"\n", pos)
                if nl < 0:
                    if n - pos > INLINE_MAX:
                        raise ProtocolError("too big inline request")
                    break
                end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
                argv = split_args(buf[pos:end])
                if argv is None:
                    raise ProtocolError("unbalanced quotes in request")
                pos = nl + 1
                if argv:
                    out.append(argv)
                    if not self.authenticated:
                        break  # one at a time until AUTH has run: its limits depend on it
                continue
            cr = find(b"\r", pos)
            if cr < 0 or cr + 1 >= n:
                if n - pos > INLINE_MAX:
                    raise ProtocolError("too big mbulk count string")
                break
            head = buf[pos + 1 : cr]
            if head.isdigit() and len(head) < 10 and (head[0] != 48 or len(head) == 1):
                count = int(head)
            else:
                c = parse_int(head)
                if c is None or c > INT_MAX:
                    raise ProtocolError("invalid multibulk length")
                count = c
            if count > UNAUTH_MAX_COUNT and not self.authenticated:
                raise ProtocolError("unauthenticated multibulk length")
            p = cr + 2
            if count <= 0:
                pos = p
                continue
            argv = []
            append = argv.append
            complete = True
            for _ in range(count):
                cr = find(b"\r", p)
                if cr < 0 or cr + 1 >= n:
                    if n - p > INLINE_MAX:
                        raise ProtocolError("too big bulk count string")
                    complete = False
                    break
                if buf[p] != 36:  # '$'
                    raise ProtocolError(f"expected '$', got '{chr(buf[p])}'")
                head = buf[p + 1 : cr]
                if head.isdigit() and len(head) < 10 and (head[0] != 48 or len(head) == 1):
                    size = int(head)
                else:
                    s = parse_int(head)
                    if s is None or s < 0:
                        raise ProtocolError("invalid bulk length")
                    size = s
                if size > self.max_bulk:
                    raise ProtocolError("invalid bulk length")
                if size > UNAUTH_MAX_BULK and not self.authenticated:
                    raise ProtocolError("unauthenticated bulk length")
                start = cr + 2
                end = start + size
                if end + 2 > n:
                    self._need = end + 2 - pos
                    complete = False
                    break
                append(buf[start:end])
                p = end + 2
            if not complete:
                break
            out.append(argv)
            pos = p
            if not self.authenticated:
                break
        if pos < n:
            pending += buf[pos:] if pos else buf
