"""Generic key commands (Redis db.c/expire.c): DEL, EXISTS, TTL, SCAN and friends.

Deletion is observed-remove and expiry an LWW register (DESIGN.md); each handler reads the key,
builds the delta Redis's command implies and writes it through ``Keyspace.write``. Argument checks
run in the order Redis runs them, so that the first error reported is the same one.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from gossipkv.commands import errors
from gossipkv.commands.replies import OK, ErrorReply, Reply, Status
from gossipkv.commands.session import Session
from gossipkv.commands.table import command
from gossipkv.crdt.numeric import INT64_MAX, parse_int
from gossipkv.store.entry import Entry, assign, expire
from gossipkv.store.glob import compile_glob
from gossipkv.store.keyspace import Keyspace

STRING: Final = Status(b"string")
NONE: Final = Status(b"none")

ULONG_MAX: Final = 2**64 - 1
# C's LLONG_MAX / 1000 and LLONG_MIN / 1000 (division truncates toward zero).
_SECONDS_MAX = INT64_MAX // 1000
_SECONDS_MIN: Final = -_SECONDS_MAX
_C_SPACE: Final = b" \t\n\v\f\r"
_CURSOR: Final = re.compile(rb"([+-]?)([0-9]+)")
_SCAN_DEFAULT_COUNT: Final = 10
RANDOMKEY_TRIES: Final = 100

EXPIRE_NX: Final = 1
EXPIRE_XX: Final = 2
EXPIRE_GT: Final = 4
EXPIRE_LT: Final = 8


_KIND_NAMES: Final[dict[str, Status]] = {}


def type_name(e: Entry) -> Status:
    """TYPE's answer for a live entry: a collection names its kind."""
    if e.coll is None:
        return STRING
    kind = e.kind()
    name = _KIND_NAMES.get(kind)
    if name is None:
        name = _KIND_NAMES[kind] = Status(kind.encode())
    return name


def c_string(arg: bytes) -> bytes:
    """An argument as the C string Redis's strcasecmp/strtoul/%s see: cut at the first NUL."""
    nul = arg.find(b"\0")
    return arg if nul < 0 else arg[:nul]


def read_key(ks: Keyspace, key: bytes) -> Entry | None:
    """A read lookup that counts keyspace hits and misses, as Redis's lookupKeyRead does."""
    e = ks.lookup(key)
    if e is None:
        ks.keyspace_misses += 1
    else:
        ks.keyspace_hits += 1
    return e


# -- existence and deletion ---------------------------------------------------------------------


@command(
    "del", -2, "write", (1, -1, 1), "generic", "Delete a key", "1.0.0",
    "@keyspace @write @slow",
    key_flags="RM delete",
    tips="request_policy:multi_shard response_policy:agg_sum",
)
def del_(s: Session, argv: list[bytes]) -> Reply:
    delete = s.server.keyspace.delete
    return sum(1 for key in argv[1:] if delete(key))


@command(
    "unlink", -2, "write fast", (1, -1, 1), "generic",
    "Delete a key asynchronously in another thread. Otherwise it is just as DEL, but non blocking.",
    "4.0.0", "@keyspace @write @fast",
    key_flags="RM delete",
    tips="request_policy:multi_shard response_policy:agg_sum",
)
def unlink(s: Session, argv: list[bytes]) -> Reply:
    return del_(s, argv)


@command(
    "exists", -2, "readonly fast", (1, -1, 1), "generic", "Determine if a key exists", "1.0.0",
    "@keyspace @read @fast",
    key_flags="RO",
    tips="request_policy:multi_shard response_policy:agg_sum",
)
def exists(s: Session, argv: list[bytes]) -> Reply:
    ks = s.server.keyspace
    return sum(1 for key in argv[1:] if read_key(ks, key) is not None)


@command(
    "touch", -2, "readonly fast", (1, -1, 1), "generic",
    "Alters the last access time of a key(s). Returns the number of existing keys specified.",
    "3.2.1", "@keyspace @read @fast",
    key_flags="RO",
    tips="request_policy:multi_shard response_policy:agg_sum",
)
def touch(s: Session, argv: list[bytes]) -> Reply:
    return exists(s, argv)


@command(
    "type", 2, "readonly fast", (1, 1, 1), "generic", "Determine the type stored at key",
    "1.0.0", "@keyspace @read @fast",
    key_flags="RO",
)
def type_(s: Session, argv: list[bytes]) -> Reply:
    e = read_key(s.server.keyspace, argv[1])
    return NONE if e is None else type_name(e)


