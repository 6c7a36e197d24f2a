"""Set commands (Redis's t_set.c) over the add-wins OR-set of crdt/orset.py.

Writes send small deltas: SADD the new members with fresh dots, SREM/SPOP the dots they saw.
Cross-node caveats: SPOP on two nodes at once may pop the same member (each removes what it
saw); SMOVE is a remove at the source plus an add at the target, each converging on its own;
the *STORE commands replace the target as a DEL of what was seen plus fresh adds.
"""

from __future__ import annotations

import random
from typing import Final

from gossipkv.commands import errors
from gossipkv.commands.access import lookup_coll, lookup_read, scan_page, write_coll
from gossipkv.commands.keys import c_string, parse_cursor, scan_options
from gossipkv.commands.replies import ErrorReply, Reply, RespSet
from gossipkv.commands.session import Session
from gossipkv.commands.table import command
from gossipkv.crdt.numeric import parse_int
from gossipkv.crdt.orset import ORSet
from gossipkv.store.glob import compile_glob

_EMPTY: Final = ORSet()
_LONG_MAX: Final = 2**63 - 1


def _below(n: int) -> int:
    """A random index below ``n``: one C call where random.randrange is interpreted Python
    (its bias, under n / 2**53, is far below anything a set's size could show)."""
    return int(random.random() * n)


def _set(s: Session, key: bytes) -> ORSet | None:
    return lookup_coll(s, key, ORSet)


def _store(s: Session, key: bytes, members: list[bytes]) -> int:
    """Replace ``key`` (of any type) with a set of ``members``; an empty result deletes it."""
    ks = s.server.keyspace
    old = ks.lookup(key)
    if old is not None:  # an empty result deletes the key: that removal is dated (GC)
        ks.write(key, old.removal((ks.clock.now(), ks.node), date_key=not members))
    if members:
        write_coll(s, key, _EMPTY.add(ks.clock.now, ks.node, members), creating=True)
    return len(members)


# -- single-key commands -------------------------------------------------------------------------


@command(
    "sadd", -3, "write denyoom fast", (1, 1, 1), "set",
    "Add one or more members to a set", "1.0.0", "@write @set @fast",
    key_flags="RW insert",
)
def sadd(s: Session, argv: list[bytes]) -> Reply:
    key = argv[1]
    cur = _set(s, key)
    ks = s.server.keyspace
    delta = (cur or _EMPTY).add(ks.clock.now, ks.node, argv[2:])
    if delta.members:
        write_coll(s, key, delta, creating=cur is None)
    return len(delta.members)


@command(
    "srem", -3, "write fast", (1, 1, 1), "set",
    "Remove one or more members from a set", "1.0.0", "@write @set @fast",
    key_flags="RW delete",
)
def srem(s: Session, argv: list[bytes]) -> Reply:
    key = argv[1]
    cur = _set(s, key)
    if cur is None:
        return 0
    removed = sum(1 for m in set(argv[2:]) if m in cur)
    if removed:
        write_coll(s, key, cur.remove(argv[2:]))
    return removed


@command(
    "smembers", 2, "readonly", (1, 1, 1), "set", "Get all the members in a set", "1.0.0",
    "@read @set @slow", key_flags="RO access",
)
def smembers(s: Session, argv: list[bytes]) -> Reply:
    cur = lookup_read(s, argv[1], ORSet)
    return RespSet(cur) if cur is not None else RespSet()


@command(
    "sismember", 3, "readonly fast", (1, 1, 1), "set",
    "Determine if a given value is a member of a set", "1.0.0", "@read @set @fast",
    key_flags="RO access",
)
def sismember(s: Session, argv: list[bytes]) -> Reply:
    cur = lookup_read(s, argv[1], ORSet)
    return 1 if cur is not None and argv[2] in cur else 0


@command(
    "smismember", -3, "readonly fast", (1, 1, 1), "set",
    "Returns the membership associated with the given elements for a set", "6.2.0",
    "@read @set @fast", key_flags="RO access",
)
def smismember(s: Session, argv: list[bytes]) -> Reply:
    cur = lookup_read(s, argv[1], ORSet) or _EMPTY
    return [1 if m in cur else 0 for m in argv[2:]]


