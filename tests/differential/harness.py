"""Differential testing against redis-server: a raw RESP client, the case-file format, a runner.

The client keeps every reply's raw bytes *and* its RESP type, because gossipkv must match Redis byte
for byte; a client library that decodes replies would hide exactly the differences we look for.

Case files (``tests/differential/cases/*.txt``): one command per line, shlex-quoted; ``#`` starts a
comment line; ``---`` starts a new independent case. A line may start with a directive:

- ``!sorted``: compare the reply's top-level elements as a multiset (KEYS, SMEMBERS, HGETALL ...);
- ``!type``: compare only the RESP type of the reply (TIME, PTTL, RANDOMKEY ...);
- ``!scan``: a SCAN-family command with cursor 0; iterate each server to cursor 0 and compare the
  sorted union of what came back;
- ``!sleep-ms N`` (alone on its line): wait N ms of wall time, for expiry cases.

Run files by hand (servers are started unless their ports are given; ``--twin`` puts a second
redis-server in gossipkv's place, which proves a case file deterministic)::

    python -m tests.differential.harness [--twin] [--gkv-port P] [--redis-port Q] [--resp 2] FILE...
"""

from __future__ import annotations

import argparse
import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers import ServerProcess, start_gossipkv, start_redis

CASES_DIR = Path(__file__).resolve().parent / "cases"
MAX_SLEEP_MS = 1200
MAX_SCAN_ROUNDS = 100_000
DIRECTIVES = ("!sorted", "!type", "!scan", "!sleep-ms")


class ConnectionClosed(Exception):
    """The server closed the connection (or it broke) before a whole reply arrived."""


class ProtocolViolation(Exception):
    """The server sent bytes that are not valid RESP."""


class SetupFailed(Exception):
    """A server refused the per-case setup (HELLO 3 or FLUSHALL), so the case cannot run."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One RESP reply: its type, its decoded value and the exact bytes it was sent as.

    ``kind`` is one of: simple, error, integer, bulk, null-bulk, null-array, null, array, map, set,
    double, boolean, verbatim, bignum, attribute, push; and, when no reply could be read: closed
    (the connection ended), timeout, invalid (bytes that are not RESP; the message is the value).
    ``value`` is bytes for simple/error/bulk/double/bignum/verbatim, int for integer, bool for
    boolean, None for the nulls, a tuple of Reply for array/set/push, a tuple of (key, value) Reply
    pairs for map, and (pairs, reply) for attribute (the attribute plus the reply it decorates).
    """

    kind: str
    value: Any
    raw: bytes

    @property
    def elements(self) -> tuple[Reply, ...]:
        """Top-level elements of an aggregate (map pairs flattened), () for scalars."""
        if self.kind in ("array", "set", "push"):
            return tuple(self.value)
        if self.kind == "map":
            return tuple(x for pair in self.value for x in pair)
        return ()

    def show(self) -> str:
        """A one-line, redis-cli-like rendering that keeps the RESP type visible."""
        return render(self)


CLOSED = Reply("closed", None, b"")


def _quote(b: bytes) -> str:
    text = repr(b)[1:]  # b'...' -> '...'
    return text if len(text) <= 200 else text[:200] + "...'"


def render(r: Reply) -> str:
    k, v = r.kind, r.value
    if k == "simple":
        return f"+{_quote(v)}"
    if k == "error":
        return f"(error) {_quote(v)}"
    if k == "integer":
        return f"(integer) {v}"
    if k == "bulk":
        return f"(bulk) {_quote(v)}"
    if k in ("null-bulk", "null-array", "null"):
        return f"({k})"
    if k == "double":
        return f"(double) {v.decode(errors='replace')}"
    if k == "boolean":
        return f"(boolean) {'true' if v else 'false'}"
    if k == "bignum":
        return f"(bignum) {v.decode(errors='replace')}"
    if k == "verbatim":
        return f"(verbatim) {_quote(v)}"
    if k in ("array", "set", "push"):
        inner = ", ".join(render(x) for x in v)
        return f"({k}) [{inner}]"
    if k == "map":
        inner = ", ".join(f"{render(a)}: {render(b)}" for a, b in v)
        return f"(map) {{{inner}}}"
    if k == "attribute":
        pairs, reply = v
        inner = ", ".join(f"{render(a)}: {render(b)}" for a, b in pairs)
        return f"(attribute {{{inner}}}) {render(reply)}"
    if k == "closed":
        return "(connection closed)"
    if k == "timeout":
        return f"(no reply within {v} s)"
    if k == "invalid":
        return f"(not valid RESP: {v})"
    return f"({k}) {v!r}"


