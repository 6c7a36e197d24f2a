"""Server commands (Redis's server.c, config.c, db.c, debug.c): COMMAND, INFO, CONFIG, DBSIZE,
FLUSHALL, FLUSHDB, TIME, DEBUG.

COMMAND's replies are generated from the command table, so what it reports is what dispatch
does. CONFIG serves the parameters of ``PARAMS`` only; see there for what each one changes.
FLUSHALL and FLUSHDB are observed-removes of every live key, replicated like DEL, in slices: a
write a peer made concurrently, unseen here, survives them (DESIGN.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import re
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Final

import gossipkv
from gossipkv import REDIS_VERSION
from gossipkv.commands import errors
from gossipkv.commands.connection import help_reply
from gossipkv.commands.replies import (
    NO_REPLY,
    OK,
    ErrorReply,
    Reply,
    RespSet,
    Status,
    Verbatim,
)
from gossipkv.commands.session import Server, Session, Stats
from gossipkv.commands.table import TABLE, Command, command, container
from gossipkv.crdt.numeric import parse_int
from gossipkv.store import digest
from gossipkv.store.glob import stringmatch
from gossipkv.store.keyspace import Keyspace

log = logging.getLogger("gossipkv.server")

INT_MAX = 2**31 - 1
UINT_MAX = 2**32 - 1
LLONG_MAX = 2**63 - 1
ULLONG_MAX = 2**64 - 1

# -- COMMAND ---------------------------------------------------------------------------------------

# COMMAND INFO lists flags and ACL categories in the order of Redis's own tables.
FLAG_ORDER = (
    "write", "readonly", "denyoom", "module", "admin", "pubsub", "noscript", "blocking",
    "loading", "stale", "skip_monitor", "skip_slowlog", "asking", "fast", "no_auth",
    "no_mandatory_keys", "no_async_loading", "no_multi", "movablekeys", "allow_busy",
)
CATEGORY_ORDER = (
    "keyspace", "read", "write", "set", "sortedset", "list", "hash", "string", "bitmap",
    "hyperloglog", "geo", "stream", "pubsub", "admin", "fast", "slow", "blocking", "dangerous",
    "connection", "transaction", "scripting",
)
# The category a data-type group implies when a declaration names none (GET -> @string).
GROUP_CATEGORY = {
    "generic": "keyspace", "string": "string", "list": "list", "set": "set",
    "sorted-set": "sortedset", "sorted_set": "sortedset", "hash": "hash", "bitmap": "bitmap",
    "hyperloglog": "hyperloglog", "geo": "geo", "stream": "stream", "pubsub": "pubsub",
    "transactions": "transaction", "scripting": "scripting", "connection": "connection",
}


def command_flags(cmd: Command) -> list[str]:
    """Our flags as Redis names them (``no-auth`` -> ``no_auth``), in Redis's order."""
    have = {f.replace("-", "_") for f in cmd.flags}
    return [f for f in FLAG_ORDER if f in have]


def acl_categories(cmd: Command) -> list[str]:
    """Declared categories plus those Redis implies from the flags (setImplicitACLCategories)."""
    cats = {c.lstrip("@").lower() for c in cmd.acl_categories}
    if not cats and not cmd.subcommands and cmd.group in GROUP_CATEGORY:
        cats.add(GROUP_CATEGORY[cmd.group])
    flags = set(command_flags(cmd))
    if "write" in flags:
        cats.add("write")
    if "readonly" in flags and "scripting" not in cats:
        cats.add("read")
    if "admin" in flags:
        cats.update(("admin", "dangerous"))
    if "pubsub" in flags:
        cats.add("pubsub")
    if "fast" in flags:
        cats.add("fast")
    if "blocking" in flags:
        cats.add("blocking")
    if "fast" not in cats:
        cats.add("slow")
    return [c for c in CATEGORY_ORDER if c in cats]


def key_flags(cmd: Command) -> tuple[str, ...]:
    if cmd.key_flags:
        return cmd.key_flags
    return ("RO", "access") if "readonly" in cmd.flags else ("RW", "access", "update")


def key_specs(cmd: Command) -> RespSet:
    """One index/range key spec built from (first, last, step), as Redis derives the legacy
    triple from its specs."""
    if cmd.first_key <= 0:
        return RespSet()
    last = cmd.last_key - cmd.first_key if cmd.last_key >= 0 else cmd.last_key
    return RespSet(
        [
            {
                b"flags": RespSet([Status(f.encode()) for f in key_flags(cmd)]),
                b"begin_search": {b"type": b"index", b"spec": {b"index": cmd.first_key}},
                b"find_keys": {
                    b"type": b"range",
                    b"spec": {b"lastkey": last, b"keystep": cmd.step, b"limit": 0},
                },
            }
        ]
    )