@command(
    "scard", 2, "readonly fast", (1, 1, 1), "set", "Get the number of members in a set",
    "1.0.0", "@read @set @fast", key_flags="RO",
)
def scard(s: Session, argv: list[bytes]) -> Reply:
    cur = lookup_read(s, argv[1], ORSet)
    return len(cur) if cur is not None else 0


@command(
    "spop", -2, "write fast", (1, 1, 1), "set",
    "Remove and return one or multiple random members from a set", "1.0.0",
    "@write @set @fast", key_flags="RW access delete", tips="nondeterministic_output",
)
def spop(s: Session, argv: list[bytes]) -> Reply:
    if len(argv) > 3:
        raise ErrorReply(errors.SYNTAX)
    count: int | None = None
    if len(argv) == 3:
        count = parse_int(argv[2])
        if count is None or count < 0:
            raise ErrorReply("ERR value is out of range, must be positive")
    key = argv[1]
    cur = _set(s, key)
    if cur is None:
        return None if count is None else RespSet()
    if count is None:
        popped = [cur.random_member(_below, take=True)]
    elif count == 0:
        return RespSet()
    else:
        members = list(cur.members)
        popped = members if count >= len(members) else random.sample(members, count)
    write_coll(s, key, cur.remove(popped))
    return popped[0] if count is None else RespSet(popped)


@command(
    "srandmember", -2, "readonly", (1, 1, 1), "set",
    "Get one or multiple random members from a set", "1.0.0", "@read @set @slow",
    key_flags="RO access", tips="nondeterministic_output",
)
def srandmember(s: Session, argv: list[bytes]) -> Reply:
    if len(argv) > 3:
        raise ErrorReply(errors.SYNTAX)
    count: int | None = None
    if len(argv) == 3:
        count = parse_int(argv[2])
        if count is None:
            raise ErrorReply(errors.NOT_INTEGER)
        if not -_LONG_MAX <= count <= _LONG_MAX:
            raise ErrorReply("ERR value is out of range")
    cur = lookup_read(s, argv[1], ORSet)
    if cur is None:
        return None if count is None else []
    if count is None:
        return cur.random_member(_below)
    members = list(cur.members)
    if count >= 0:
        return members if count >= len(members) else random.sample(members, count)
    return random.choices(members, k=-count)


@command(
    "smove", 4, "write fast", (1, 2, 1), "set",
    "Move a member from one set to another", "1.0.0", "@write @set @fast",
    key_flags="RW delete",
)
def smove(s: Session, argv: list[bytes]) -> Reply:
    src_key, dst_key, member = argv[1], argv[2], argv[3]
    ks = s.server.keyspace
    if ks.lookup(src_key) is None:
        return 0
    src = _set(s, src_key)
    dst = _set(s, dst_key)
    if src is None or member not in src:
        return 0
    if src_key == dst_key:
        return 1
    write_coll(s, src_key, src.remove([member]))
    if dst is None or member not in dst:
        write_coll(s, dst_key, _EMPTY.add(ks.clock.now, ks.node, [member]), dst is None)
    return 1


# -- multi-key algebra ---------------------------------------------------------------------------


def _sets(s: Session, keys: list[bytes]) -> list[ORSet | None]:
    """Every key's set, WRONGTYPE for any of another type (Redis checks all of them)."""
    return [lookup_read(s, k, ORSet) for k in keys]


def _inter(sets: list[ORSet | None], limit: int = 0) -> list[bytes]:
    if not sets or any(x is None for x in sets):
        return []
    ordered = sorted((x for x in sets if x is not None), key=len)
    first, rest = ordered[0], ordered[1:]
    out: list[bytes] = []
    for m in first:
        if all(m in other for other in rest):
            out.append(m)
            if limit and len(out) >= limit:
                break
    return out


def _union(sets: list[ORSet | None]) -> list[bytes]:
    seen: dict[bytes, None] = {}
    for x in sets:
        if x is not None:
            seen.update(dict.fromkeys(x.members))
    return list(seen)


def _diff(sets: list[ORSet | None]) -> list[bytes]:
    first = sets[0]
    if first is None:
        return []
    rest = [x for x in sets[1:] if x is not None]
    return [m for m in first if not any(m in other for other in rest)]