# -- enumeration --------------------------------------------------------------------------------


@command(
    "keys", 2, "readonly", (0, 0, 0), "generic", "Find all keys matching the given pattern",
    "1.0.0", "@keyspace @read @slow @dangerous",
    tips="request_policy:all_shards nondeterministic_output_order",
)
def keys(s: Session, argv: list[bytes]) -> Reply:
    """Every live key matching the pattern, O(keyspace) as in Redis.

    Like Redis, KEYS hides expired keys without reaping them.
    """
    ks = s.server.keyspace
    pattern = argv[1]
    deadlines = ks.expiry.deadlines
    now = ks.now_ms()
    if pattern == b"*":
        if not deadlines:
            return list(ks.live)
        return [k for k in ks.live if deadlines.get(k, now + 1) > now]
    match = compile_glob(pattern)
    if not deadlines:
        return [k for k in ks.live if match(k)]
    return [k for k in ks.live if match(k) and deadlines.get(k, now + 1) > now]


def parse_cursor(arg: bytes) -> int:
    """Redis's parseScanCursorOrReply: strtoul in base 10, so "-1" wraps and "" is 0."""
    if arg[:1] and arg[0] in _C_SPACE:
        raise ErrorReply("ERR invalid cursor")
    text = c_string(arg)
    if not text:
        return 0
    m = _CURSOR.fullmatch(text)
    if m is None:
        raise ErrorReply("ERR invalid cursor")
    value = int(m.group(2))
    if value > ULONG_MAX:
        raise ErrorReply("ERR invalid cursor")
    return (-value) & ULONG_MAX if m.group(1) == b"-" else value


class ScanOptions(NamedTuple):
    hint: int | None  # COUNT; None: the command's default
    pattern: bytes | None  # None: everything ("*" included)
    type: bytes | None  # SCAN's TYPE filter, lower-cased


def scan_options(argv: list[bytes], start: int, with_type: bool = False) -> ScanOptions:
    """The [MATCH p] [COUNT n] (and SCAN's [TYPE t]) options of every *SCAN command, with
    Redis's errors: a non-integer COUNT is not an integer, COUNT < 1 or anything else a syntax
    error."""
    count: int | None = None
    pattern: bytes | None = None
    want_type: bytes | None = None
    i = start
    n = len(argv)
    while i < n:
        option = c_string(argv[i]).lower()
        if option == b"count" and n - i >= 2:
            parsed = parse_int(argv[i + 1])
            if parsed is None:
                raise ErrorReply(errors.NOT_INTEGER)
            if parsed < 1:
                raise ErrorReply(errors.SYNTAX)
            count = parsed
        elif option == b"match" and n - i >= 2:
            pattern = None if argv[i + 1] == b"*" else argv[i + 1]
        elif with_type and option == b"type" and n - i >= 2:
            want_type = c_string(argv[i + 1]).lower()
        else:
            raise ErrorReply(errors.SYNTAX)
        i += 2
    return ScanOptions(count, pattern, want_type)


@command(
    "scan", -2, "readonly", (0, 0, 0), "generic", "Incrementally iterate the keys space",
    "2.8.0", "@keyspace @read @slow",
    tips="nondeterministic_output request_policy:special",
)
def scan(s: Session, argv: list[bytes]) -> Reply:
    """One step over the bucket index; see store/buckets.py for why the cursor stays valid."""
    cursor = parse_cursor(argv[1])
    options = scan_options(argv, 2, with_type=True)
    count = options.hint or _SCAN_DEFAULT_COUNT
    pattern = options.pattern
    want_type = options.type
    ks = s.server.keyspace
    cursor, found = ks.buckets.scan(cursor, count)
    if pattern is not None:
        match = compile_glob(pattern)
        found = [k for k in found if match(k)]
    if want_type is not None:
        out: list[bytes] = []
        for k in found:
            e = ks.lookup(k)
            if e is not None and type_name(e).lower() == want_type:
                out.append(k)
        found = out
    elif ks.expiry.deadlines:
        found = [k for k in found if ks.lookup(k) is not None]
    return [b"%d" % cursor, found]