def command_info(cmd: Command) -> list[Reply]:
    """COMMAND INFO's ten fields for one command, subcommands nested."""
    subs: Reply = (
        [command_info(c) for c in cmd.subcommands.values()] if cmd.subcommands else RespSet()
    )
    return [
        cmd.name.encode(),
        cmd.arity,
        RespSet([Status(f.encode()) for f in command_flags(cmd)]),
        cmd.first_key,
        cmd.last_key,
        cmd.step,
        RespSet([Status(b"@" + c.encode()) for c in acl_categories(cmd)]),
        RespSet([t.encode() for t in cmd.tips]),
        key_specs(cmd),
        subs,
    ]


def command_docs(cmd: Command) -> dict[bytes, Reply]:
    docs: dict[bytes, Reply] = {
        b"summary": cmd.summary.encode(),
        b"since": cmd.since.encode(),
        b"group": cmd.group.encode(),
    }
    if cmd.subcommands:
        docs[b"subcommands"] = {
            c.name.encode(): command_docs(c) for c in cmd.subcommands.values()
        }
    return docs


def find_command(name: bytes) -> Command | None:
    """A command by name, or a subcommand by ``container|sub``."""
    try:
        text = name.decode("ascii").lower()
    except UnicodeDecodeError:
        return None
    parent, _, sub = text.partition("|")
    cmd = TABLE.commands.get(parent)
    if cmd is None or not sub:
        return cmd
    return cmd.subcommands.get(sub)


def all_commands() -> Iterator[Command]:
    for cmd in TABLE.commands.values():
        yield cmd
        yield from cmd.subcommands.values()


def dispatch_subcommand(s: Session, argv: list[bytes], parent: str) -> Reply:
    """Run ``PARENT SUB ...`` with Redis's unknown-subcommand and arity errors."""
    sub = TABLE.commands[parent].subcommands.get(argv[1].decode("utf-8", "replace").lower())
    if sub is None:
        raise errors.unknown_subcommand(argv[1], parent)
    n = len(argv)
    if (sub.arity > 0 and n != sub.arity) or n < -sub.arity:
        raise errors.wrong_arity(sub.name)
    return sub.handler(s, argv)


@command(
    "command", -1, "loading stale", group="server", acl="connection", since="2.8.13",
    summary="Get array of Redis command details", tips="nondeterministic_output_order",
)
def command_(s: Session, argv: list[bytes]) -> Reply:
    if len(argv) == 1:
        return [command_info(c) for c in TABLE.commands.values()]
    return dispatch_subcommand(s, argv, "command")


_COMMAND_HELP = [
    "(no subcommand)",
    "    Return details about all Redis commands.",
    "COUNT",
    "    Return the total number of commands in this Redis server.",
    "LIST",
    "    Return a list of all commands in this Redis server.",
    "INFO [<command-name> ...]",
    "    Return details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "DOCS [<command-name> ...]",
    "    Return documentation details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "GETKEYS <full-command>",
    "    Return the keys from a full Redis command.",
    "GETKEYSANDFLAGS <full-command>",
    "    Return the keys and the access flags from a full Redis command.",
]


@command(
    "command|help", 2, "loading stale", group="server", acl="connection", since="5.0.0",
    summary="Show helpful text about the different subcommands",
)
def command_help(s: Session, argv: list[bytes]) -> Reply:
    return help_reply("COMMAND", _COMMAND_HELP)


@command(
    "command|count", 2, "loading stale", group="server", acl="connection", since="2.8.13",
    summary="Get total number of Redis commands",
)
def command_count(s: Session, argv: list[bytes]) -> Reply:
    return len(TABLE.commands)


@command(
    "command|info", -2, "loading stale", group="server", acl="connection", since="2.8.13",
    summary="Get array of specific Redis command details, or all when no argument is given.",
    tips="nondeterministic_output_order",
)
def command_info_(s: Session, argv: list[bytes]) -> Reply:
    if len(argv) == 2:
        return [command_info(c) for c in TABLE.commands.values()]
    out: list[Reply] = []
    for name in argv[2:]:
        cmd = find_command(name)
        out.append(command_info(cmd) if cmd is not None else None)
    return out


@command(
    "command|docs", -2, "loading stale", group="server", acl="connection", since="7.0.0",
    summary="Get array of specific Redis command documentation",
    tips="nondeterministic_output_order",
)
def command_docs_(s: Session, argv: list[bytes]) -> Reply:
    if len(argv) == 2:
        return {c.name.encode(): command_docs(c) for c in TABLE.commands.values()}
    out: dict[bytes, Reply] = {}
    for name in argv[2:]:
        cmd = find_command(name)
        if cmd is not None:
            out[cmd.name.encode()] = command_docs(cmd)
    return out