@command(
    "sinter", -2, "readonly", (1, -1, 1), "set", "Intersect multiple sets", "1.0.0",
    "@read @set @slow", key_flags="RO access",
)
def sinter(s: Session, argv: list[bytes]) -> Reply:
    return RespSet(_inter(_sets(s, argv[1:])))


@command(
    "sintercard", -3, "readonly movablekeys", (0, 0, 0), "set",
    "Intersect multiple sets and return the cardinality of the result", "7.0.0",
    "@read @set @slow", key_flags="RO access",
)
def sintercard(s: Session, argv: list[bytes]) -> Reply:
    numkeys = parse_int(argv[1])
    if numkeys is None or numkeys <= 0:
        raise ErrorReply("ERR numkeys should be greater than 0")
    if numkeys > len(argv) - 2:
        raise ErrorReply("ERR Number of keys can't be greater than number of args")
    limit = 0
    i = 2 + numkeys
    while i < len(argv):
        if c_string(argv[i]).lower() == b"limit" and i + 1 < len(argv):
            parsed = parse_int(argv[i + 1])
            if parsed is None or parsed < 0:
                raise ErrorReply("ERR LIMIT can't be negative")
            limit = parsed
            i += 2
        else:
            raise ErrorReply(errors.SYNTAX)
    return len(_inter(_sets(s, argv[2 : 2 + numkeys]), limit))


@command(
    "sinterstore", -3, "write denyoom", (1, -1, 1), "set",
    "Intersect multiple sets and store the resulting set in a key", "1.0.0",
    "@write @set @slow",
)
def sinterstore(s: Session, argv: list[bytes]) -> Reply:
    return _store(s, argv[1], _inter(_sets(s, argv[2:])))


@command(
    "sunion", -2, "readonly", (1, -1, 1), "set", "Add multiple sets", "1.0.0",
    "@read @set @slow", key_flags="RO access",
)
def sunion(s: Session, argv: list[bytes]) -> Reply:
    return RespSet(_union(_sets(s, argv[1:])))


@command(
    "sunionstore", -3, "write denyoom", (1, -1, 1), "set",
    "Add multiple sets and store the resulting set in a key", "1.0.0", "@write @set @slow",
)
def sunionstore(s: Session, argv: list[bytes]) -> Reply:
    return _store(s, argv[1], _union(_sets(s, argv[2:])))


@command(
    "sdiff", -2, "readonly", (1, -1, 1), "set", "Subtract multiple sets", "1.0.0",
    "@read @set @slow", key_flags="RO access",
)
def sdiff(s: Session, argv: list[bytes]) -> Reply:
    return RespSet(_diff(_sets(s, argv[1:])))


@command(
    "sdiffstore", -3, "write denyoom", (1, -1, 1), "set",
    "Subtract multiple sets and store the resulting set in a key", "1.0.0",
    "@write @set @slow",
)
def sdiffstore(s: Session, argv: list[bytes]) -> Reply:
    return _store(s, argv[1], _diff(_sets(s, argv[2:])))


@command(
    "sscan", -3, "readonly", (1, 1, 1), "set", "Incrementally iterate Set elements", "2.8.0",
    "@read @set @slow", key_flags="RO access", tips="nondeterministic_output",
)
def sscan(s: Session, argv: list[bytes]) -> Reply:
    """A small set comes whole with cursor 0, as Redis returns a small encoding; a large one
    (more than 128 members) in pages of about COUNT members (``scan_page``)."""
    cursor = parse_cursor(argv[2])
    cur = lookup_coll(s, argv[1], ORSet)
    if cur is None:
        return [b"0", []]
    options = scan_options(argv, 3)
    pattern = options.pattern
    next_cursor = 0
    if len(cur) <= _SMALL_SET:
        members = list(cur.members)
    else:
        next_cursor, members = scan_page(cursor, options.hint or 10, cur.members)
    if pattern is not None:
        match = compile_glob(pattern)
        members = [m for m in members if match(m)]
    return [b"%d" % next_cursor, members]


_SMALL_SET: Final = 128  # returned whole by SSCAN