def encode_command(args: Sequence[bytes | str | int]) -> bytes:
    """A command as a RESP multibulk, the way every real client sends it."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


class RespConnection:
    """A blocking RESP2/RESP3 client that returns replies with their raw bytes and types."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.sock.close()

    def __enter__(self) -> RespConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, args: Sequence[bytes | str | int]) -> None:
        self.sock.sendall(encode_command(args))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, *args: bytes | str | int) -> Reply:
        """Send one command and read its reply; ``CLOSED`` if the connection ends instead."""
        if self.closed:
            return CLOSED
        try:
            self.send(args)
            return self.read_reply()
        except (ConnectionClosed, ConnectionError):
            self.closed = True
            return CLOSED
        except TimeoutError:
            self.closed = True  # a late reply would pair with the wrong command
            return Reply("timeout", self.sock.gettimeout(), b"")
        except ProtocolViolation as exc:
            self.closed = True
            return Reply("invalid", str(exc), b"")

    def read_reply(self) -> Reply:
        """Exactly one reply from the stream (pipelined replies after it stay buffered)."""
        reply = self._parse()
        if self.pos == len(self.buf) or self.pos > 1 << 16:
            del self.buf[: self.pos]
            self.pos = 0
        return reply

    # -- stream primitives ------------------------------------------------------------------
    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionClosed("server closed the connection")
        self.buf += chunk

    def _line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                line = bytes(self.buf[self.pos : end])
                self.pos = end + 2
                return line
            self._fill()

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < self.pos + n + 2:
            self._fill()
        data = bytes(self.buf[self.pos : self.pos + n])
        if self.buf[self.pos + n : self.pos + n + 2] != b"\r\n":
            raise ProtocolViolation(f"bulk of {n} bytes not followed by CRLF")
        self.pos += n + 2
        return data

    def _parse(self) -> Reply:
        start = self.pos
        line = self._line()
        if not line:
            raise ProtocolViolation("empty reply line")
        tag, body = line[:1], line[1:]
        kind: str
        value: Any
        if tag == b"+":
            kind, value = "simple", body
        elif tag == b"-":
            kind, value = "error", body
        elif tag == b":":
            kind, value = "integer", _int(body)
        elif tag == b"$":
            n = _int(body)
            if n < 0:
                kind, value = "null-bulk", None
            else:
                kind, value = "bulk", self._exact(n)
        elif tag == b"*":
            n = _int(body)
            if n < 0:
                kind, value = "null-array", None
            else:
                kind, value = "array", tuple(self._parse() for _ in range(n))
        elif tag == b"~":
            kind, value = "set", tuple(self._parse() for _ in range(_int(body)))
        elif tag == b">":
            kind, value = "push", tuple(self._parse() for _ in range(_int(body)))
        elif tag == b"%":
            kind, value = "map", tuple((self._parse(), self._parse()) for _ in range(_int(body)))
        elif tag == b"|":
            pairs = tuple((self._parse(), self._parse()) for _ in range(_int(body)))
            kind, value = "attribute", (pairs, self._parse())
        elif tag == b"_":
            if body:
                raise ProtocolViolation(f"null with a body: {line!r}")
            kind, value = "null", None
        elif tag == b",":
            kind, value = "double", body
        elif tag == b"#":
            if body not in (b"t", b"f"):
                raise ProtocolViolation(f"bad boolean: {line!r}")
            kind, value = "boolean", body == b"t"
        elif tag == b"(":
            kind, value = "bignum", body
        elif tag == b"=":
            kind, value = "verbatim", self._exact(_int(body))
        elif tag == b"!":
            kind, value = "error", self._exact(_int(body))
        else:
            raise ProtocolViolation(f"unknown RESP type byte in {line!r}")
        return Reply(kind, value, bytes(self.buf[start : self.pos]))


def _int(body: bytes) -> int:
    try:
        return int(body)
    except ValueError:
        raise ProtocolViolation(f"not an integer: {body!r}") from None


# -- case files -------------------------------------------------------------------------------


class CaseFormatError(ValueError):
    """A case file line the harness cannot understand (reported with file and line)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One line of a case: a command with an optional directive, or a sleep."""

    lineno: int
    text: str
    directive: str | None
    args: tuple[str, ...]
    sleep_ms: int = 0


@dataclass(slots=True)
class Case:
    """An independent group of steps; runs on fresh connections after FLUSHALL."""

    path: Path
    index: int
    steps: list[Step] = field(default_factory=list)

    @property
    def id(self) -> str:
        first = next((s.args[0] for s in self.steps if s.args), "none")
        name = "".join(c if c.isalnum() else "_" for c in first.upper())
        return f"{self.path.stem}-{self.index}-{name}"

    @property
    def where(self) -> str:
        line = self.steps[0].lineno if self.steps else 0
        return f"{self.path.name}:{line}"