@command(
    "command|list", -2, "loading stale", group="server", acl="connection", since="7.0.0",
    summary="Get an array of Redis command names", tips="nondeterministic_output_order",
)
def command_list(s: Session, argv: list[bytes]) -> Reply:
    keep: Callable[[Command], bool]
    if len(argv) == 2:
        return [c.name.encode() for c in all_commands()]
    if len(argv) != 5 or argv[2].lower() != b"filterby":
        raise ErrorReply(errors.SYNTAX)
    kind, arg = argv[3].lower(), argv[4]
    if kind == b"module":
        return []  # no modules
    if kind == b"aclcat":
        category = errors.text(arg).lower()

        def keep(c: Command) -> bool:
            return category in acl_categories(c)

    elif kind == b"pattern":
        pattern = arg.lower()

        def keep(c: Command) -> bool:
            return stringmatch(pattern, c.name.encode())

    else:
        raise ErrorReply(errors.SYNTAX)
    return [c.name.encode() for c in all_commands() if keep(c)]


def _key_positions(argv: list[bytes]) -> tuple[Command, list[int]]:
    """The command named in ``COMMAND GETKEYS <command> ...`` and its keys' positions."""
    words = argv[2:]
    cmd = find_command(words[0]) if b"|" not in words[0] else None
    if cmd is not None and cmd.subcommands and len(words) >= 2:
        cmd = cmd.subcommands.get(words[1].decode("utf-8", "replace").lower())
    if cmd is None:
        raise ErrorReply("ERR Invalid command specified")
    if cmd.first_key <= 0:
        raise ErrorReply("ERR The command has no key arguments")
    n = len(words)
    if (cmd.arity > 0 and cmd.arity != n) or n < -cmd.arity:
        raise ErrorReply("ERR Invalid number of arguments specified for command")
    last = cmd.last_key if cmd.last_key >= 0 else n + cmd.last_key
    positions = list(range(cmd.first_key, min(last, n - 1) + 1, max(cmd.step, 1)))
    if not positions:
        raise ErrorReply("ERR Invalid arguments specified for command")
    return cmd, positions


@command(
    "command|getkeys", -4, "loading stale", group="server", acl="connection", since="2.8.13",
    summary="Extract keys given a full Redis command",
)
def command_getkeys(s: Session, argv: list[bytes]) -> Reply:
    _, positions = _key_positions(argv)
    return [argv[2 + i] for i in positions]


@command(
    "command|getkeysandflags", -4, "loading stale", group="server", acl="connection",
    since="7.0.0", summary="Extract keys and access flags given a full Redis command",
)
def command_getkeysandflags(s: Session, argv: list[bytes]) -> Reply:
    cmd, positions = _key_positions(argv)
    flags = RespSet([Status(f.encode()) for f in key_flags(cmd)])
    return [[argv[2 + i], flags] for i in positions]


# -- INFO ------------------------------------------------------------------------------------------

InfoLines = list[tuple[str, object]]


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return 0


def bytes_to_human(n: int) -> str:
    """Redis's bytesToHuman: 1023B, 1.00K, 12.46M ..."""
    if n < 1024:
        return f"{n}B"
    for unit, scale in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)):
        if n < scale << 10:
            return f"{n / scale:.2f}{unit}"
    return f"{n / (1 << 50):.2f}P"


