"""Sorted set commands (Redis's t_zset.c) over the ZSet CRDT (crdt/zset.py).

Argument checks, error texts and reply shapes follow Redis 7.0 step by step: the order in which
Redis validates (options, then numbers, then the key's type) decides which error a client sees.
Scores reply as doubles: "%.17g" bulk strings in RESP2, doubles in RESP3, where WITHSCORES pairs
become two-element arrays.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterable
from typing import Final

from gossipkv.commands import errors
from gossipkv.commands.access import (
    delete_key,
    lookup_coll,
    lookup_read,
    scan_page,
    write_coll,
)
from gossipkv.commands.keys import c_string, parse_cursor, scan_options
from gossipkv.commands.replies import ErrorReply, Reply
from gossipkv.commands.session import Session
from gossipkv.commands.table import command
from gossipkv.crdt.numeric import INT64_MAX, parse_int
from gossipkv.crdt.orset import ORSet
from gossipkv.crdt.zset import ZSet, d2string
from gossipkv.store.glob import compile_glob

NAN_SCORE: Final = "ERR resulting score is not a number (NaN)"
NOT_FLOAT_RANGE: Final = "ERR min or max is not a float"
NOT_LEX_RANGE: Final = "ERR min or max not valid string range item"
NOT_POSITIVE: Final = "ERR value is out of range, must be positive"

_C_SPACE: Final = b" \t\n\v\f\r"
_HEX: Final = re.compile(rb"[+-]?0[xX]")
_DIGIT: Final = re.compile(rb"[1-9]")
_PLAIN: Final = re.compile(rb"-?[0-9]{1,15}(?:\.[0-9]{1,15})?")

Scored = tuple[float, bytes]  # (score, member), in the index's order


# -- numbers -------------------------------------------------------------------------------------


def _strtod(text: bytes) -> float | None:
    """C strtod over the whole of ``text`` (no leading space): None when it does not parse."""
    if not text or b"_" in text or text[-1:] in _C_SPACE:
        return None
    try:
        s = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    try:
        if _HEX.match(text):
            return float.fromhex(s)
        return float(s)
    except ValueError:
        return None


def parse_score(arg: bytes, message: str = errors.NOT_FLOAT) -> float:
    """getDoubleFromObject: the whole argument a float; no NaN, no overflow, no leading space."""
    if arg.isdigit() and len(arg) <= 15:  # the commonest spelling, with no regex run
        return float(arg)
    if _PLAIN.fullmatch(arg):  # the common spelling: short, cannot overflow or underflow
        return float(arg)
    if arg[:1] in _C_SPACE or b"\0" in arg:
        raise ErrorReply(message)
    value = _strtod(arg)
    if value is None or value != value:
        raise ErrorReply(message)
    lower = arg.lower()
    if math.isinf(value) and b"inf" not in lower:
        raise ErrorReply(message)  # ERANGE overflow
    if value == 0.0 and _DIGIT.search(lower.split(b"e")[0] if not _HEX.match(arg) else b"0"):
        raise ErrorReply(message)  # ERANGE underflow
    return value


def _range_bound(arg: bytes) -> tuple[float, bool]:
    """zslParseRange's item: "(" makes it exclusive; strtod skips leading space; "" is 0."""
    exclusive = arg[:1] == b"("
    text = c_string(arg[1:] if exclusive else arg).lstrip(_C_SPACE)
    value = 0.0 if not text else _strtod(text)
    if value is None or value != value:
        raise ErrorReply(NOT_FLOAT_RANGE)
    return value, exclusive


def _lex_bound(arg: bytes) -> tuple[bytes | None, bool, int]:
    """zslParseLexRangeItem: (member, exclusive, infinity) with infinity -1 for "-", 1 for "+"."""
    head = arg[:1]
    if head == b"+" and len(arg) == 1:
        return None, False, 1
    if head == b"-" and len(arg) == 1:
        return None, False, -1
    if head == b"(":
        return arg[1:], True, 0
    if head == b"[":
        return arg[1:], False, 0
    raise ErrorReply(NOT_LEX_RANGE)


def _long(arg: bytes) -> int:
    value = parse_int(arg)
    if value is None:
        raise ErrorReply(errors.NOT_INTEGER)
    return value


# -- ranges over one zset ------------------------------------------------------------------------