def parse_step(text: str, lineno: int, where: str = "") -> Step:
    """One non-comment, non-separator line."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise CaseFormatError(f"{where}:{lineno}: {exc}: {text}") from None
    directive: str | None = None
    if tokens and tokens[0].startswith("!"):
        directive = tokens.pop(0)
        if directive not in DIRECTIVES:
            raise CaseFormatError(f"{where}:{lineno}: unknown directive {directive}")
    if directive == "!sleep-ms":
        if len(tokens) != 1 or not tokens[0].isdigit():
            raise CaseFormatError(f"{where}:{lineno}: !sleep-ms takes one number of ms")
        ms = int(tokens[0])
        if ms > MAX_SLEEP_MS:
            raise CaseFormatError(f"{where}:{lineno}: !sleep-ms {ms} exceeds {MAX_SLEEP_MS}")
        return Step(lineno, text, directive, (), ms)
    if not tokens:
        raise CaseFormatError(f"{where}:{lineno}: directive without a command")
    if directive == "!scan":
        pos = _cursor_position(tokens)
        if pos is None or tokens[pos] != "0":
            raise CaseFormatError(
                f"{where}:{lineno}: !scan needs a SCAN-family command at cursor 0"
            )
    return Step(lineno, text, directive, tuple(tokens))


def parse_cases(text: str, path: Path) -> list[Case]:
    """Split a case file into its cases; cases with no commands are dropped."""
    cases: list[Case] = []
    current = Case(path, 1)
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped == "---":
            if current.steps:
                cases.append(current)
                current = Case(path, len(cases) + 1)
            continue
        current.steps.append(parse_step(stripped, lineno, path.name))
    if current.steps:
        cases.append(current)
    return cases


def load_cases(paths: Iterable[Path] | None = None) -> list[Case]:
    """Every case of the given files (default: every file in the cases directory), in order."""
    files = sorted(CASES_DIR.glob("*.txt")) if paths is None else list(paths)
    cases: list[Case] = []
    for path in files:
        cases.extend(parse_cases(path.read_text(encoding="utf-8"), path))
    return cases


# -- comparison -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One step whose replies differ, shown with both sides readable."""

    where: str
    lineno: int
    command: str
    protocol: int
    expected: str  # what redis-server answered
    actual: str  # what gossipkv answered
    note: str = ""

    def __str__(self) -> str:
        head = f"{self.where}:{self.lineno} [RESP{self.protocol}] {self.command}"
        if self.note:
            head += f"  ({self.note})"
        return f"{head}\n    redis:    {self.expected}\n    gossipkv: {self.actual}"


def _cursor_position(args: Sequence[str]) -> int | None:
    name = args[0].upper()
    if name == "SCAN" and len(args) >= 2:
        return 1
    if name in ("HSCAN", "SSCAN", "ZSCAN") and len(args) >= 3:
        return 2
    return None


def _sorted_form(r: Reply) -> tuple[str, list[bytes]]:
    if r.kind == "map":
        return r.kind, sorted(k.raw + v.raw for k, v in r.value)
    if r.kind in ("array", "set", "push"):
        return r.kind, sorted(x.raw for x in r.value)
    return r.kind, [r.raw]


def _show_sorted(r: Reply) -> str:
    kind, items = _sorted_form(r)
    if kind in ("map", "array", "set", "push"):
        return f"({kind}, sorted) {items!r}"
    return r.show()


@dataclass(slots=True)
class ScanResult:
    """Everything one SCAN iteration returned, or the reply that stopped it."""

    items: list[bytes]
    failure: Reply | None = None
    note: str = ""

    def show(self) -> str:
        if self.failure is not None:
            return f"{self.failure.show()} {self.note}".strip()
        return f"(scan union, sorted) {self.items!r}"


def scan_all(conn: RespConnection, args: Sequence[str]) -> ScanResult:
    """Drive a SCAN-family command from cursor 0 back to 0; union of elements, sorted."""
    pos = _cursor_position(args)
    assert pos is not None
    argv: list[bytes | str | int] = list(args)
    pairs = args[0].upper() in ("HSCAN", "ZSCAN") and "NOVALUES" not in (a.upper() for a in args)
    seen: set[bytes] = set()
    for _ in range(MAX_SCAN_ROUNDS):
        reply = conn.call(*argv)
        if (
            reply.kind != "array"
            or len(reply.value) != 2
            or reply.value[0].kind != "bulk"
            or reply.value[1].kind not in ("array", "set")
        ):
            return ScanResult([], reply)
        cursor, batch = reply.value
        elems = [e.raw for e in batch.value]
        if pairs:
            if len(elems) % 2:
                return ScanResult([], reply, "odd number of field/value elements")
            elems = [elems[i] + elems[i + 1] for i in range(0, len(elems), 2)]
        seen.update(elems)
        if cursor.value == b"0":
            return ScanResult(sorted(seen))
        argv[pos] = cursor.value
    return ScanResult(sorted(seen), CLOSED, f"cursor did not return to 0 in {MAX_SCAN_ROUNDS}")