def _info_server(srv: Server) -> InfoLines:
    now = time.time()
    uptime = int(now - srv.started)
    uname = platform.uname()
    return [
        ("redis_version", REDIS_VERSION),
        ("redis_git_sha1", "00000000"),
        ("redis_git_dirty", 0),
        ("redis_build_id", "0"),
        ("redis_mode", "standalone"),
        ("os", f"{uname.system} {uname.release} {uname.machine}"),
        ("arch_bits", 64 if sys.maxsize > 2**32 else 32),
        ("monotonic_clock", "POSIX clock_gettime"),
        ("multiplexing_api", "epoll" if sys.platform.startswith("linux") else "kqueue"),
        ("process_id", os.getpid()),
        ("process_supervised", "no"),
        ("run_id", srv.run_id),
        ("tcp_port", srv.port),
        ("server_time_usec", time.time_ns() // 1000),
        ("uptime_in_seconds", uptime),
        ("uptime_in_days", uptime // 86400),
        ("hz", config_value(srv, "hz")),
        ("configured_hz", config_value(srv, "hz")),
        ("executable", sys.executable),
        ("config_file", ""),
        ("io_threads_active", 0),
        ("gossipkv_version", gossipkv.__version__),
        ("gossipkv_node", srv.name),
        ("gossipkv_region", srv.region),
    ]


def _info_clients(srv: Server) -> InfoLines:
    max_in = max_out = 0
    for c in srv.clients.values():
        if c.transport_info is not None:
            buffers = c.transport_info()
            max_in = max(max_in, buffers.get("qbuf", 0))
            max_out = max(max_out, buffers.get("omem", 0))
    return [
        ("connected_clients", len(srv.clients)),
        ("cluster_connections", 0),
        ("maxclients", config_value(srv, "maxclients")),
        ("client_recent_max_input_buffer", max_in),
        ("client_recent_max_output_buffer", max_out),
        ("blocked_clients", srv.stats.blocked_clients),
        ("tracking_clients", 0),
        ("clients_in_timeout_table", 0),
    ]


def _info_memory(srv: Server) -> InfoLines:
    # The process's resident set: Python has no allocator statistics as cheap as jemalloc's.
    rss = _rss_bytes()
    peak = max(rss, _peak_rss_bytes())
    total = _total_memory()
    limit = config_value(srv, "maxmemory")
    maxmemory = int(limit) if limit.isdigit() else 0
    return [
        ("used_memory", rss),
        ("used_memory_human", bytes_to_human(rss)),
        ("used_memory_rss", rss),
        ("used_memory_rss_human", bytes_to_human(rss)),
        ("used_memory_peak", peak),
        ("used_memory_peak_human", bytes_to_human(peak)),
        ("used_memory_peak_perc", f"{100 * rss / peak:.2f}%"),
        ("total_system_memory", total),
        ("total_system_memory_human", bytes_to_human(total)),
        ("maxmemory", maxmemory),
        ("maxmemory_human", bytes_to_human(maxmemory)),
        ("maxmemory_policy", config_value(srv, "maxmemory-policy")),
        ("mem_fragmentation_ratio", "1.00"),
        ("mem_allocator", "libc"),
        ("lazyfree_pending_objects", 0),
    ]


def _info_persistence(srv: Server) -> InfoLines:
    return [
        ("loading", 1 if srv.loading else 0),
        ("async_loading", 0),
        ("rdb_changes_since_last_save", 0),
        ("rdb_bgsave_in_progress", 0),
        ("rdb_last_save_time", int(srv.started)),
        ("rdb_last_bgsave_status", "ok"),
        ("aof_enabled", 0),
        ("aof_rewrite_in_progress", 0),
        ("aof_last_bgrewrite_status", "ok"),
        ("aof_last_write_status", "ok"),
    ]


def _info_stats(srv: Server) -> InfoLines:
    st = srv.stats
    ks = srv.keyspace
    return [
        ("total_connections_received", st.total_connections_received),
        ("total_commands_processed", st.total_commands_processed),
        ("total_net_input_bytes", st.total_net_input_bytes),
        ("total_net_output_bytes", st.total_net_output_bytes),
        ("rejected_connections", st.rejected_connections),
        ("expired_keys", ks.expired_keys),
        ("evicted_keys", 0),
        ("keyspace_hits", ks.keyspace_hits),
        ("keyspace_misses", ks.keyspace_misses),
        ("pubsub_channels", 0),
        ("pubsub_patterns", 0),
    ]


def _info_replication(srv: Server) -> InfoLines:
    if srv.cluster is not None:  # peers of an active-active cluster, with their lag
        return list(srv.cluster.info_replication())
    # Nodes replicate as peers, not as Redis replicas: to Redis tools each node is a master.
    return [
        ("role", "master"),
        ("connected_slaves", 0),
        ("master_failover_state", "no-failover"),
        ("master_replid", srv.run_id),
        ("master_replid2", "0" * 40),
        ("master_repl_offset", 0),
        ("second_repl_offset", -1),
        ("repl_backlog_active", 0),
        ("repl_backlog_size", 1048576),
        ("repl_backlog_first_byte_offset", 0),
        ("repl_backlog_histlen", 0),
    ]


def _info_cpu(srv: Server) -> InfoLines:
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return [
        ("used_cpu_sys", f"{me.ru_stime:.6f}"),
        ("used_cpu_user", f"{me.ru_utime:.6f}"),
        ("used_cpu_sys_children", f"{children.ru_stime:.6f}"),
        ("used_cpu_user_children", f"{children.ru_utime:.6f}"),
    ]


def _info_none(srv: Server) -> InfoLines:
    return []


def _info_commandstats(srv: Server) -> InfoLines:
    lines: InfoLines = []
    for name, cs in sorted(srv.stats.commands.items()):
        usec = cs.ns // 1000
        per_call = usec / cs.calls if cs.calls else 0.0
        lines.append((
            f"cmdstat_{name}",
            f"calls={cs.calls},usec={usec},usec_per_call={per_call:.2f},"
            f"rejected_calls={cs.rejected},failed_calls={cs.failed}",
        ))
    return lines


def _info_cluster(srv: Server) -> InfoLines:
    return [("cluster_enabled", 0)]


def _info_keyspace(srv: Server) -> InfoLines:
    ks = srv.keyspace
    keys = len(ks)
    if not keys:
        return []
    return [("db0", f"keys={keys},expires={len(ks.expiry)},avg_ttl=0")]


def _info_gc(srv: Server) -> InfoLines:
    """gossipkv's own: tombstones kept and collected (store/gc.py), the anti-entropy tree."""
    ks = srv.keyspace
    gc = ks.gc
    return [
        ("tombstones", len(ks.tombstones)),
        ("tombstones_collected", gc.tombstones_collected),
        ("elements_collected", gc.elements_collected),
        ("gc_passes", gc.passes),
        ("merkle_root", ks.merkle.root()),
        ("suspect_leaves", len(ks.suspect)),
    ]


@dataclass(frozen=True, slots=True)
class InfoSection:
    name: str
    title: str
    lines: Callable[[Server], InfoLines]
    default: bool = True


# Redis 7.0's sections, in its order; "default" leaves out commandstats and latencystats.
# Gc, gossipkv's own, comes last so that Redis's sections read exactly as Redis writes them.
SECTIONS = (
    InfoSection("server", "Server", _info_server),
    InfoSection("clients", "Clients", _info_clients),
    InfoSection("memory", "Memory", _info_memory),
    InfoSection("persistence", "Persistence", _info_persistence),
    InfoSection("stats", "Stats", _info_stats),
    InfoSection("replication", "Replication", _info_replication),
    InfoSection("cpu", "CPU", _info_cpu),
    InfoSection("modules", "Modules", _info_none),
    InfoSection("commandstats", "Commandstats", _info_commandstats, default=False),
    InfoSection("errorstats", "Errorstats", _info_none),
    InfoSection("latencystats", "Latencystats", _info_none, default=False),
    InfoSection("cluster", "Cluster", _info_cluster),
    InfoSection("keyspace", "Keyspace", _info_keyspace),
    InfoSection("gc", "Gc", _info_gc),
)


def info_text(srv: Server, wanted: list[bytes]) -> str:
    """INFO's text: "# Title" blocks of "key:value" lines, CRLF-terminated, blank-line separated.

    Sections registered by other layers in ``Server.extra_info`` (the cluster's, say) follow
    Redis's own, in the default set and by name.
    """
    names = {w.decode("utf-8", "replace").lower() for w in wanted} or {"default"}
    every = bool(names & {"all", "everything"})
    default = every or "default" in names
    blocks: list[str] = []
    for section in SECTIONS:
        if section.name in names or (section.default and default) or every:
            body = "".join(f"{k}:{v}\r\n" for k, v in section.lines(srv))
            blocks.append(f"# {section.title}\r\n{body}")
    for name, provider in srv.extra_info.items():
        if name.lower() in names or default:
            body = "".join(f"{k}:{v}\r\n" for k, v in provider().items())
            blocks.append(f"# {name[:1].upper()}{name[1:]}\r\n{body}")
    return "\r\n".join(blocks)


@command(
    "info", -1, "loading stale", group="server", acl="dangerous", since="1.0.0",
    summary="Get information and statistics about the server",
    tips="nondeterministic_output request_policy:all_shards response_policy:special",
)
def info(s: Session, argv: list[bytes]) -> Reply:
    return Verbatim(info_text(s.server, argv[1:]).encode("utf-8", "surrogateescape"))


# -- CONFIG ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Param:
    """A CONFIG parameter: its Redis name, default, value syntax and bounds.

    ``kind`` is "int" (string2ll), "memory" (Redis's memtoull: 10, 1k, 1kb, 2gb ...), "bool"
    (yes/no) or "string". Values are kept in ``Server.config`` as strings, as Redis shows them.
    """

    name: str
    default: str
    kind: str = "string"
    low: int = 0
    high: int = 0
    mutable: bool = True


# The CONFIG parameters gossipkv serves. What each one does here:
#   appendonly, save        persistence comes later: only "no" and "" (off) are accepted
#   bind, port              where the node listens; fixed at start (gossipkv serve --host/--port)
#   databases               1: only db 0 exists (see SELECT)
#   hz                      the node's cron rate (clamped to 1..500 as Redis does)
#   maxclients, timeout     enforced as Redis does (Server.maxclients, Server.close_idle)
#   maxmemory               recorded; there is no eviction (maxmemory-policy is noeviction)
#   proto-max-bulk-len      recorded; the request parser enforces Redis's default, 512 MB
#   requirepass             takes effect at once for new authentications (see AUTH)
PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        Param("appendonly", "no", "bool"),
        Param("bind", "127.0.0.1", mutable=False),
        Param("databases", "1", "int", mutable=False),
        Param("hz", "10", "int", 0, INT_MAX),
        Param("maxclients", "10000", "int", 1, UINT_MAX),
        Param("maxmemory", "0", "memory", 0, ULLONG_MAX),
        Param("maxmemory-policy", "noeviction", mutable=False),
        Param("port", "6379", "int", 0, 65535, mutable=False),
        Param("proto-max-bulk-len", "536870912", "memory", 1024 * 1024, LLONG_MAX),
        Param("requirepass", ""),
        Param("save", ""),
        Param("timeout", "0", "int", 0, INT_MAX),
    )
}


