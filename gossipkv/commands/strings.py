"""String commands (Redis's t_string.c): values are LWW registers with an observed-reset counter."""

from __future__ import annotations

from gossipkv.commands import errors
from gossipkv.commands.replies import OK, ErrorReply, Reply
from gossipkv.commands.session import Session
from gossipkv.commands.table import command
from gossipkv.store.entry import Entry, assign


@command("get", 2, "readonly fast", (1, 1, 1), "string", "Returns the string value of a key.")
def get(s: Session, argv: list[bytes]) -> Reply:
    ks = s.server.keyspace
    e = ks.lookup(argv[1])
    if e is None:
        ks.keyspace_misses += 1
        return None
    ks.keyspace_hits += 1
    if e.counter is None:
        return e.value
    return e.read()


@command(
    "set", -3, "write denyoom", (1, 1, 1), "string",
    "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.",
)
def set_(s: Session, argv: list[bytes]) -> Reply:
    ks = s.server.keyspace
    key = argv[1]
    if len(argv) == 3:
        old = ks.live.get(key)
        if old is None or (old.counter is None and old.exp is None):
            ks.write(key, Entry(ks.clock.now(), ks.node, argv[2]))
            return OK
        ks.write(key, assign(ks.clock.now(), ks.node, argv[2], ks.lookup(key)))
        return OK
    raise ErrorReply(errors.SYNTAX)  # the options are parsed in the full implementation