class ScoreRange:
    __slots__ = ("max", "maxex", "min", "minex")

    def __init__(self, lo: bytes, hi: bytes) -> None:
        self.min, self.minex = _range_bound(lo)
        self.max, self.maxex = _range_bound(hi)

    def empty(self) -> bool:
        return self.min > self.max or (self.min == self.max and (self.minex or self.maxex))

    def span(self, z: ZSet) -> tuple[int, int]:
        """Ranks [start, stop) of the entries inside."""
        if self.empty():
            return 0, 0
        start = z.bisect_score(self.min, self.minex)
        stop = z.bisect_score(self.max, not self.maxex)
        return start, max(start, stop)


_LISTPACK_ENTRIES: Final = 128  # redis.conf zset-max-listpack-entries


class LexRange:
    __slots__ = ("max", "maxex", "maxinf", "min", "minex", "mininf")

    def __init__(self, lo: bytes, hi: bytes) -> None:
        self.min, self.minex, self.mininf = _lex_bound(lo)
        self.max, self.maxex, self.maxinf = _lex_bound(hi)

    def empty(self) -> bool:
        if self.mininf == 1 or self.maxinf == -1:
            return True
        if self.mininf or self.maxinf:
            return False
        assert self.min is not None and self.max is not None
        return self.min > self.max or (self.min == self.max and (self.minex or self.maxex))

    def gte_min(self, member: bytes) -> bool:
        return self.min is None or member > self.min or (member == self.min and not self.minex)

    def lte_max(self, member: bytes) -> bool:
        return self.max is None or member < self.max or (member == self.max and not self.maxex)

    def span(self, z: ZSet) -> tuple[int, int]:
        """Redis's lex range, which assumes equal scores: where they differ, its answer depends
        on the walk, so this walks as Redis does for a small (listpack) set: no match unless
        the first member is <= max and the last >= min, then from the first member >= min for
        as long as members are <= max."""
        n = len(z)
        if self.empty() or not n:
            return 0, 0
        members = z.members_by_rank
        if not self.lte_max(members(0)) or not self.gte_min(members(n - 1)):
            return 0, 0
        if n <= _LISTPACK_ENTRIES:
            start = 0
            while start < n and not self.gte_min(members(start)):
                start += 1
            stop = start
            while stop < n and self.lte_max(members(stop)):
                stop += 1
            return start, stop
        start = 0 if self.min is None else z.bisect_lex(self.min, self.minex)
        stop = n if self.max is None else z.bisect_lex(self.max, not self.maxex)
        return start, max(start, stop)


def _rank_span(n: int, start: int, end: int) -> tuple[int, int]:
    """Redis's rank arithmetic: negative ranks count from the end; [start, stop)."""
    if start < 0:
        start += n
    if end < 0:
        end += n
    if start < 0:
        start = 0
    if start > end or start >= n:
        return 0, 0
    if end >= n:
        end = n - 1
    return start, end + 1


def _window(
    z: ZSet, span: tuple[int, int], rev: bool, offset: int = 0, limit: int = -1
) -> list[Scored]:
    """The entries of ranks [start, stop), reversed when ``rev``, after LIMIT offset count."""
    start, stop = span
    if offset < 0 or limit == 0:
        return []
    if rev:
        stop -= offset
    else:
        start += offset
    if start >= stop:
        return []
    if limit > 0:
        if rev:
            start = max(start, stop - limit)
        else:
            stop = min(stop, start + limit)
    entries = list(z.at(start, stop))
    if rev:
        entries.reverse()
    return entries


def _reply(s: Session, entries: Iterable[Scored], withscores: bool) -> Reply:
    if not withscores:
        return [m for _, m in entries]
    if s.resp > 2:
        return [[m, score] for score, m in entries]
    out: list[Reply] = []
    for score, m in entries:
        out.append(m)
        out.append(score)
    return out


def _lookup(s: Session, key: bytes, read: bool) -> ZSet | None:
    """The zset at ``key`` (WRONGTYPE for another kind), ready for ranges; ``read`` counts a
    keyspace hit or miss as Redis's lookupKeyRead does."""
    z = lookup_read(s, key, ZSet) if read else lookup_coll(s, key, ZSet)
    if z is not None and z.delta:
        z.settle()
    return z


# -- writes --------------------------------------------------------------------------------------


