"""List commands (Redis's t_list.c) over the RGA sequence of crdt/rga.py.

Pushes and LINSERT send the new elements with fresh ids and their reference; pops, LREM and
LTRIM send the ids they removed; LSET a newer value for one id. Cross-node caveats: a pop on two
nodes at once may return the same element to both clients (each removes what it saw); LMOVE is
a pop at the source plus a push at the target, each converging on its own.

Blocking pops (BLPOP, BRPOP, BLMOVE) return a future the RESP layer waits on. A key that gains
elements, by a local write or a replicated one, is noticed by a hook on the keyspace's one merge
path and served on the next loop turn, after the command that filled it has replied; waiters of
a key are served first come, first served.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Final

from gossipkv.commands import errors
from gossipkv.commands.access import lookup_coll, lookup_read, write_coll
from gossipkv.commands.replies import NULL_ARRAY, OK, ErrorReply, Reply
from gossipkv.commands.session import Server, Session
from gossipkv.commands.table import command
from gossipkv.crdt.numeric import parse_int, parse_long_double
from gossipkv.crdt.rga import RGA
from gossipkv.store.entry import Entry

_EMPTY: Final = RGA()
_LONG_MAX: Final = 2**63 - 1

NOT_POSITIVE: Final = "ERR value is out of range, must be positive"
INDEX_OUT_OF_RANGE: Final = "ERR index out of range"
TIMEOUT_NOT_FLOAT: Final = "ERR timeout is not a float or out of range"
TIMEOUT_NEGATIVE: Final = "ERR timeout is negative"
RANK_ZERO: Final = (
    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... "
    "or use negative to start from the end of the list"
)


def _list(s: Session, key: bytes) -> RGA | None:
    return lookup_coll(s, key, RGA)


def _integer(arg: bytes, message: str = errors.NOT_INTEGER) -> int:
    n = parse_int(arg)
    if n is None:
        raise ErrorReply(message)
    return n


def _positive(arg: bytes, message: str = NOT_POSITIVE) -> int:
    """getPositiveLongFromObjectOrReply: the one message covers non-numbers too."""
    n = parse_int(arg)
    if n is None or n < 0:
        raise ErrorReply(message)
    return n


def _side(arg: bytes) -> bool:
    """LEFT -> True, RIGHT -> False (LMOVE/BLMOVE's wherefrom/whereto)."""
    word = arg.lower()
    if word == b"left":
        return True
    if word == b"right":
        return False
    raise ErrorReply(errors.SYNTAX)


def _push(s: Session, key: bytes, values: list[bytes], left: bool, only_existing: bool) -> int:
    ks = s.server.keyspace
    lst = _list(s, key)
    if lst is None:
        if only_existing:
            return 0
        lst = _EMPTY
    length = len(lst) + len(values)
    write_coll(s, key, lst.push(ks.clock.now, ks.node, values, left), creating=lst is _EMPTY)
    return length


def _pop(s: Session, key: bytes, lst: RGA, count: int, left: bool) -> list[bytes]:
    ks = s.server.keyspace
    delta, values = lst.pop(count, left, (ks.clock.now(), ks.node))
    write_coll(s, key, delta)
    return values


# -- pushes -------------------------------------------------------------------------------------


@command("lpush", -3, "write denyoom fast", (1, 1, 1), "list",
         "Prepend one or more elements to a list", "1.0.0")
def lpush(s: Session, argv: list[bytes]) -> Reply:
    return _push(s, argv[1], argv[2:], True, False)


@command("rpush", -3, "write denyoom fast", (1, 1, 1), "list",
         "Append one or more elements to a list", "1.0.0")
def rpush(s: Session, argv: list[bytes]) -> Reply:
    return _push(s, argv[1], argv[2:], False, False)


@command("lpushx", -3, "write denyoom fast", (1, 1, 1), "list",
         "Prepend an element to a list, only if the list exists", "2.2.0")
def lpushx(s: Session, argv: list[bytes]) -> Reply:
    return _push(s, argv[1], argv[2:], True, True)


@command("rpushx", -3, "write denyoom fast", (1, 1, 1), "list",
         "Append an element to a list, only if the list exists", "2.2.0")
def rpushx(s: Session, argv: list[bytes]) -> Reply:
    return _push(s, argv[1], argv[2:], False, True)


# -- pops ---------------------------------------------------------------------------------------


def _pop_command(s: Session, argv: list[bytes], left: bool) -> Reply:
    if len(argv) > 3:
        raise errors.wrong_arity("lpop" if left else "rpop")
    count = _positive(argv[2]) if len(argv) == 3 else None
    lst = _list(s, argv[1])
    if lst is None:
        return NULL_ARRAY if count is not None else None
    if count is None:
        return _pop(s, argv[1], lst, 1, left)[0]
    if count == 0:
        return []
    return _pop(s, argv[1], lst, count, left)


@command("lpop", -2, "write fast", (1, 1, 1), "list",
         "Remove and get the first elements in a list", "1.0.0")
def lpop(s: Session, argv: list[bytes]) -> Reply:
    return _pop_command(s, argv, True)


@command("rpop", -2, "write fast", (1, 1, 1), "list",
         "Remove and get the last elements in a list", "1.0.0")
def rpop(s: Session, argv: list[bytes]) -> Reply:
    return _pop_command(s, argv, False)


# -- reads --------------------------------------------------------------------------------------


@command("llen", 2, "readonly fast", (1, 1, 1), "list", "Get the length of a list", "1.0.0")
def llen(s: Session, argv: list[bytes]) -> Reply:
    lst = lookup_read(s, argv[1], RGA)
    return len(lst) if lst is not None else 0


def _range(length: int, start: int, stop: int) -> tuple[int, int]:
    """Redis's LRANGE/LTRIM index clamping: the half-open [start, stop) to keep."""
    if start < 0:
        start += length
    if stop < 0:
        stop += length
    if start < 0:
        start = 0
    if start > stop or start >= length:
        return 0, 0
    if stop >= length:
        stop = length - 1
    return start, stop + 1


@command("lrange", 4, "readonly", (1, 1, 1), "list",
         "Get a range of elements from a list", "1.0.0")
def lrange(s: Session, argv: list[bytes]) -> Reply:
    start = _integer(argv[2])
    stop = _integer(argv[3])
    lst = lookup_read(s, argv[1], RGA)
    if lst is None:
        return []
    lo, hi = _range(len(lst), start, stop)
    return lst.values(lo, hi) if hi > lo else []


@command("lindex", 3, "readonly", (1, 1, 1), "list",
         "Get an element from a list by its index", "1.0.0")
def lindex(s: Session, argv: list[bytes]) -> Reply:
    index = _integer(argv[2])
    lst = lookup_read(s, argv[1], RGA)
    if lst is None:
        return None
    n = len(lst)
    if index < 0:
        index += n
    if index < 0 or index >= n:
        return None
    return lst.value_at(index)


@command("lpos", -3, "readonly", (1, 1, 1), "list",
         "Return the index of matching elements on a list", "6.0.6")
def lpos(s: Session, argv: list[bytes]) -> Reply:
    element = argv[2]
    rank, count, maxlen = 1, -1, 0
    j = 3
    n_args = len(argv)
    while j < n_args:
        opt = argv[j].lower()
        more = j + 1 < n_args
        if opt == b"rank" and more:
            j += 1
            rank = _integer(argv[j])
            if rank < -_LONG_MAX:
                raise ErrorReply(
                    f"ERR value is out of range, must be between {-_LONG_MAX} and {_LONG_MAX}"
                )
            if rank == 0:
                raise ErrorReply(RANK_ZERO)
        elif opt == b"count" and more:
            j += 1
            count = _positive(argv[j], "ERR COUNT can't be negative")
        elif opt == b"maxlen" and more:
            j += 1
            maxlen = _positive(argv[j], "ERR MAXLEN can't be negative")
        else:
            raise ErrorReply(errors.SYNTAX)
        j += 1
    lst = lookup_read(s, argv[1], RGA)
    if lst is None:
        return [] if count != -1 else None
    forward = rank > 0
    rank = abs(rank)
    values = lst.values()
    length = len(values)
    found: list[int] = []
    matches = 0
    scanned = range(length) if forward else range(length - 1, -1, -1)
    for seen, index in enumerate(scanned):
        if maxlen and seen >= maxlen:
            break
        if values[index] == element:
            matches += 1
            if matches >= rank:
                found.append(index)
                if count == -1 or (count and matches - rank + 1 >= count):
                    break
    if count != -1:
        return found
    return found[0] if found else None


# -- in-place changes ---------------------------------------------------------------------------


@command("lset", 4, "write denyoom", (1, 1, 1), "list",
         "Set the value of an element in a list by its index", "1.0.0")
def lset(s: Session, argv: list[bytes]) -> Reply:
    index = _integer(argv[2])
    lst = _list(s, argv[1])
    if lst is None:
        raise ErrorReply(errors.NO_SUCH_KEY)
    n = len(lst)
    if index < 0:
        index += n
    if index < 0 or index >= n:
        raise ErrorReply(INDEX_OUT_OF_RANGE)
    ks = s.server.keyspace
    write_coll(s, argv[1], lst.assign(ks.clock.now, ks.node, index, argv[3]))
    return OK


@command("linsert", 5, "write denyoom", (1, 1, 1), "list",
         "Insert an element before or after another element in a list", "2.2.0")
def linsert(s: Session, argv: list[bytes]) -> Reply:
    where = argv[2].lower()
    if where == b"after":
        after = True
    elif where == b"before":
        after = False
    else:
        raise ErrorReply(errors.SYNTAX)
    lst = _list(s, argv[1])
    if lst is None:
        return 0
    try:
        index = lst.values().index(argv[3])
    except ValueError:
        return -1
    ks = s.server.keyspace
    length = len(lst) + 1
    write_coll(s, argv[1], lst.insert(ks.clock.now, ks.node, index + after, argv[4]))
    return length


@command("lrem", 4, "write", (1, 1, 1), "list",
         "Remove elements from a list", "1.0.0")
def lrem(s: Session, argv: list[bytes]) -> Reply:
    count = _integer(argv[2])
    lst = _list(s, argv[1])
    if lst is None:
        return 0
    element = argv[3]
    order = lst.order()
    visible = reversed(order) if count < 0 else iter(order)
    limit = abs(count)
    removed = []
    for e in visible:
        if e.value == element:
            removed.append(e.id)
            if limit and len(removed) == limit:
                break
    if removed:
        ks = s.server.keyspace
        write_coll(s, argv[1], lst.remove(removed, (ks.clock.now(), ks.node)))
    return len(removed)


@command("ltrim", 4, "write", (1, 1, 1), "list",
         "Trim a list to the specified range", "1.0.0")
def ltrim(s: Session, argv: list[bytes]) -> Reply:
    start = _integer(argv[2])
    stop = _integer(argv[3])
    lst = _list(s, argv[1])
    if lst is None:
        return OK
    order = lst.order()
    lo, hi = _range(len(order), start, stop)
    dropped = [e.id for k, e in enumerate(order) if not lo <= k < hi]
    if dropped:
        ks = s.server.keyspace
        write_coll(s, argv[1], lst.remove(dropped, (ks.clock.now(), ks.node)))
    return OK


# -- moves --------------------------------------------------------------------------------------


def _move(s: Session, source: bytes, dest: bytes, from_left: bool, to_left: bool) -> Reply:
    lst = _list(s, source)
    if lst is None:
        return None
    _list(s, dest)  # WRONGTYPE before anything moves
    value = _pop(s, source, lst, 1, from_left)[0]
    _push(s, dest, [value], to_left, False)
    return value


@command("lmove", 5, "write denyoom", (1, 2, 1), "list",
         "Pop an element from a list, push it to another list and return it", "6.2.0")
def lmove(s: Session, argv: list[bytes]) -> Reply:
    return _move(s, argv[1], argv[2], _side(argv[3]), _side(argv[4]))


@command("rpoplpush", 3, "write denyoom", (1, 2, 1), "list",
         "Remove the last element in a list, prepend it to another list and return it", "1.2.0")
def rpoplpush(s: Session, argv: list[bytes]) -> Reply:
    return _move(s, argv[1], argv[2], False, True)


# -- blocking -----------------------------------------------------------------------------------


class Waiter:
    """One blocked client: the keys it waits on, how it pops, and the reply it awaits."""

    __slots__ = ("active", "dest", "fut", "keys", "left", "session", "timer", "to_left")

    def __init__(self, session: Session, keys: list[bytes], left: bool,
                 dest: bytes | None, to_left: bool, fut: asyncio.Future[Reply]) -> None:
        self.session = session
        self.keys = keys
        self.left = left
        self.dest = dest  # BLMOVE's destination; None for BLPOP/BRPOP
        self.to_left = to_left
        self.fut = fut
        self.timer: asyncio.TimerHandle | None = None
        self.active = True


class Blocking:
    """A node's blocked clients, by key. Its keyspace hook is installed only while someone
    waits, so writes pay nothing for blocking when nobody blocks."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.by_key: dict[bytes, deque[Waiter]] = {}
        self.count = 0
        self.ready: dict[bytes, None] = {}  # keys written since the last serve, in order
        self.scheduled = False

    def add(self, w: Waiter, timeout_ms: int) -> None:
        if self.count == 0:
            self.server.keyspace.on_change.append(self.changed)
        self.count += 1
        self.server.stats.blocked_clients = self.count
        for key in w.keys:
            self.by_key.setdefault(key, deque()).append(w)
        loop = asyncio.get_running_loop()
        if timeout_ms:
            w.timer = loop.call_later(timeout_ms / 1000, self.time_out, w)
        # Resolved, timed out or cancelled (the client went away): no longer waiting.
        w.fut.add_done_callback(lambda _: self.remove(w))

    def remove(self, w: Waiter) -> None:
        if not w.active:
            return
        w.active = False
        if w.timer is not None:
            w.timer.cancel()
            w.timer = None
        for key in w.keys:
            waiters = self.by_key.get(key)
            if waiters is not None:
                waiters.remove(w)
                if not waiters:
                    del self.by_key[key]
        self.count -= 1
        self.server.stats.blocked_clients = self.count
        if self.count == 0:
            self.server.keyspace.on_change.remove(self.changed)

    def time_out(self, w: Waiter) -> None:
        w.timer = None
        if not w.fut.done():
            w.fut.set_result(NULL_ARRAY)  # BLMOVE too, in Redis 7.0

    def changed(self, key: bytes, entry: Entry) -> None:
        """The merge-path hook: note a written key someone waits on; serve after this turn."""
        if key in self.by_key:
            self.ready[key] = None
            if not self.scheduled:
                self.scheduled = True
                asyncio.get_running_loop().call_soon(self.serve)

    def serve(self) -> None:
        self.scheduled = False
        ready = self.ready
        while ready:
            key = next(iter(ready))
            del ready[key]
            waiters = self.by_key.get(key)
            while waiters:
                w = waiters[0]
                try:
                    lst = _list(w.session, key)
                    if lst is None:
                        break
                    if w.dest is None:
                        value = _pop(w.session, key, lst, 1, w.left)[0]
                        reply: Reply = [key, value]
                    else:
                        reply = _move(w.session, key, w.dest, w.left, w.to_left)
                except ErrorReply as e:
                    if e.message == errors.WRONGTYPE and waiters[0] is w and w.dest is None:
                        break  # the key is no list now: keep waiting, as Redis does
                    reply = e
                self.remove(w)
                if isinstance(reply, ErrorReply):
                    w.fut.set_exception(reply)
                else:
                    w.fut.set_result(reply)
                waiters = self.by_key.get(key)


def _blocking(server: Server) -> Blocking:
    b: Blocking | None = server.blocking
    if b is None:
        b = server.blocking = Blocking(server)
    return b


def _timeout_ms(arg: bytes) -> int:
    """getTimeoutFromObjectOrReply in seconds: 0 waits forever."""
    v: Any = parse_long_double(arg)
    if v is None or v != v:
        raise ErrorReply(TIMEOUT_NOT_FLOAT)
    if v in (float("inf"), float("-inf")):
        raise ErrorReply(TIMEOUT_NEGATIVE)  # (long long) of an infinity is LLONG_MIN on x86
    ms = int(v * 1000)  # truncated toward zero, as the C cast
    if ms < 0:
        raise ErrorReply(TIMEOUT_NEGATIVE)
    return ms


def _block(s: Session, keys: list[bytes], left: bool, dest: bytes | None, to_left: bool,
           timeout_ms: int) -> asyncio.Future[Reply]:
    fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    _blocking(s.server).add(Waiter(s, keys, left, dest, to_left, fut), timeout_ms)
    return fut


def _blocking_pop(s: Session, argv: list[bytes], left: bool) -> Reply:
    timeout = _timeout_ms(argv[-1])
    keys = argv[1:-1]
    for key in keys:
        lst = _list(s, key)
        if lst is not None:
            return [key, _pop(s, key, lst, 1, left)[0]]
    return _block(s, keys, left, None, False, timeout)


@command("blpop", -3, "write noscript blocking", (1, -2, 1), "list",
         "Remove and get the first element in a list, or block until one is available", "2.0.0")
def blpop(s: Session, argv: list[bytes]) -> Reply:
    return _blocking_pop(s, argv, True)


@command("brpop", -3, "write noscript blocking", (1, -2, 1), "list",
         "Remove and get the last element in a list, or block until one is available", "2.0.0")
def brpop(s: Session, argv: list[bytes]) -> Reply:
    return _blocking_pop(s, argv, False)


@command("blmove", 6, "write denyoom noscript blocking", (1, 2, 1), "list",
         "Pop an element from a list, push it to another list and return it; "
         "or block until one is available", "6.2.0")
def blmove(s: Session, argv: list[bytes]) -> Reply:
    from_left = _side(argv[3])
    to_left = _side(argv[4])
    timeout = _timeout_ms(argv[5])
    if _list(s, argv[1]) is not None:
        return _move(s, argv[1], argv[2], from_left, to_left)
    return _block(s, [argv[1]], from_left, argv[2], to_left, timeout)


@command("brpoplpush", 4, "write denyoom noscript blocking", (1, 2, 1), "list",
         "Pop an element from a list, push it to another list and return it; "
         "or block until one is available", "2.2.0")
def brpoplpush(s: Session, argv: list[bytes]) -> Reply:
    timeout = _timeout_ms(argv[3])
    if _list(s, argv[1]) is not None:
        return _move(s, argv[1], argv[2], False, True)
    return _block(s, [argv[1]], False, argv[2], True, timeout)