def compare_step(
    step: Step, redis_conn: RespConnection, gkv_conn: RespConnection, protocol: int, where: str
) -> Mismatch | None:
    """Run one step on both servers; a Mismatch if the replies differ under its directive."""
    if step.directive == "!sleep-ms":
        time.sleep(step.sleep_ms / 1000)
        return None

    def mismatch(expected: str, actual: str, note: str = "") -> Mismatch:
        return Mismatch(where, step.lineno, step.text, protocol, expected, actual, note)

    if step.directive == "!scan":
        want_scan, got_scan = scan_all(redis_conn, step.args), scan_all(gkv_conn, step.args)
        want_fail, got_fail = want_scan.failure, got_scan.failure
        same = want_scan.items == got_scan.items and (
            want_fail.raw == got_fail.raw
            if want_fail is not None and got_fail is not None
            else want_fail is got_fail
        )
        return None if same else mismatch(want_scan.show(), got_scan.show(), "scan")

    want = redis_conn.call(*step.args)
    got = gkv_conn.call(*step.args)
    if step.directive == "!type":
        if want.kind != got.kind:
            return mismatch(want.show(), got.show(), "RESP type differs")
        return None
    if step.directive == "!sorted":
        if _sorted_form(want) != _sorted_form(got):
            return mismatch(_show_sorted(want), _show_sorted(got), "sorted")
        return None
    if want.raw != got.raw or want.kind != got.kind:
        return mismatch(want.show(), got.show())
    return None


def open_session(port: int, protocol: int) -> RespConnection:
    """A fresh connection, switched to RESP3 if asked, on a flushed dataset."""
    conn = RespConnection(port)
    if protocol == 3:
        hello = conn.call("HELLO", "3")
        if hello.kind != "map":
            conn.close()
            raise SetupFailed(f"HELLO 3 on port {port} answered {hello.show()}")
    flushed = conn.call("FLUSHALL")
    if flushed.raw != b"+OK\r\n":
        conn.close()
        raise SetupFailed(f"FLUSHALL on port {port} answered {flushed.show()}")
    return conn


def run_case(case: Case, gkv_port: int, redis_port: int, protocol: int) -> list[Mismatch]:
    """Every step of ``case`` on fresh connections to both servers; the steps that differ."""
    mismatches: list[Mismatch] = []
    where = case.path.name
    with (
        open_session(redis_port, protocol) as redis_conn,
        open_session(gkv_port, protocol) as gkv_conn,
    ):
        for step in case.steps:
            m = compare_step(step, redis_conn, gkv_conn, protocol, where)
            if m is not None:
                mismatches.append(m)
            if gkv_conn.closed and not redis_conn.closed:
                break  # every later step would only repeat "connection closed"
    return mismatches


def format_mismatches(case: Case, mismatches: Sequence[Mismatch]) -> str:
    head = f"{case.id} ({case.where}): {len(mismatches)} mismatching step(s)"
    return "\n".join([head, *(str(m) for m in mismatches)])


def _run_files(
    files: Sequence[Path], gkv_port: int, redis_port: int, protocols: Sequence[int]
) -> int:
    cases = load_cases(files or None)
    failed = 0
    for protocol in protocols:
        for case in cases:
            try:
                found = run_case(case, gkv_port, redis_port, protocol)
            except SetupFailed as exc:
                print(f"{case.id} ({case.where}) [RESP{protocol}]: setup failed: {exc}\n")
                failed += 1
                continue
            if found:
                failed += 1
                print(format_mismatches(case, found), end="\n\n")
    print(f"{len(cases)} case(s) x RESP{'/'.join(map(str, protocols))}: {failed} failing run(s)")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--gkv-port", type=int, help="a running gossipkv (default: start one)")
    parser.add_argument("--redis-port", type=int, help="a running redis (default: start one)")
    parser.add_argument(
        "--twin", action="store_true", help="compare redis-server with a second redis-server"
    )
    parser.add_argument("--resp", type=int, choices=(2, 3), action="append")
    parser.add_argument("files", nargs="*", type=Path)
    opts = parser.parse_args(argv)
    protocols = opts.resp or [2, 3]
    started: list[ServerProcess] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            redis_port = opts.redis_port
            if redis_port is None:
                started.append(start_redis(Path(tmp)))
                redis_port = started[-1].port
            gkv_port = opts.gkv_port
            if gkv_port is None:
                started.append(start_redis(Path(tmp)) if opts.twin else start_gossipkv(Path(tmp)))
                gkv_port = started[-1].port
            return _run_files(opts.files, gkv_port, redis_port, protocols)
    finally:
        for server in started:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