def _write(s: Session, key: bytes, delta: ZSet, creating: bool) -> None:
    write_coll(s, key, delta, creating)


def _store(s: Session, dst: bytes, entries: Iterable[Scored]) -> int:
    """Replace ``dst`` (of any type) with a zset of ``entries``; an empty result deletes it."""
    ks = s.server.keyspace
    delta = ZSet(delta=True)
    empty = ZSet()
    for score, member in entries:
        empty.add(member, score, ks.clock.now(), ks.node, delta)
    delete_key(s, dst)
    if delta.alive():
        _write(s, dst, delta, True)
    return len(delta)


# -- ZADD / ZINCRBY ------------------------------------------------------------------------------

_NX, _XX, _CH, _INCR, _GT, _LT = (1 << i for i in range(6))
_ZADD_FLAGS: Final = {b"nx": _NX, b"xx": _XX, b"ch": _CH, b"incr": _INCR, b"gt": _GT, b"lt": _LT}


def _zadd(s: Session, argv: list[bytes], flags: int) -> Reply:
    """zaddGenericCommand: options, then every score, then the key; all or nothing."""
    key = argv[1]
    i = 2
    n = len(argv)
    while i < n:
        flag = _ZADD_FLAGS.get(c_string(argv[i]).lower())
        if flag is None:
            break
        flags |= flag
        i += 1
    pairs = n - i
    if pairs % 2 or not pairs:
        raise ErrorReply(errors.SYNTAX)
    if flags & _NX and flags & _XX:
        raise ErrorReply("ERR XX and NX options at the same time are not compatible")
    if (flags & _GT and flags & (_NX | _LT)) or (flags & _LT and flags & _NX):
        raise ErrorReply("ERR GT, LT, and/or NX options at the same time are not compatible")
    incr = flags & _INCR
    if incr and pairs > 2:
        raise ErrorReply("ERR INCR option supports a single increment-element pair")
    scores = [parse_score(argv[j]) for j in range(i, n, 2)]
    z = _lookup(s, key, False)
    if z is None and flags & _XX:
        return None if incr else 0
    state = z if z is not None else ZSet()
    ks = s.server.keyspace
    delta = ZSet(delta=True)
    added = updated = processed = 0
    current: dict[bytes, float | None] = {}
    result = 0.0
    for j, score in enumerate(scores):
        member = argv[i + 1 + 2 * j]
        cur = current[member] if member in current else state.score(member)
        if cur is None:
            if flags & _XX:
                continue
            new = score
            added += 1
        else:
            if flags & _NX:
                continue
            new = cur + score if incr else score
            if new != new:
                raise ErrorReply(NAN_SCORE)
            if (flags & _LT and new >= cur) or (flags & _GT and new <= cur):
                continue
            if new != cur:
                updated += 1
        processed += 1
        result = new
        if cur is not None and new == cur:
            continue  # nothing changes: no write
        current[member] = new
        # + 0.0 stores -0 as 0, as a listpack does (the reply above keeps the sign).
        if incr:
            state.incr(member, score + 0.0, ks.clock.now(), ks.node, delta)
        else:
            state.add(member, new + 0.0, ks.clock.now(), ks.node, delta)
    if delta.members:
        _write(s, key, delta, z is None)
    if incr:
        return result if processed else None
    return added + updated if flags & _CH else added


def _zadd_one(s: Session, key: bytes, score: float, member: bytes) -> int:
    """ZADD key score member, the common form, without the option machinery."""
    z = _lookup(s, key, False)
    cur = z.score(member) if z is not None else None
    if cur == score:
        return 0
    ks = s.server.keyspace
    state = z if z is not None else _EMPTY
    write_coll(s, key, state.add(member, score + 0.0, ks.clock.now(), ks.node), z is None)
    return 1 if cur is None else 0


_EMPTY: Final = ZSet()  # the state a missing key's first write is built from; never written to


@command(
    "zadd", -4, "write denyoom fast", (1, 1, 1), "sorted-set",
    "Add one or more members to a sorted set, or update its score if it already exists",
    "1.2.0", "@write @sortedset @fast",
)
def zadd(s: Session, argv: list[bytes]) -> Reply:
    if len(argv) == 4 and argv[2].lower() not in _ZADD_FLAGS:
        return _zadd_one(s, argv[1], parse_score(argv[2]), argv[3])
    return _zadd(s, argv, 0)


