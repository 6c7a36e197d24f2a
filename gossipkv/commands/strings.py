"""String commands (Redis's t_string.c): values are LWW registers with an observed-reset counter.

Reads that Redis makes with lookupKeyRead count keyspace hits and misses (``_read``); the
lookups of write commands do not, as in Redis. Every value a command reads goes through
``_string``, the one place a WRONGTYPE check belongs once keys can hold other types.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Final

from gossipkv.commands import errors
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
)
from gossipkv.store.entry import Entry, assign, expire, increment, increment_to
from gossipkv.store.keyspace import Keyspace

PROTO_MAX_BULK_LEN: Final = 512 * 1024 * 1024  # Redis's default proto-max-bulk-len

OFFSET_OUT_OF_RANGE: Final = "ERR offset is out of range"
DECREMENT_OVERFLOW: Final = "ERR decrement would overflow"

# SET and GETEX options, as flags.
_NX, _XX, _GET, _KEEPTTL, _PERSIST, _EX, _PX, _EXAT, _PXAT = (1 << i for i in range(9))
_EXPIRY = _EX | _PX | _EXAT | _PXAT
_IN_SECONDS = _EX | _EXAT
_RELATIVE = _EX | _PX

# Option name -> (its flag, the flags it cannot follow, whether it takes a value). Redis 7.0
# refuses a conflicting pair with a syntax error; repeating one option is allowed.
_Option = tuple[int, int, bool]
_SET_OPTIONS: Final[dict[bytes, _Option]] = {
    b"nx": (_NX, _XX, False),
    b"xx": (_XX, _NX, False),
    b"get": (_GET, 0, False),
    b"keepttl": (_KEEPTTL, _PERSIST | _EXPIRY, False),
    b"ex": (_EX, _KEEPTTL | _PERSIST | (_EXPIRY & ~_EX), True),
    b"px": (_PX, _KEEPTTL | _PERSIST | (_EXPIRY & ~_PX), True),
    b"exat": (_EXAT, _KEEPTTL | _PERSIST | (_EXPIRY & ~_EXAT), True),
    b"pxat": (_PXAT, _KEEPTTL | _PERSIST | (_EXPIRY & ~_PXAT), True),
}
_GETEX_OPTIONS: Final[dict[bytes, _Option]] = {
    b"persist": (_PERSIST, _KEEPTTL | _EXPIRY, False),
    b"ex": _SET_OPTIONS[b"ex"],
    b"px": _SET_OPTIONS[b"px"],
    b"exat": _SET_OPTIONS[b"exat"],
    b"pxat": _SET_OPTIONS[b"pxat"],
}


# -- shared steps ---------------------------------------------------------------------------------


def _read(ks: Keyspace, key: bytes) -> Entry | None:
    """lookupKeyRead: the live entry, counted as a keyspace hit or miss."""
    e = ks.lookup(key)
    if e is None:
        ks.keyspace_misses += 1
        return None
    ks.keyspace_hits += 1
    return e


def _string(e: Entry) -> bytes:
    """The string a key holds; WRONGTYPE for a key holding a collection."""
    v = e.value
    if e.counter is None and v is not None and e.coll is None:
        return v
    if e.coll is not None and e.visible_coll() is not None:
        raise ErrorReply(errors.WRONGTYPE)
    return e.read()


def _parse_options(
    argv: list[bytes], start: int, options: dict[bytes, _Option]
) -> tuple[int, bytes | None]:
    """Redis's parseExtendedStringArgumentsOrReply: the flags and the expiry argument."""
    flags = 0
    expiry: bytes | None = None
    i = start
    n = len(argv)
    while i < n:
        word = argv[i]
        if b"\0" in word:  # Redis compares C strings: a NUL ends the word
            word = word[: word.index(b"\0")]
        option = options.get(word.lower())
        if option is None or flags & option[1]:
            raise ErrorReply(errors.SYNTAX)
        if option[2]:
            if i + 1 == n:
                raise ErrorReply(errors.SYNTAX)
            i += 1
            expiry = argv[i]
        flags |= option[0]
        i += 1
    return flags, expiry