def config_value(srv: Server, name: str) -> str:
    """A parameter's value as CONFIG GET shows it (a config file's "1gb" shows as 1073741824)."""
    if name == "port":
        return str(srv.port)
    if name == "bind":
        return srv.host
    param = PARAMS[name]
    value = srv.config.get(name)
    if value is None:
        return param.default
    try:
        return _checked(param, value.encode())
    except _SetFailed:
        return value


_MEMORY_UNITS = {
    "": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3,
    "gb": 1024**3,
}
_MEMORY = re.compile(r"(\d*)([a-zA-Z]*)")


def memtoull(value: str) -> int | None:
    """Redis's memory value syntax: digits and an optional unit; "" reads as 0, as in Redis."""
    m = _MEMORY.fullmatch(value)
    if m is None or len(m.group(1)) >= 128:
        return None
    mul = _MEMORY_UNITS.get(m.group(2).lower())
    if mul is None:
        return None
    n = int(m.group(1) or 0) * mul
    return n if n <= ULLONG_MAX else None


def _checked(param: Param, raw: bytes) -> str:
    """The value to store for ``raw``, or ErrorReply's reason text (without the prefix)."""
    value = errors.text(raw)
    if param.kind == "bool":
        word = value.lower()
        if word not in ("yes", "no"):
            raise _SetFailed("argument must be 'yes' or 'no'")
        if param.name == "appendonly" and word == "yes":
            raise _SetFailed("gossipkv has no append-only file yet")
        return word
    if param.kind in ("int", "memory"):
        number = parse_int(raw) if param.kind == "int" else memtoull(value)
        if number is None:
            raise _SetFailed(
                "argument couldn't be parsed into an integer"
                if param.kind == "int"
                else "argument must be a memory value"
            )
        if not param.low <= number <= param.high:
            raise _SetFailed(f"argument must be between {param.low} and {param.high} inclusive")
        if param.name == "hz":
            number = min(max(number, 1), 500)
        return str(number)
    if param.name == "save" and value.strip():
        raise _SetFailed("gossipkv does not write snapshots yet; only \"\" is accepted")
    return value