@command(
    "randomkey", 1, "readonly", (0, 0, 0), "generic", "Return a random key from the keyspace",
    "1.0.0", "@keyspace @read @slow",
    tips="request_policy:all_shards nondeterministic_output",
)
def randomkey(s: Session, argv: list[bytes]) -> Reply:
    """A random bucket, then a random key in it; an expired pick is reaped and another drawn,
    as Redis does. After RANDOMKEY_TRIES expired picks in a row, the first unexpired key in
    the live map is returned instead, so the command stays bounded."""
    ks = s.server.keyspace
    for _ in range(RANDOMKEY_TRIES):
        key = ks.buckets.random_key()
        if key is None:
            return None
        if ks.lookup(key) is not None:
            return key
    deadlines = ks.expiry.deadlines
    now = ks.now_ms()
    return next((k for k in ks.live if deadlines.get(k, now + 1) > now), None)


# -- renaming -----------------------------------------------------------------------------------


def _rename(s: Session, argv: list[bytes], nx: bool) -> Reply:
    """RENAME as an observed-remove of the source plus a write of its value at the target.

    Cross-node caveat: the target receives the source's value as this node saw it. A write to
    the source on another node concurrent with the RENAME is not moved: the observed-remove
    leaves it in place, so the source reappears holding only that write; and a concurrent
    RENAME of the same source on two nodes copies the value to both targets.
    """
    ks = s.server.keyspace
    src_key, dst_key = argv[1], argv[2]
    src = ks.lookup(src_key)
    if src is None:
        raise ErrorReply(errors.NO_SUCH_KEY)
    if src_key == dst_key:
        return 0 if nx else OK
    dst = ks.lookup(dst_key)
    if nx and dst is not None:
        return 0
    deadline = src.deadline()
    coll = src.visible_coll()
    if coll is None:
        value = src.read()
        ks.write(dst_key, assign(ks.clock.now(), ks.node, value, dst, deadline=deadline or None))
    else:
        if dst is not None:
            ks.remove(dst_key, dst)
        # Fresh dots at the target: the source's own dots may be covered by a context the
        # target key already holds (a key renamed away and back).
        restamp = getattr(coll, "restamp", None)
        moved = restamp(ks.clock.now, ks.node) if restamp is not None else coll.copy()
        exp = (ks.clock.now(), ks.node, deadline) if deadline else None
        ks.write(dst_key, Entry(exp=exp, coll=moved))
    ks.remove(src_key, src)
    return 1 if nx else OK


@command(
    "rename", 3, "write", (1, 2, 1), "generic", "Rename a key", "1.0.0",
    "@keyspace @write @slow",
)
def rename(s: Session, argv: list[bytes]) -> Reply:
    return _rename(s, argv, nx=False)


@command(
    "renamenx", 3, "write fast", (1, 2, 1), "generic",
    "Rename a key, only if the new key does not exist", "1.0.0", "@keyspace @write @fast",
)
def renamenx(s: Session, argv: list[bytes]) -> Reply:
    return _rename(s, argv, nx=True)


# -- expiry -------------------------------------------------------------------------------------


def _expire_flags(argv: list[bytes]) -> int:
    """Redis 7.0's parseExtendedExpireArgumentsOrReply, errors and their order included."""
    flags = 0
    for arg in argv[3:]:
        option = c_string(arg)
        word = option.lower()
        if word == b"nx":
            flags |= EXPIRE_NX
        elif word == b"xx":
            flags |= EXPIRE_XX
        elif word == b"gt":
            flags |= EXPIRE_GT
        elif word == b"lt":
            flags |= EXPIRE_LT
        else:
            raise ErrorReply(f"ERR Unsupported option {errors.text(option)}")
    if flags & EXPIRE_NX and flags & (EXPIRE_XX | EXPIRE_GT | EXPIRE_LT):
        raise ErrorReply("ERR NX and XX, GT or LT options at the same time are not compatible")
    if flags & EXPIRE_GT and flags & EXPIRE_LT:
        raise ErrorReply("ERR GT and LT options at the same time are not compatible")
    return flags


def _expire(s: Session, argv: list[bytes], name: str, relative: bool, unit_ms: int) -> Reply:
    """EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT: write the expiry register with an absolute
    deadline in ms; a deadline already past deletes the key (observed-remove), as in Redis."""
    flags = _expire_flags(argv)
    when = parse_int(argv[2])
    if when is None:
        raise ErrorReply(errors.NOT_INTEGER)
    if unit_ms == 1000:
        if when > _SECONDS_MAX or when < _SECONDS_MIN:
            raise ErrorReply(errors.INVALID_EXPIRE.format(name))
        when *= 1000
    ks = s.server.keyspace
    now = ks.now_ms()
    base = now if relative else 0
    if when > INT64_MAX - base:
        raise ErrorReply(errors.INVALID_EXPIRE.format(name))
    when += base
    key = argv[1]
    e = ks.lookup(key)
    if e is None:
        return 0
    if flags:
        current = e.deadline() or -1
        if flags & EXPIRE_NX and current != -1:
            return 0
        if flags & EXPIRE_XX and current == -1:
            return 0
        if flags & EXPIRE_GT and (when <= current or current == -1):
            return 0
        if flags & EXPIRE_LT and current != -1 and when >= current:
            return 0
    if when <= now:
        ks.remove(key, e)
    else:
        ks.write(key, expire(ks.clock.now(), ks.node, when))
    return 1