@command(
    "zincrby", 4, "write denyoom fast", (1, 1, 1), "sorted-set",
    "Increment the score of a member in a sorted set", "1.2.0", "@write @sortedset @fast",
)
def zincrby(s: Session, argv: list[bytes]) -> Reply:
    return _zadd(s, argv, _INCR)


@command(
    "zrem", -3, "write fast", (1, 1, 1), "sorted-set",
    "Remove one or more members from a sorted set", "1.2.0", "@write @sortedset @fast",
)
def zrem(s: Session, argv: list[bytes]) -> Reply:
    z = _lookup(s, argv[1], False)
    if z is None:
        return 0
    delta = z.remove(argv[2:])
    if delta.members:
        _write(s, argv[1], delta, False)
    return len(delta.members)


# -- point reads ---------------------------------------------------------------------------------


@command(
    "zscore", 3, "readonly fast", (1, 1, 1), "sorted-set",
    "Get the score associated with the given member in a sorted set", "1.2.0",
    "@read @sortedset @fast",
)
def zscore(s: Session, argv: list[bytes]) -> Reply:
    z = _lookup(s, argv[1], True)
    return None if z is None else z.score(argv[2])


@command(
    "zmscore", -3, "readonly fast", (1, 1, 1), "sorted-set",
    "Get the score associated with the given members in a sorted set", "6.2.0",
    "@read @sortedset @fast",
)
def zmscore(s: Session, argv: list[bytes]) -> Reply:
    z = _lookup(s, argv[1], True)
    if z is None:
        return [None] * (len(argv) - 2)
    return [z.score(m) for m in argv[2:]]


@command(
    "zcard", 2, "readonly fast", (1, 1, 1), "sorted-set",
    "Get the number of members in a sorted set", "1.2.0", "@read @sortedset @fast",
)
def zcard(s: Session, argv: list[bytes]) -> Reply:
    z = _lookup(s, argv[1], True)
    return 0 if z is None else len(z)


@command(
    "zcount", 4, "readonly fast", (1, 1, 1), "sorted-set",
    "Count the members in a sorted set with scores within the given values", "2.0.0",
    "@read @sortedset @fast",
)
def zcount(s: Session, argv: list[bytes]) -> Reply:
    r = ScoreRange(argv[2], argv[3])
    z = _lookup(s, argv[1], True)
    if z is None:
        return 0
    start, stop = r.span(z)
    return stop - start


@command(
    "zlexcount", 4, "readonly fast", (1, 1, 1), "sorted-set",
    "Count the number of members in a sorted set between a given lexicographical range",
    "2.8.9", "@read @sortedset @fast",
)
def zlexcount(s: Session, argv: list[bytes]) -> Reply:
    r = LexRange(argv[2], argv[3])
    z = _lookup(s, argv[1], True)
    if z is None:
        return 0
    start, stop = r.span(z)
    return stop - start


def _rank(s: Session, argv: list[bytes], rev: bool) -> Reply:
    z = _lookup(s, argv[1], True)
    if z is None:
        return None
    rank = z.rank(argv[2])
    if rank is None:
        return None
    return len(z) - 1 - rank if rev else rank


@command(
    "zrank", 3, "readonly fast", (1, 1, 1), "sorted-set",
    "Determine the index of a member in a sorted set", "2.0.0", "@read @sortedset @fast",
)
def zrank(s: Session, argv: list[bytes]) -> Reply:
    return _rank(s, argv, False)


@command(
    "zrevrank", 3, "readonly fast", (1, 1, 1), "sorted-set",
    "Determine the index of a member in a sorted set, with scores ordered from high to low",
    "2.0.0", "@read @sortedset @fast",
)
def zrevrank(s: Session, argv: list[bytes]) -> Reply:
    return _rank(s, argv, True)


# -- ZRANGE and its family (zrangeGenericCommand) -----------------------------------------------

_RANK, _SCORE, _LEX = 0, 1, 2