class _SetFailed(Exception):
    """Why one CONFIG SET value is refused; reported with the parameter's name."""


def _set_failed(name: str, why: str) -> ErrorReply:
    return ErrorReply(f"ERR CONFIG SET failed (possibly related to argument '{name}') - {why}")


container(
    "config", group="server", since="2.0.0",
    summary="A container for server configuration commands",
)

_CONFIG_HELP = [
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>",
    "    Set the configuration <directive> to <value>.",
    "RESETSTAT",
    "    Reset statistics reported by the INFO command.",
    "REWRITE",
    "    Rewrite the configuration file.",
]


@command(
    "config|help", 2, "loading stale", group="server", since="5.0.0",
    summary="Show helpful text about the different subcommands",
)
def config_help(s: Session, argv: list[bytes]) -> Reply:
    return help_reply("CONFIG", _CONFIG_HELP)


@command(
    "config|get", -3, "admin noscript loading stale", group="server", since="2.0.0",
    summary="Get the values of configuration parameters",
)
def config_get(s: Session, argv: list[bytes]) -> Reply:
    """Exact names are echoed as given, patterns match case-insensitively; each parameter once."""
    out: dict[bytes, Reply] = {}
    seen: set[str] = set()
    for arg in argv[2:]:
        pattern = arg.lower()
        if not any(c in pattern for c in b"*?["):
            name = errors.text(pattern)
            if name in PARAMS and name not in seen:
                seen.add(name)
                out[arg] = config_value(s.server, name).encode()
            continue
        for name in PARAMS:
            if name not in seen and stringmatch(pattern, name.encode()):
                seen.add(name)
                out[name.encode()] = config_value(s.server, name).encode()
    return out