def _deadline(ks: Keyspace, name: str, flags: int, arg: bytes) -> int:
    """getExpireMillisecondsOrReply: the absolute deadline in ms an expiry argument means."""
    ms = parse_int(arg)
    if ms is None:
        raise ErrorReply(errors.NOT_INTEGER)
    seconds = flags & _IN_SECONDS
    if ms <= 0 or (seconds and ms > INT64_MAX // 1000):
        raise ErrorReply(errors.INVALID_EXPIRE.format(name))
    if seconds:
        ms *= 1000
    if flags & _RELATIVE:
        ms += ks.now_ms()
        if ms > INT64_MAX:  # Redis's int64 sum wraps negative and is refused
            raise ErrorReply(errors.INVALID_EXPIRE.format(name))
    return ms


def _set(
    ks: Keyspace,
    key: bytes,
    value: bytes,
    flags: int,
    deadline: int | None,
    ok_reply: Reply,
    abort_reply: Reply,
) -> Reply:
    """setGenericCommand, after the expiry is validated."""
    if flags & _GET:
        old = _read(ks, key)
        reply: Reply = None if old is None else _string(old)
    else:
        old = ks.lookup(key)
        reply = ok_reply
    if (flags & _NX and old is not None) or (flags & _XX and old is None):
        return reply if flags & _GET else abort_reply
    ks.write(
        key,
        assign(ks.clock.now(), ks.node, value, old, bool(flags & _KEEPTTL), deadline),
    )
    return reply


def _set_plain(ks: Keyspace, key: bytes, value: bytes) -> None:
    """SET key value: the common case of a key with no counter and no TTL is one small delta."""
    old = ks.live.get(key)
    if old is None or (old.counter is None and old.exp is None and old.coll is None):
        ks.write(key, Entry(ks.clock.now(), ks.node, value))
    else:
        ks.write(key, assign(ks.clock.now(), ks.node, value, ks.lookup(key)))


def _max_string_length(s: Session) -> int:
    configured = s.server.config.get("proto-max-bulk-len", "")
    return int(configured) if configured.isdigit() else PROTO_MAX_BULK_LEN


def _check_length(s: Session, length: int) -> None:
    if length > _max_string_length(s):
        raise ErrorReply(errors.STRING_TOO_LONG)


# -- reads ----------------------------------------------------------------------------------------


@command(
    "get", 2, "readonly fast", (1, 1, 1), "string",
    "Get the value of a key", "1.0.0", "@read @string @fast",
)
def get(s: Session, argv: list[bytes]) -> Reply:
    ks = s.server.keyspace
    e = ks.lookup(argv[1])
    if e is None:
        ks.keyspace_misses += 1
        return None
    ks.keyspace_hits += 1
    # _string(e), inlined: GET is the hottest read.
    if e.counter is None and e.coll is None:
        return e.value
    return _string(e)


@command(
    "mget", -2, "readonly fast", (1, -1, 1), "string",
    "Get the values of all the given keys", "1.0.0", "@read @string @fast",
    tips="request_policy:multi_shard",
)
def mget(s: Session, argv: list[bytes]) -> Reply:
    ks = s.server.keyspace
    values: list[bytes | None] = []
    for key in argv[1:]:
        e = _read(ks, key)
        # a key of another type reads as nil
        values.append(None if e is None or e.visible_coll() is not None else _string(e))
    return values


@command(
    "strlen", 2, "readonly fast", (1, 1, 1), "string",
    "Get the length of the value stored in a key", "2.2.0", "@read @string @fast",
    key_flags="RO",
)
def strlen(s: Session, argv: list[bytes]) -> Reply:
    e = _read(s.server.keyspace, argv[1])
    return 0 if e is None else len(_string(e))


def getrange(s: Session, argv: list[bytes]) -> Reply:
    start = parse_int(argv[2])
    end = parse_int(argv[3])
    if start is None or end is None:
        raise ErrorReply(errors.NOT_INTEGER)
    e = _read(s.server.keyspace, argv[1])
    if e is None:
        return b""
    value = _string(e)
    n = len(value)
    if start < 0 and end < 0 and start > end:
        return b""
    if start < 0:
        start = max(n + start, 0)
    if end < 0:
        end = max(n + end, 0)
    end = min(end, n - 1)
    if start > end or n == 0:
        return b""
    return value[start : end + 1]


command(
    "getrange", 4, "readonly", (1, 1, 1), "string",
    "Get a substring of the string stored at a key", "2.4.0", "@read @string @slow",
)(getrange)
command(
    "substr", 4, "readonly", (1, 1, 1), "string",
    "Get a substring of the string stored at a key", "1.0.0", "@read @string @slow",
)(getrange)


# -- whole-value writes -----------------------------------------------------------------------


@command(
    "set", -3, "write denyoom", (1, 1, 1), "string",
    "Set the string value of a key", "1.0.0", "@write @string @slow",
    key_flags="RW access update variable_flags",
)
def set_(s: Session, argv: list[bytes]) -> Reply:
    ks = s.server.keyspace
    key = argv[1]
    if len(argv) == 3:
        old = ks.live.get(key)
        if old is None or (old.counter is None and old.exp is None and old.coll is None):
            ks.write(key, Entry(ks.clock.now(), ks.node, argv[2]))
            return OK
        ks.write(key, assign(ks.clock.now(), ks.node, argv[2], ks.lookup(key)))
        return OK
    flags, expiry = _parse_options(argv, 3, _SET_OPTIONS)
    deadline = None if expiry is None else _deadline(ks, "set", flags, expiry)
    return _set(ks, key, argv[2], flags, deadline, OK, None)


@command(
    "setnx", 3, "write denyoom fast", (1, 1, 1), "string",
    "Set the value of a key, only if the key does not exist", "1.0.0", "@write @string @fast",
    key_flags="OW insert",
)
def setnx(s: Session, argv: list[bytes]) -> Reply:
    return _set(s.server.keyspace, argv[1], argv[2], _NX, None, 1, 0)


@command(
    "setex", 4, "write denyoom", (1, 1, 1), "string",
    "Set the value and expiration of a key", "2.0.0", "@write @string @slow",
    key_flags="OW update",
)
def setex(s: Session, argv: list[bytes]) -> Reply:
    ks = s.server.keyspace
    deadline = _deadline(ks, "setex", _EX, argv[2])
    return _set(ks, argv[1], argv[3], 0, deadline, OK, None)


@command(
    "psetex", 4, "write denyoom", (1, 1, 1), "string",
    "Set the value and expiration in milliseconds of a key", "2.6.0", "@write @string @slow",
    key_flags="OW update",
)
def psetex(s: Session, argv: list[bytes]) -> Reply:
    ks = s.server.keyspace
    deadline = _deadline(ks, "psetex", _PX, argv[2])
    return _set(ks, argv[1], argv[3], 0, deadline, OK, None)


@command(
    "getset", 3, "write denyoom fast", (1, 1, 1), "string",
    "Set the string value of a key and return its old value", "1.0.0", "@write @string @fast",
)
def getset(s: Session, argv: list[bytes]) -> Reply:
    ks = s.server.keyspace
    return _set(ks, argv[1], argv[2], _GET, None, None, None)


@command(
    "mset", -3, "write denyoom", (1, -1, 2), "string",
    "Set multiple keys to multiple values", "1.0.1", "@write @string @slow",
    key_flags="OW update",
    tips="request_policy:multi_shard response_policy:all_succeeded",
)
def mset(s: Session, argv: list[bytes]) -> Reply:
    if len(argv) % 2 == 0:
        raise errors.wrong_arity("mset")
    ks = s.server.keyspace
    for i in range(1, len(argv), 2):
        _set_plain(ks, argv[i], argv[i + 1])
    return OK


@command(
    "msetnx", -3, "write denyoom", (1, -1, 2), "string",
    "Set multiple keys to multiple values, only if none of the keys exist", "1.0.1",
    "@write @string @slow",
    key_flags="OW insert",
    tips="request_policy:multi_shard response_policy:agg_min",
)
def msetnx(s: Session, argv: list[bytes]) -> Reply:
    if len(argv) % 2 == 0:
        raise errors.wrong_arity("msetnx")
    ks = s.server.keyspace
    keys = argv[1::2]
    if any(ks.lookup(key) is not None for key in keys):
        return 0
    for i in range(1, len(argv), 2):
        _set_plain(ks, argv[i], argv[i + 1])
    return 1


@command(
    "append", 3, "write denyoom fast", (1, 1, 1), "string",
    "Append a value to a key", "2.0.0", "@write @string @fast",
    key_flags="RW insert",
)
def append(s: Session, argv: list[bytes]) -> Reply:
    ks = s.server.keyspace
    key = argv[1]
    suffix = argv[2]
    e = ks.lookup(key)
    if e is None:
        ks.write(key, assign(ks.clock.now(), ks.node, suffix, None))
        return len(suffix)
    value = _string(e)
    _check_length(s, len(value) + len(suffix))
    value += suffix
    ks.write(key, assign(ks.clock.now(), ks.node, value, e, keep_ttl=True))
    return len(value)


@command(
    "setrange", 4, "write denyoom", (1, 1, 1), "string",
    "Overwrite part of a string at key starting at the specified offset", "2.2.0",
    "@write @string @slow",
    key_flags="RW update",
)
def setrange(s: Session, argv: list[bytes]) -> Reply:
    ks = s.server.keyspace
    key = argv[1]
    patch = argv[3]
    offset = parse_int(argv[2])
    if offset is None:
        raise ErrorReply(errors.NOT_INTEGER)
    if offset < 0:
        raise ErrorReply(OFFSET_OUT_OF_RANGE)
    e = ks.lookup(key)
    if e is None:
        if not patch:
            return 0
        _check_length(s, offset + len(patch))
        value = bytes(offset) + patch
        ks.write(key, assign(ks.clock.now(), ks.node, value, None))
        return len(value)
    value = _string(e)
    if not patch:
        return len(value)
    _check_length(s, offset + len(patch))
    if len(value) <= offset:
        value = value + bytes(offset - len(value)) + patch
    else:
        value = value[:offset] + patch + value[offset + len(patch) :]
    ks.write(key, assign(ks.clock.now(), ks.node, value, e, keep_ttl=True))
    return len(value)


# -- reads that write -------------------------------------------------------------------------


@command(
    "getdel", 2, "write fast", (1, 1, 1), "string",
    "Get the value of a key and delete the key", "6.2.0", "@write @string @fast",
    key_flags="RW access delete",
)
def getdel(s: Session, argv: list[bytes]) -> Reply:
    ks = s.server.keyspace
    e = _read(ks, argv[1])
    if e is None:
        return None
    value = _string(e)
    ks.remove(argv[1], e)
    return value


@command(
    "getex", -2, "write fast", (1, 1, 1), "string",
    "Get the value of a key and optionally set its expiration", "6.2.0", "@write @string @fast",
)
def getex(s: Session, argv: list[bytes]) -> Reply:
    ks = s.server.keyspace
    key = argv[1]
    flags, expiry = _parse_options(argv, 2, _GETEX_OPTIONS)
    e = _read(ks, key)
    if e is None:
        return None
    value = _string(e)
    if expiry is not None:
        deadline = _deadline(ks, "getex", flags, expiry)
        if not flags & _RELATIVE and deadline <= ks.now_ms():
            ks.remove(key, e)  # an absolute deadline already past deletes the key
        else:
            ks.write(key, expire(ks.clock.now(), ks.node, deadline))
    elif flags & _PERSIST and e.deadline():
        ks.write(key, expire(ks.clock.now(), ks.node, 0))
    return value


# -- counters ---------------------------------------------------------------------------------


def _incr_by(ks: Keyspace, key: bytes, by: int) -> int:
    """incrDecrCommand: the counter moves by ``by`` unless the merged sum leaves int64."""
    e = ks.lookup(key)
    if e is None:
        current = 0
        state = None  # a removed key's counter is covered: the node's total starts afresh
    else:
        parsed = _int64(e)
        if parsed is None:
            raise ErrorReply(errors.NOT_INTEGER)
        current = parsed
        state = e
    total = current + by
    if total > INT64_MAX or total < INT64_MIN:
        raise ErrorReply(errors.OVERFLOW)
    ks.write(key, increment(ks.clock.now(), ks.actor, by, state))
    return total


def _int64(e: Entry) -> int | None:
    """string2ll of the value ``e`` reads as, without printing it when it is an int sum."""
    v = e.value
    c = e.counter
    if c is None and v is not None and e.coll is None:
        return parse_int(v)
    pending = c.pending() if c is not None else None
    if isinstance(pending, int):
        base = parse_int(v) if v is not None and e.has_value() else 0
        if base is not None:
            total = base + pending
            return total if INT64_MIN <= total <= INT64_MAX else None
    return parse_int(_string(e))


def _by(arg: bytes) -> int:
    by = parse_int(arg)
    if by is None:
        raise ErrorReply(errors.NOT_INTEGER)
    return by


@command(
    "incr", 2, "write denyoom fast", (1, 1, 1), "string",
    "Increment the integer value of a key by one", "1.0.0", "@write @string @fast",
)
def incr(s: Session, argv: list[bytes]) -> Reply:
    return _incr_by(s.server.keyspace, argv[1], 1)


@command(
    "decr", 2, "write denyoom fast", (1, 1, 1), "string",
    "Decrement the integer value of a key by one", "1.0.0", "@write @string @fast",
)
def decr(s: Session, argv: list[bytes]) -> Reply:
    return _incr_by(s.server.keyspace, argv[1], -1)


@command(
    "incrby", 3, "write denyoom fast", (1, 1, 1), "string",
    "Increment the integer value of a key by the given amount", "1.0.0", "@write @string @fast",
)
def incrby(s: Session, argv: list[bytes]) -> Reply:
    return _incr_by(s.server.keyspace, argv[1], _by(argv[2]))


@command(
    "decrby", 3, "write denyoom fast", (1, 1, 1), "string",
    "Decrement the integer value of a key by the given number", "1.0.0", "@write @string @fast",
)
def decrby(s: Session, argv: list[bytes]) -> Reply:
    by = _by(argv[2])
    if by == INT64_MIN:  # its negation is no int64
        raise ErrorReply(DECREMENT_OVERFLOW)
    return _incr_by(s.server.keyspace, argv[1], -by)


@command(
    "incrbyfloat", 3, "write denyoom fast", (1, 1, 1), "string",
    "Increment the float value of a key by the given amount", "2.6.0", "@write @string @fast",
)
def incrbyfloat(s: Session, argv: list[bytes]) -> Reply:
    ks = s.server.keyspace
    key = argv[1]
    e = ks.lookup(key)
    current = parse_long_double(_string(e)) if e is not None else Fraction(0)
    by = parse_long_double(argv[2])
    if current is None or by is None:
        raise ErrorReply(errors.NOT_FLOAT)
    total = add_long_double(current, by)
    if not isinstance(total, Fraction):
        raise ErrorReply(errors.NAN_OR_INF)
    reply = format_long_double(total)
    ks.write(key, increment_to(ks.clock.now(), ks.actor, Decimal(reply.decode()), e))
    return reply