def _zrange(
    s: Session, argv: list[bytes], start_at: int, store: bool, kind: int | None, rev: bool | None
) -> Reply:
    """Returns the entries (for a store) or the reply."""
    withscores = False
    offset, limit = 0, -1
    n = len(argv)
    j = start_at + 3
    while j < n:
        word = c_string(argv[j]).lower()
        left = n - j - 1
        if not store and word == b"withscores":
            withscores = True
        elif word == b"limit" and left >= 2:
            offset = _long(argv[j + 1])
            limit = _long(argv[j + 2])
            j += 2
        elif rev is None and word == b"rev":
            rev = True
        elif kind is None and word == b"bylex":
            kind = _LEX
        elif kind is None and word == b"byscore":
            kind = _SCORE
        else:
            raise ErrorReply(errors.SYNTAX)
        j += 1
    rev = bool(rev)
    if kind is None:
        kind = _RANK
    if limit != -1 and kind == _RANK:
        raise ErrorReply(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
        )
    if withscores and kind == _LEX:
        raise ErrorReply("ERR syntax error, WITHSCORES not supported in combination with BYLEX")
    lo, hi = argv[start_at + 1], argv[start_at + 2]
    if rev and kind != _RANK:
        lo, hi = hi, lo
    key = argv[start_at]
    span: Callable[[ZSet], tuple[int, int]]
    if kind == _RANK:
        start, end = _long(lo), _long(hi)
        span = lambda z: _rank_span(len(z), start, end)  # noqa: E731
        if rev:
            span = lambda z: _rev_rank_span(len(z), start, end)  # noqa: E731
    elif kind == _SCORE:
        span = ScoreRange(lo, hi).span
    else:
        span = LexRange(lo, hi).span
    z = _lookup(s, key, not store)
    entries: list[Scored] = []
    if z is not None:
        if kind == _RANK:
            entries = _window(z, span(z), rev)
        else:
            entries = _window(z, span(z), rev, offset, limit)
    if store:
        return _store(s, argv[1], entries)
    return _reply(s, entries, withscores)


def _rev_rank_span(n: int, start: int, end: int) -> tuple[int, int]:
    """Ranks counted from the highest score: the same window, mirrored."""
    a, b = _rank_span(n, start, end)
    if a == b:
        return 0, 0
    return n - b, n - a


@command(
    "zrange", -4, "readonly", (1, 1, 1), "sorted-set",
    "Return a range of members in a sorted set", "1.2.0", "@read @sortedset @slow",
)
def zrange(s: Session, argv: list[bytes]) -> Reply:
    return _zrange(s, argv, 1, False, None, None)


@command(
    "zrangestore", -5, "write denyoom", (1, 2, 1), "sorted-set",
    "Store a range of members from sorted set into another key", "6.2.0",
    "@write @sortedset @slow",
)
def zrangestore(s: Session, argv: list[bytes]) -> Reply:
    return _zrange(s, argv, 2, True, None, None)


@command(
    "zrevrange", -4, "readonly", (1, 1, 1), "sorted-set",
    "Return a range of members in a sorted set, by index, with scores ordered from high to low",
    "1.2.0", "@read @sortedset @slow",
)
def zrevrange(s: Session, argv: list[bytes]) -> Reply:
    return _zrange(s, argv, 1, False, _RANK, True)


@command(
    "zrangebyscore", -4, "readonly", (1, 1, 1), "sorted-set",
    "Return a range of members in a sorted set, by score", "1.0.5", "@read @sortedset @slow",
)
def zrangebyscore(s: Session, argv: list[bytes]) -> Reply:
    return _zrange(s, argv, 1, False, _SCORE, False)


@command(
    "zrevrangebyscore", -4, "readonly", (1, 1, 1), "sorted-set",
    "Return a range of members in a sorted set, by score, with scores ordered from high to low",
    "2.2.0", "@read @sortedset @slow",
)
def zrevrangebyscore(s: Session, argv: list[bytes]) -> Reply:
    return _zrange(s, argv, 1, False, _SCORE, True)


@command(
    "zrangebylex", -4, "readonly", (1, 1, 1), "sorted-set",
    "Return a range of members in a sorted set, by lexicographical range", "2.8.9",
    "@read @sortedset @slow",
)
def zrangebylex(s: Session, argv: list[bytes]) -> Reply:
    return _zrange(s, argv, 1, False, _LEX, False)


@command(
    "zrevrangebylex", -4, "readonly", (1, 1, 1), "sorted-set",
    "Return a range of members in a sorted set, by lexicographical range, ordered from higher "
    "to lower strings.", "2.8.9", "@read @sortedset @slow",
)
def zrevrangebylex(s: Session, argv: list[bytes]) -> Reply:
    return _zrange(s, argv, 1, False, _LEX, True)