@command(
    "config|set", -4, "admin noscript loading stale", group="server", since="2.0.0",
    summary="Set configuration parameters to the given values",
    tips="request_policy:all_nodes response_policy:all_succeeded",
)
def config_set(s: Session, argv: list[bytes]) -> Reply:
    """All or nothing, as Redis: every name and value is checked before any is stored."""
    if len(argv) % 2:
        raise ErrorReply(errors.SYNTAX)
    chosen: list[tuple[Param, bytes]] = []
    failure: ErrorReply | None = None
    for i in range(2, len(argv), 2):
        given = errors.text(argv[i])
        param = PARAMS.get(given.lower())
        if param is None:
            failure = failure or ErrorReply(
                f"ERR Unknown option or number of arguments for CONFIG SET - '{given}'"
            )
        elif failure is not None:
            continue
        elif not param.mutable:
            failure = _set_failed(given, "can't set immutable config")
        elif any(p is param for p, _ in chosen):
            failure = _set_failed(given, "duplicate parameter")
        else:
            chosen.append((param, argv[i + 1]))
    if failure is not None:
        raise failure
    values: list[tuple[Param, str]] = []
    for param, raw in chosen:
        try:
            values.append((param, _checked(param, raw)))
        except _SetFailed as e:
            raise _set_failed(param.name, str(e)) from None
    srv = s.server
    for param, value in values:
        srv.config[param.name] = value
        if param.name == "requirepass" and not value:
            for c in srv.clients.values():
                c.authenticated = True
    return OK


@command(
    "config|resetstat", 2, "admin noscript loading stale", group="server", since="2.0.0",
    summary="Reset the stats returned by INFO",
)
def config_resetstat(s: Session, argv: list[bytes]) -> Reply:
    srv = s.server
    fresh = Stats()
    for f in fields(Stats):
        setattr(srv.stats, f.name, getattr(fresh, f.name))
    ks = srv.keyspace
    ks.expired_keys = ks.keyspace_hits = ks.keyspace_misses = 0
    return OK


@command(
    "config|rewrite", 2, "admin noscript loading stale", group="server", since="2.8.0",
    summary="Rewrite the configuration file with the in memory configuration",
)
def config_rewrite(s: Session, argv: list[bytes]) -> Reply:
    raise ErrorReply("ERR CONFIG REWRITE is not supported: edit the node's TOML config file")


# -- the dataset -----------------------------------------------------------------------------------


@command(
    "dbsize", 1, "readonly fast", group="server", acl="keyspace", since="1.0.0",
    summary="Return the number of keys in the selected database",
    tips="request_policy:all_shards response_policy:agg_sum",
)
def dbsize(s: Session, argv: list[bytes]) -> Reply:
    # As in Redis, keys past their deadline count until they are reaped.
    return len(s.server.keyspace)


FLUSH_SLICE: Final = 1024  # keys FLUSHALL removes per event-loop turn


def flush(s: Session, argv: list[bytes]) -> Reply:
    """Observed-remove of every key live when it starts; SYNC and ASYNC are the same here.

    A removal is a replicated write of a few microseconds, so a large keyspace is removed a
    slice per event-loop turn: other clients, replication and gossip go on meanwhile (a node
    stalled for seconds would be suspected by its peers), and the client gets its OK once the
    last slice is done, as a blocking command gets its reply.
    """
    if len(argv) > 2 or (len(argv) == 2 and argv[1].lower() not in (b"sync", b"async")):
        raise ErrorReply(errors.SYNTAX)
    ks = s.server.keyspace
    keys = list(ks.live)
    if len(keys) > FLUSH_SLICE:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop to slice on (the keyspace used in-process)
            pass
        else:
            done: asyncio.Future[Reply] = loop.create_future()
            _flush_slice(ks, keys, 0, done)
            return done
    _remove_keys(ks, keys, 0, len(keys))
    return OK


def _flush_slice(ks: Keyspace, keys: list[bytes], start: int, done: asyncio.Future[Reply]) -> None:
    end = min(start + FLUSH_SLICE, len(keys))
    _remove_keys(ks, keys, start, end)
    if end < len(keys):
        asyncio.get_running_loop().call_soon(_flush_slice, ks, keys, end, done)
    elif not done.done():  # a client that left meanwhile: the flush completes all the same
        done.set_result(OK)


def _remove_keys(ks: Keyspace, keys: list[bytes], start: int, end: int) -> None:
    live = ks.live
    for i in range(start, end):
        key = keys[i]
        e = live.get(key)
        if e is not None:  # None: removed or reaped since the flush began
            ks.remove(key, e)