@command(
    "expire", -3, "write fast", (1, 1, 1), "generic", "Set a key's time to live in seconds",
    "1.0.0", "@keyspace @write @fast",
    key_flags="RW update",
)
def expire_(s: Session, argv: list[bytes]) -> Reply:
    return _expire(s, argv, "expire", relative=True, unit_ms=1000)


@command(
    "pexpire", -3, "write fast", (1, 1, 1), "generic", "Set a key's time to live in milliseconds",
    "2.6.0", "@keyspace @write @fast",
    key_flags="RW update",
)
def pexpire(s: Session, argv: list[bytes]) -> Reply:
    return _expire(s, argv, "pexpire", relative=True, unit_ms=1)


@command(
    "expireat", -3, "write fast", (1, 1, 1), "generic",
    "Set the expiration for a key as a UNIX timestamp", "1.2.0", "@keyspace @write @fast",
    key_flags="RW update",
)
def expireat(s: Session, argv: list[bytes]) -> Reply:
    return _expire(s, argv, "expireat", relative=False, unit_ms=1000)


@command(
    "pexpireat", -3, "write fast", (1, 1, 1), "generic",
    "Set the expiration for a key as a UNIX timestamp specified in milliseconds", "2.6.0",
    "@keyspace @write @fast",
    key_flags="RW update",
)
def pexpireat(s: Session, argv: list[bytes]) -> Reply:
    return _expire(s, argv, "pexpireat", relative=False, unit_ms=1)


def _ttl(s: Session, argv: list[bytes], in_ms: bool, absolute: bool) -> Reply:
    """Redis's ttlGenericCommand: -2 missing, -1 persistent; seconds round half up."""
    ks = s.server.keyspace
    e = read_key(ks, argv[1])
    if e is None:
        return -2
    deadline = e.deadline()
    if not deadline:
        return -1
    ttl = deadline if absolute else max(deadline - ks.now_ms(), 0)
    return ttl if in_ms else (ttl + 500) // 1000


@command(
    "ttl", 2, "readonly fast", (1, 1, 1), "generic", "Get the time to live for a key in seconds",
    "1.0.0", "@keyspace @read @fast",
    key_flags="RO access",
    tips="nondeterministic_output",
)
def ttl(s: Session, argv: list[bytes]) -> Reply:
    return _ttl(s, argv, in_ms=False, absolute=False)


@command(
    "pttl", 2, "readonly fast", (1, 1, 1), "generic",
    "Get the time to live for a key in milliseconds", "2.6.0", "@keyspace @read @fast",
    key_flags="RO access",
    tips="nondeterministic_output",
)
def pttl(s: Session, argv: list[bytes]) -> Reply:
    return _ttl(s, argv, in_ms=True, absolute=False)


@command(
    "expiretime", 2, "readonly fast", (1, 1, 1), "generic",
    "Get the expiration Unix timestamp for a key", "7.0.0", "@keyspace @read @fast",
    key_flags="RO access",
)
def expiretime(s: Session, argv: list[bytes]) -> Reply:
    return _ttl(s, argv, in_ms=False, absolute=True)


@command(
    "pexpiretime", 2, "readonly fast", (1, 1, 1), "generic",
    "Get the expiration Unix timestamp for a key in milliseconds", "7.0.0",
    "@keyspace @read @fast",
    key_flags="RO access",
)
def pexpiretime(s: Session, argv: list[bytes]) -> Reply:
    return _ttl(s, argv, in_ms=True, absolute=True)


@command(
    "persist", 2, "write fast", (1, 1, 1), "generic", "Remove the expiration from a key",
    "2.2.0", "@keyspace @write @fast",
    key_flags="RW update",
)
def persist(s: Session, argv: list[bytes]) -> Reply:
    ks = s.server.keyspace
    e = ks.lookup(argv[1])
    if e is None or not e.deadline():
        return 0
    ks.write(argv[1], expire(ks.clock.now(), ks.node, 0))
    return 1