# -- removals by range and pops ------------------------------------------------------------------


def _remove_entries(s: Session, key: bytes, z: ZSet, entries: list[Scored]) -> int:
    if entries:
        _write(s, key, z.remove(m for _, m in entries), False)
    return len(entries)


def _remrange(s: Session, argv: list[bytes], kind: int) -> Reply:
    span: Callable[[ZSet], tuple[int, int]]
    if kind == _RANK:
        start, end = _long(argv[2]), _long(argv[3])
        span = lambda z: _rank_span(len(z), start, end)  # noqa: E731
    elif kind == _SCORE:
        span = ScoreRange(argv[2], argv[3]).span
    else:
        span = LexRange(argv[2], argv[3]).span
    z = _lookup(s, argv[1], False)
    if z is None:
        return 0
    return _remove_entries(s, argv[1], z, _window(z, span(z), False))


@command(
    "zremrangebyrank", 4, "write", (1, 1, 1), "sorted-set",
    "Remove all members in a sorted set within the given indexes", "2.0.0",
    "@write @sortedset @slow",
)
def zremrangebyrank(s: Session, argv: list[bytes]) -> Reply:
    return _remrange(s, argv, _RANK)


@command(
    "zremrangebyscore", 4, "write", (1, 1, 1), "sorted-set",
    "Remove all members in a sorted set within the given scores", "1.2.0",
    "@write @sortedset @slow",
)
def zremrangebyscore(s: Session, argv: list[bytes]) -> Reply:
    return _remrange(s, argv, _SCORE)


@command(
    "zremrangebylex", 4, "write", (1, 1, 1), "sorted-set",
    "Remove all members in a sorted set between the given lexicographical range", "2.8.9",
    "@write @sortedset @slow",
)
def zremrangebylex(s: Session, argv: list[bytes]) -> Reply:
    return _remrange(s, argv, _LEX)


def _pop(s: Session, argv: list[bytes], rev: bool) -> Reply:
    if len(argv) > 3:
        raise ErrorReply(errors.SYNTAX)
    count = -1
    if len(argv) == 3:
        parsed = parse_int(argv[2])
        if parsed is None or parsed < 0:
            raise ErrorReply(NOT_POSITIVE)
        count = parsed
    z = _lookup(s, argv[1], False)
    if z is None or count == 0:
        return []
    if count == -1:  # the plain pop: one entry, a flat reply in both protocols
        delta, member, score = z.pop(-1 if rev else 0)
        write_coll(s, argv[1], delta)
        return [member, score]
    n = len(z)
    take = min(n, count)
    entries = _window(z, (n - take, n) if rev else (0, take), rev)
    _remove_entries(s, argv[1], z, entries)
    if s.resp > 2 and count != -1:
        return [[m, score] for score, m in entries]
    return [x for score, m in entries for x in (m, score)]


@command(
    "zpopmin", -2, "write fast", (1, 1, 1), "sorted-set",
    "Remove and return members with the lowest scores in a sorted set", "5.0.0",
    "@write @sortedset @fast",
)
def zpopmin(s: Session, argv: list[bytes]) -> Reply:
    return _pop(s, argv, False)


@command(
    "zpopmax", -2, "write fast", (1, 1, 1), "sorted-set",
    "Remove and return members with the highest scores in a sorted set", "5.0.0",
    "@write @sortedset @fast",
)
def zpopmax(s: Session, argv: list[bytes]) -> Reply:
    return _pop(s, argv, True)


# -- ZUNION / ZINTER / ZDIFF ---------------------------------------------------------------------

_UNION, _INTER, _DIFF = 0, 1, 2


def _aggregate(mode: bytes, a: float, b: float) -> float:
    if mode == b"sum":
        r = a + b
        return 0.0 if r != r else r
    if mode == b"min":
        return b if b < a else a
    return b if b > a else a