command(
    "flushall", -1, "write", group="server", acl="keyspace dangerous", since="1.0.0",
    summary="Remove all keys from all databases",
    tips="request_policy:all_shards response_policy:all_succeeded",
)(flush)
command(
    "flushdb", -1, "write", group="server", acl="keyspace dangerous", since="1.0.0",
    summary="Remove all keys from the current database",
    tips="request_policy:all_shards response_policy:all_succeeded",
)(flush)


@command(
    "time", 1, "loading stale fast", group="server", since="2.6.0",
    summary="Return the current server time", tips="nondeterministic_output",
)
def time_(s: Session, argv: list[bytes]) -> Reply:
    us = time.time_ns() // 1000
    return [b"%d" % (us // 1_000_000), b"%d" % (us % 1_000_000)]


# -- DEBUG -----------------------------------------------------------------------------------------

_DEBUG_HELP = [
    "DIGEST",
    "    Output a hex signature representing the current DB content.",
    "DIGEST-VALUE <key> [<key> ...]",
    "    Output a hex signature of the values of all the specified keys.",
    "SLEEP <seconds>",
    "    Stop the server for <seconds>. Decimals allowed.",
    "STAMP <key>",
    "    (gossipkv) The string register of <key>: value, HLC timestamp, writer node.",
]
_STRTOD = re.compile(rb"\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)")


def strtod(raw: bytes) -> float:
    """C's strtod as DEBUG SLEEP uses it: the longest numeric prefix, 0 when there is none."""
    m = _STRTOD.match(raw)
    return float(m.group(0)) if m else 0.0


_SHUTDOWN_OPTIONS: Final = (b"nosave", b"save", b"now", b"force", b"abort")
SHUTDOWN_FAILED: Final = "ERR Errors trying to SHUTDOWN. Check logs."


@command(
    "shutdown", -1, "admin noscript loading stale no-multi allow-busy", group="server",
    since="1.0.0", summary="Synchronously save the dataset to disk and then shut down the server",
)
def shutdown(s: Session, argv: list[bytes]) -> Reply:
    """Stop the node as SIGTERM does: it announces its leave to the cluster, then exits 0. The
    client gets no reply; its connection closes. There is no persistence, so NOSAVE, NOW and
    FORCE change nothing, SAVE is refused, and no shutdown is ever left pending to ABORT."""
    words = [a.lower() for a in argv[1:]]
    if any(w not in _SHUTDOWN_OPTIONS for w in words) or (b"save" in words and b"nosave" in words):
        raise ErrorReply(errors.SYNTAX)
    if b"abort" in words:
        if len(words) > 1:
            raise ErrorReply(errors.SYNTAX)
        raise ErrorReply("ERR No shutdown in progress.")
    stop = s.server.shutdown
    if b"save" in words:
        log.warning("event=shutdown_refused reason=SAVE: this node keeps no dataset on disk")
        raise ErrorReply(SHUTDOWN_FAILED)
    if stop is None:
        log.warning("event=shutdown_refused reason=nothing to stop in this process")
        raise ErrorReply(SHUTDOWN_FAILED)
    log.warning("event=shutdown_asked client=%s", s.addr)
    stop()
    s.closing = True
    return NO_REPLY


@command(
    "debug", -2, "admin noscript loading stale", group="server", since="1.0.0",
    summary="A container for debugging commands",
)
def debug(s: Session, argv: list[bytes]) -> Reply:
    sub = argv[1].lower()
    n = len(argv)
    ks = s.server.keyspace
    if sub == b"help" and n == 2:
        return help_reply("DEBUG", _DEBUG_HELP)
    if sub == b"digest" and n == 2:
        return Status(digest.dataset_digest(ks.live.items(), ks.now_ms()).encode())
    if sub == b"digest-value":
        out: list[Reply] = []
        for key in argv[2:]:
            e = ks.lookup(key)
            d = digest.value_digest(e, e.deadline()) if e is not None else 0
            out.append(Status(digest.hex_digest(d).encode()))
        return out
    if sub == b"stamp" and n == 3:
        # The (HLC, node) stamp that last-writer-wins orders SETs by, so that a checker can
        # tell which of several concurrent writes must win everywhere.
        e = ks.lookup(argv[2])
        if e is None or e.value is None or e.visible_coll() is not None:
            return None
        return [e.value, e.ts, e.node.encode()]
    if sub == b"sleep" and n == 3:
        # Blocks the event loop on purpose, as Redis blocks its own: stalls can be tested.
        seconds = strtod(argv[2])
        if seconds > 0:
            time.sleep(seconds)
        return OK
    raise ErrorReply(
        f"ERR unknown subcommand or wrong number of arguments for '{errors.text(argv[1])}'. "
        "Try DEBUG HELP."
    )
