"""Hash commands (Redis's t_hash.c) over the OR-map of crdt/ormap.py.

Reads go through ``lookup_read`` (WRONGTYPE, keyspace hits and misses), writes build a small
ORMap delta and hand it to ``write_coll``. Field order follows Redis's listpack for small
hashes: insertion order, an update keeping the field's place.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from decimal import Decimal
from fractions import Fraction
from typing import Final

import xxhash

from gossipkv.commands import errors
from gossipkv.commands.access import lookup_coll, lookup_read, write_coll
from gossipkv.commands.keys import c_string, parse_cursor, scan_options
from gossipkv.commands.replies import OK, ErrorReply, Reply
from gossipkv.commands.session import Session
from gossipkv.commands.table import command
from gossipkv.crdt.numeric import (
    INT64_MAX,
    INT64_MIN,
    add_long_double,
    format_long_double,
    parse_int,
    parse_long_double,
    subtract,
)
from gossipkv.crdt.ormap import ORMap
from gossipkv.store.glob import compile_glob

NOT_INTEGER_VALUE: Final = "ERR hash value is not an integer"
NOT_FLOAT_VALUE: Final = "ERR hash value is not a float"
NAN_OR_INFINITY: Final = "ERR value is NaN or Infinity"
OUT_OF_RANGE: Final = "ERR value is out of range"
COUNT_OUT_OF_RANGE: Final = (
    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"
)

# Redis keeps a hash as a listpack while it has at most this many fields, none longer than
# LISTPACK_VALUE bytes; HSCAN then returns it whole in one call.
LISTPACK_ENTRIES: Final = 128
LISTPACK_VALUE: Final = 64
SCAN_DEFAULT_COUNT: Final = 10

_EMPTY: Final = ORMap()


def _write_state(s: Session, key: bytes) -> tuple[ORMap, bool]:
    """The hash a write command builds its delta from, and whether the write creates the key."""
    m = lookup_coll(s, key, ORMap)
    if m is not None:
        return m, False
    return _EMPTY, True


def _pairs(s: Session, argv: list[bytes]) -> dict[bytes, bytes]:
    if len(argv) % 2:
        raise errors.wrong_arity(c_string(argv[0]).decode("utf-8", "replace").lower())
    return {argv[i]: argv[i + 1] for i in range(2, len(argv), 2)}


def _hset(s: Session, key: bytes, values: dict[bytes, bytes]) -> int:
    """Sets the fields; the number of fields that were new."""
    m, creating = _write_state(s, key)
    fields = m.fields
    added = 0
    for name in values:
        if name not in fields or m.get(name) is None:
            added += 1
    ks = s.server.keyspace
    write_coll(s, key, m.assign(ks.clock.now, ks.node, values), creating)
    return added


# -- writes ----------------------------------------------------------------------------------------


@command(
    "hset", -4, "write denyoom fast", (1, 1, 1), "hash",
    "Set the string value of a hash field", "2.0.0", "@write @hash @fast",
)
def hset(s: Session, argv: list[bytes]) -> Reply:
    return _hset(s, argv[1], _pairs(s, argv))


@command(
    "hmset", -4, "write denyoom fast", (1, 1, 1), "hash",
    "Set multiple hash fields to multiple values", "2.0.0", "@write @hash @fast",
)
def hmset(s: Session, argv: list[bytes]) -> Reply:
    _hset(s, argv[1], _pairs(s, argv))
    return OK


@command(
    "hsetnx", 4, "write denyoom fast", (1, 1, 1), "hash",
    "Set the value of a hash field, only if the field does not exist", "2.0.0",
    "@write @hash @fast",
)
def hsetnx(s: Session, argv: list[bytes]) -> Reply:
    m, _ = _write_state(s, argv[1])
    if m.get(argv[2]) is not None:
        return 0
    return _hset(s, argv[1], {argv[2]: argv[3]})


@command(
    "hdel", -3, "write fast", (1, 1, 1), "hash",
    "Delete one or more hash fields", "2.0.0", "@write @hash @fast",
)
def hdel(s: Session, argv: list[bytes]) -> Reply:
    m = lookup_coll(s, argv[1], ORMap)
    if m is None:
        return 0
    present = [name for name in dict.fromkeys(argv[2:]) if m.get(name) is not None]
    if present:
        ks = s.server.keyspace
        write_coll(s, argv[1], m.remove(present, (ks.clock.now(), ks.node)))
    return len(present)


@command(
    "hincrby", 4, "write denyoom fast", (1, 1, 1), "hash",
    "Increment the integer value of a hash field by the given number", "2.0.0",
    "@write @hash @fast",
)
def hincrby(s: Session, argv: list[bytes]) -> Reply:
    by = parse_int(argv[3])
    if by is None:
        raise ErrorReply(errors.NOT_INTEGER)
    key, name = argv[1], argv[2]
    m, creating = _write_state(s, key)
    raw = m.get(name)
    current = 0 if raw is None else parse_int(raw)
    if current is None:
        raise ErrorReply(NOT_INTEGER_VALUE)
    total = current + by
    if total > INT64_MAX or total < INT64_MIN:
        raise ErrorReply(errors.OVERFLOW)
    ks = s.server.keyspace
    write_coll(s, key, m.increment(ks.clock.now(), ks.actor, name, by), creating)
    return total


@command(
    "hincrbyfloat", 4, "write denyoom fast", (1, 1, 1), "hash",
    "Increment the float value of a hash field by the given amount", "2.6.0",
    "@write @hash @fast",
)
def hincrbyfloat(s: Session, argv: list[bytes]) -> Reply:
    by = parse_long_double(argv[3])
    if by is None:
        raise ErrorReply(errors.NOT_FLOAT)
    if isinstance(by, float):
        raise ErrorReply(NAN_OR_INFINITY)
    key, name = argv[1], argv[2]
    m, creating = _write_state(s, key)
    raw = m.get(name)
    current = Fraction(0) if raw is None else parse_long_double(raw)
    if current is None:
        raise ErrorReply(NOT_FLOAT_VALUE)
    total = add_long_double(current, by)
    if not isinstance(total, Fraction):
        raise ErrorReply(errors.NAN_OR_INF)
    reply = format_long_double(total)
    exact = m.exact_number(name)
    if exact is None:  # a non-number with increments pending reads as that string
        raise ErrorReply(NOT_FLOAT_VALUE)
    # Redis stores the printed result: add exactly what makes the field read those digits.
    step = subtract(Decimal(reply.decode()), exact)
    ks = s.server.keyspace
    write_coll(s, key, m.increment(ks.clock.now(), ks.actor, name, step), creating)
    return reply


# -- reads -----------------------------------------------------------------------------------------


@command(
    "hget", 3, "readonly fast", (1, 1, 1), "hash",
    "Get the value of a hash field", "2.0.0", "@read @hash @fast",
)
def hget(s: Session, argv: list[bytes]) -> Reply:
    m = lookup_read(s, argv[1], ORMap)
    return None if m is None else m.get(argv[2])


@command(
    "hmget", -3, "readonly fast", (1, 1, 1), "hash",
    "Get the values of all the given hash fields", "2.0.0", "@read @hash @fast",
)
def hmget(s: Session, argv: list[bytes]) -> Reply:
    m = lookup_read(s, argv[1], ORMap)
    if m is None:
        return [None] * (len(argv) - 2)
    return [m.get(name) for name in argv[2:]]


@command(
    "hexists", 3, "readonly fast", (1, 1, 1), "hash",
    "Determine if a hash field exists", "2.0.0", "@read @hash @fast",
)
def hexists(s: Session, argv: list[bytes]) -> Reply:
    m = lookup_read(s, argv[1], ORMap)
    return 0 if m is None or m.get(argv[2]) is None else 1


@command(
    "hlen", 2, "readonly fast", (1, 1, 1), "hash",
    "Get the number of fields in a hash", "2.0.0", "@read @hash @fast",
)
def hlen(s: Session, argv: list[bytes]) -> Reply:
    m = lookup_read(s, argv[1], ORMap)
    return 0 if m is None else len(m)


@command(
    "hstrlen", 3, "readonly fast", (1, 1, 1), "hash",
    "Get the length of the value of a hash field", "3.2.0", "@read @hash @fast",
)
def hstrlen(s: Session, argv: list[bytes]) -> Reply:
    m = lookup_read(s, argv[1], ORMap)
    v = None if m is None else m.get(argv[2])
    return 0 if v is None else len(v)


@command(
    "hkeys", 2, "readonly", (1, 1, 1), "hash",
    "Get all the fields in a hash", "2.0.0", "@read @hash @slow",
    tips="nondeterministic_output_order",
)
def hkeys(s: Session, argv: list[bytes]) -> Reply:
    m = lookup_read(s, argv[1], ORMap)
    return [] if m is None else m.names()


@command(
    "hvals", 2, "readonly", (1, 1, 1), "hash",
    "Get all the values in a hash", "2.0.0", "@read @hash @slow",
    tips="nondeterministic_output_order",
)
def hvals(s: Session, argv: list[bytes]) -> Reply:
    m = lookup_read(s, argv[1], ORMap)
    return [] if m is None else [v for _, v in m.items()]


@command(
    "hgetall", 2, "readonly", (1, 1, 1), "hash",
    "Get all the fields and values in a hash", "2.0.0", "@read @hash @slow",
    tips="nondeterministic_output_order",
)
def hgetall(s: Session, argv: list[bytes]) -> Reply:
    m = lookup_read(s, argv[1], ORMap)
    return {} if m is None else dict(m.items())


@command(
    "hrandfield", -2, "readonly", (1, 1, 1), "hash",
    "Get one or multiple random fields from a hash", "6.2.0", "@read @hash @slow",
    tips="nondeterministic_output",
)
def hrandfield(s: Session, argv: list[bytes]) -> Reply:
    if len(argv) == 2:
        m = lookup_read(s, argv[1], ORMap)
        if m is None:
            return None
        return random.choice(m.names())
    count = parse_int(argv[2])
    if count is None:
        raise ErrorReply(errors.NOT_INTEGER)
    if count == INT64_MIN:
        raise ErrorReply(COUNT_OUT_OF_RANGE)
    with_values = False
    if len(argv) == 4 and c_string(argv[3]).lower() == b"withvalues":
        with_values = True
    elif len(argv) >= 4:
        raise ErrorReply(errors.SYNTAX)
    if with_values and count < -(INT64_MAX // 2):
        raise ErrorReply(OUT_OF_RANGE)
    m = lookup_read(s, argv[1], ORMap)
    if m is None or count == 0:
        return []
    pairs = list(m.items())
    if count < 0:
        picked = random.choices(pairs, k=-count)
    elif count >= len(pairs):
        picked = pairs
    else:
        picked = random.sample(pairs, count)
    if not with_values:
        return [name for name, _ in picked]
    if s.resp == 3:
        return [[name, value] for name, value in picked]
    return [x for pair in picked for x in pair]


@command(
    "hscan", -3, "readonly", (1, 1, 1), "hash",
    "Incrementally iterate hash fields and associated values", "2.8.0", "@read @hash @slow",
    tips="nondeterministic_output",
)
def hscan(s: Session, argv: list[bytes]) -> Reply:
    """A small hash (a listpack in Redis) comes whole; a large one in pages ordered by the
    fields' 64-bit hashes, the cursor being the hash to resume at, so that a field present for
    the whole iteration is returned exactly once whatever changes in between."""
    cursor = parse_cursor(argv[2])
    m = lookup_read(s, argv[1], ORMap)
    if m is None:
        return [b"0", []]
    options = scan_options(argv, 3)
    count = options.hint or SCAN_DEFAULT_COUNT
    pattern = options.pattern
    pairs = list(m.items())
    if len(pairs) <= LISTPACK_ENTRIES and all(
        len(f) <= LISTPACK_VALUE and len(v) <= LISTPACK_VALUE for f, v in pairs
    ):
        next_cursor = 0
    else:
        ordered = sorted((xxhash.xxh3_64_intdigest(f), f, v) for f, v in pairs)
        start = bisect_left(ordered, (cursor,))
        end = min(start + count, len(ordered))
        while end < len(ordered) and ordered[end][0] == ordered[end - 1][0]:
            end += 1  # fields of one hash share a page
        next_cursor = ordered[end][0] if end < len(ordered) else 0
        pairs = [(f, v) for _, f, v in ordered[start:end]]
    if pattern is not None:
        match = compile_glob(pattern)
        pairs = [(f, v) for f, v in pairs if match(f)]
    return [b"%d" % next_cursor, [x for pair in pairs for x in pair]]