def _setop(s: Session, argv: list[bytes], name: str, numkeys_at: int, op: int) -> Reply:
    store = numkeys_at == 2
    numkeys = _long(argv[numkeys_at])
    if numkeys < 1:
        raise ErrorReply(f"ERR at least 1 input key is needed for '{name}' command")
    n = len(argv)
    if numkeys > n - numkeys_at - 1:
        raise ErrorReply(errors.SYNTAX)
    first = numkeys_at + 1
    sources = [_source(s, key, store) for key in argv[first : first + numkeys]]
    weights = [1.0] * numkeys
    mode = b"sum"
    withscores = False
    j = first + numkeys
    while j < n:
        word = c_string(argv[j]).lower()
        left = n - j
        if op != _DIFF and left >= numkeys + 1 and word == b"weights":
            weights = [
                parse_score(argv[j + 1 + w], "ERR weight value is not a float")
                for w in range(numkeys)
            ]
            j += numkeys + 1
        elif op != _DIFF and left >= 2 and word == b"aggregate":
            mode = c_string(argv[j + 1]).lower()
            if mode not in (b"sum", b"min", b"max"):
                raise ErrorReply(errors.SYNTAX)
            j += 2
        elif not store and word == b"withscores":
            withscores = True
            j += 1
        else:
            raise ErrorReply(errors.SYNTAX)
    result = _combine(sources, weights, mode, op)
    ordered = sorted((score, m) for m, score in result.items())
    if store:
        return _store(s, argv[1], ordered)
    return _reply(s, ordered, withscores)


class SetSource:
    """A set read as a sorted set whose every score is 1, as Redis's set operations allow."""

    __slots__ = ("members",)

    def __init__(self, members: ORSet) -> None:
        self.members = members

    def __len__(self) -> int:
        return len(self.members)

    def items(self) -> Iterable[Scored]:
        return [(1.0, m) for m in self.members]

    def score(self, member: bytes) -> float | None:
        return 1.0 if member in self.members else None


Source = ZSet | SetSource


def _source(s: Session, key: bytes, store: bool) -> Source | None:
    """An input key of ZUNION/ZINTER/ZDIFF: a zset, or a set; WRONGTYPE for anything else."""
    ks = s.server.keyspace
    e = ks.lookup(key)
    if e is None:
        if not store:
            ks.keyspace_misses += 1
        return None
    coll = e.visible_coll()
    if not store:
        ks.keyspace_hits += 1
    if isinstance(coll, ZSet):
        coll.settle()
        return coll
    if isinstance(coll, ORSet):
        return SetSource(coll)
    raise ErrorReply(errors.WRONGTYPE)


def _combine(
    sources: list[Source | None], weights: list[float], mode: bytes, op: int
) -> dict[bytes, float]:
    def weighted(score: float, w: float) -> float:
        v = score * w
        return 0.0 if v != v else v

    if op == _DIFF:
        head = sources[0]
        if head is None:
            return {}
        rest = [z for z in sources[1:] if z is not None]
        return {m: score for score, m in head.items() if all(z.score(m) is None for z in rest)}
    pairs = sorted(
        zip(sources, weights, strict=True), key=lambda p: 0 if p[0] is None else len(p[0])
    )
    out: dict[bytes, float] = {}
    if op == _UNION:
        for z, w in pairs:
            if z is None:
                continue
            for score, m in z.items():
                v = weighted(score, w)
                prev = out.get(m)
                out[m] = v if prev is None else _aggregate(mode, prev, v)
        return out
    z0, w0 = pairs[0]
    if z0 is None:
        return {}
    for score, m in z0.items():
        acc = weighted(score, w0)
        for z, w in pairs[1:]:
            other = z.score(m) if z is not None else None
            if other is None:
                break
            acc = _aggregate(mode, acc, other * w)
        else:
            out[m] = acc
    return out


@command(
    "zunion", -3, "readonly movablekeys", (0, 0, 0), "sorted-set",
    "Add multiple sorted sets", "6.2.0", "@read @sortedset @slow",
)
def zunion(s: Session, argv: list[bytes]) -> Reply:
    return _setop(s, argv, "zunion", 1, _UNION)


@command(
    "zunionstore", -4, "write denyoom movablekeys", (1, 1, 1), "sorted-set",
    "Add multiple sorted sets and store the resulting sorted set in a new key", "2.0.0",
    "@write @sortedset @slow",
)
def zunionstore(s: Session, argv: list[bytes]) -> Reply:
    return _setop(s, argv, "zunionstore", 2, _UNION)


@command(
    "zinter", -3, "readonly movablekeys", (0, 0, 0), "sorted-set",
    "Intersect multiple sorted sets", "6.2.0", "@read @sortedset @slow",
)
def zinter(s: Session, argv: list[bytes]) -> Reply:
    return _setop(s, argv, "zinter", 1, _INTER)


@command(
    "zinterstore", -4, "write denyoom movablekeys", (1, 1, 1), "sorted-set",
    "Intersect multiple sorted sets and store the resulting sorted set in a new key", "2.0.0",
    "@write @sortedset @slow",
)
def zinterstore(s: Session, argv: list[bytes]) -> Reply:
    return _setop(s, argv, "zinterstore", 2, _INTER)


@command(
    "zdiff", -3, "readonly movablekeys", (0, 0, 0), "sorted-set",
    "Subtract multiple sorted sets", "6.2.0", "@read @sortedset @slow",
)
def zdiff(s: Session, argv: list[bytes]) -> Reply:
    return _setop(s, argv, "zdiff", 1, _DIFF)


@command(
    "zdiffstore", -4, "write denyoom movablekeys", (1, 1, 1), "sorted-set",
    "Subtract multiple sorted sets and store the resulting sorted set in a new key", "6.2.0",
    "@write @sortedset @slow",
)
def zdiffstore(s: Session, argv: list[bytes]) -> Reply:
    return _setop(s, argv, "zdiffstore", 2, _DIFF)


# -- ZSCAN / ZRANDMEMBER -------------------------------------------------------------------------


@command(
    "zscan", -3, "readonly", (1, 1, 1), "sorted-set",
    "Incrementally iterate sorted sets elements and associated scores", "2.8.0",
    "@read @sortedset @slow", tips="nondeterministic_output",
)
def zscan(s: Session, argv: list[bytes]) -> Reply:
    """A small zset (a listpack in Redis: up to 128 members of up to 64 bytes) comes whole, in
    rank order, with cursor 0; a large one in pages of about COUNT members (``scan_page``)."""
    cursor = parse_cursor(argv[2])
    options = scan_options(argv, 3)
    pattern = options.pattern
    z = _lookup(s, argv[1], True)
    out: list[bytes] = []
    next_cursor = 0
    if z is not None:
        match = compile_glob(pattern) if pattern is not None else None
        if len(z) <= 128 and all(len(m) <= 64 for m in z.members):
            entries = [(m, score) for score, m in z.items()]
        else:
            next_cursor, page = scan_page(cursor, options.hint or 10, z.members)
            entries = [(m, score) for m in page if (score := z.score(m)) is not None]
        for m, score in entries:
            if match is None or match(m):
                out.append(m)
                out.append(_score_text(score))
    return [b"%d" % next_cursor, out]


def _score_text(score: float) -> bytes:
    return d2string(score)


@command(
    "zrandmember", -2, "readonly", (1, 1, 1), "sorted-set",
    "Get one or multiple random elements from a sorted set", "6.2.0",
    "@read @sortedset @slow", tips="nondeterministic_output",
)
def zrandmember(s: Session, argv: list[bytes]) -> Reply:
    n = len(argv)
    if n == 2:
        z = _lookup(s, argv[1], True)
        if z is None:
            return None
        return next(z.at(r := random.randrange(len(z)), r + 1))[1]
    count = parse_int(argv[2])
    if count is None:
        raise ErrorReply(errors.NOT_INTEGER)
    if count < -INT64_MAX:
        raise ErrorReply(
            f"ERR value is out of range, value must between {-INT64_MAX} and {INT64_MAX}"
        )
    withscores = False
    if n > 4 or (n == 4 and c_string(argv[3]).lower() != b"withscores"):
        raise ErrorReply(errors.SYNTAX)
    if n == 4:
        withscores = True
        if count < -INT64_MAX // 2 or count > INT64_MAX // 2:
            raise ErrorReply("ERR value is out of range")
    z = _lookup(s, argv[1], True)
    if z is None or count == 0:
        return []
    size = len(z)
    picked: list[Scored]
    if count < 0:
        picked = [next(z.at(r, r + 1)) for r in (random.randrange(size) for _ in range(-count))]
    elif count >= size:
        picked = list(z.items())
        picked.reverse()  # the order Redis walks a small (listpack) zset in here
    else:
        picked = [next(z.at(r, r + 1)) for r in sorted(random.sample(range(size), count))]
    return _reply(s, picked, withscores)
