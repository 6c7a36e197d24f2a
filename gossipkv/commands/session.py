"""What a command sees: its connection's Session and the node-wide Server state.

The RESP layer owns sockets; it creates one Session per connection and calls
``Session.execute`` for every request. Nothing here knows about transports.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from gossipkv.commands import errors
from gossipkv.commands.control import ClusterControl
from gossipkv.commands.replies import ErrorReply, Reply
from gossipkv.commands.table import TABLE, Command, CommandTable
from gossipkv.store.keyspace import Keyspace


class CommandStats:
    """One command's line of INFO commandstats."""

    __slots__ = ("calls", "failed", "ns", "rejected")

    def __init__(self) -> None:
        self.calls = 0
        self.ns = 0  # time spent running it (its handler; a blocked command until it blocks)
        self.rejected = 0  # refused before running: arity, authentication, loading
        self.failed = 0  # ran and replied with an error


@dataclass
class Stats:
    total_connections_received: int = 0
    total_commands_processed: int = 0
    rejected_connections: int = 0
    total_net_input_bytes: int = 0
    total_net_output_bytes: int = 0
    blocked_clients: int = 0  # clients waiting in BLPOP/BRPOP/BLMOVE
    commands: dict[str, CommandStats] = field(default_factory=dict)  # by command name

    def command(self, name: str) -> CommandStats:
        cs = self.commands.get(name)
        if cs is None:
            cs = self.commands[name] = CommandStats()
        return cs


_clock: Final = time.perf_counter_ns


class Server:
    """Node-wide state the commands read: keyspace, config, clients, stats, identity."""

    def __init__(
        self,
        keyspace: Keyspace,
        config: dict[str, str] | None = None,
        table: CommandTable = TABLE,
    ) -> None:
        self.keyspace = keyspace
        self.table = table
        self.config: dict[str, str] = config if config is not None else {}
        self.clients: dict[int, Session] = {}
        self.next_client_id = 1
        self.stats = Stats()
        self.started = time.time()
        # The clock clients' idle time is kept by, cached as Redis's server.unixtime is: the
        # node's cron refreshes it every tick, so a request costs no clock call for it.
        self.unixtime = self.started
        self.run_id = os.urandom(20).hex()
        self.port = 0
        self.host = "127.0.0.1"
        self.name = keyspace.node
        self.region = ""
        # Set by the node when it runs in a cluster (MEET, MEMBERS, WAIT, INFO replication).
        self.cluster: ClusterControl | None = None
        # Non-empty while the node reloads its keyspace from its peers (a rejoin after the GC
        # horizon): the error every command not flagged "loading" gets, as Redis's LOADING.
        self.loading = ""
        self.extra_info: dict[str, Callable[[], dict[str, Any]]] = {}
        # Stops the node as SIGTERM does (SHUTDOWN); set by whoever runs it (gossipkv serve).
        self.shutdown: Callable[[], None] | None = None
        # The blocked clients of BLPOP/BRPOP/BLMOVE (commands/lists.py), made on first use.
        self.blocking: Any = None

    @property
    def requirepass(self) -> str:
        return self.config.get("requirepass", "")

    def _int_config(self, name: str, default: int) -> int:
        value = self.config.get(name)
        return int(value) if value else default

    @property
    def hz(self) -> int:
        """Cron ticks a second (CONFIG SET clamps it to 1..500 as Redis does)."""
        return max(1, min(500, self._int_config("hz", 10)))

    @property
    def maxclients(self) -> int:
        return self._int_config("maxclients", 10000)

    def close_idle(self) -> int:
        """Close the clients idle for longer than CONFIG ``timeout`` seconds (0: never), as
        Redis's clientsCron does; a client blocked in BLPOP and the like waits on its own
        timeout instead. Returns how many were closed."""
        limit = self._int_config("timeout", 0)
        if not limit:
            return 0
        now = self.unixtime
        idle = [
            c for c in self.clients.values()
            if not c.blocked and now - c.last_interaction > limit
        ]
        for c in idle:
            c.close()
        return len(idle)


class Session:
    """One client connection's state, as CLIENT LIST shows it."""

    __slots__ = (
        "addr",
        "authenticated",
        "blocked",
        "closer",
        "closing",
        "created",
        "db",
        "id",
        "laddr",
        "last_cmd",
        "last_interaction",
        "lib_name",
        "lib_ver",
        "name",
        "no_evict",
        "no_touch",
        "resp",
        "server",
        "transport_info",
    )

    def __init__(self, server: Server, addr: str = "", laddr: str = "") -> None:
        self.server = server
        self.id = server.next_client_id
        server.next_client_id += 1
        self.addr = addr
        self.laddr = laddr
        self.name = b""
        self.lib_name = b""
        self.lib_ver = b""
        self.resp = 2
        self.db = 0
        self.authenticated = not server.requirepass
        self.closing = False
        self.blocked = False  # waiting for a blocking command's reply (CLIENT LIST flag b)
        # CLIENT NO-EVICT / NO-TOUCH switches: shown in CLIENT LIST flags.
        self.no_evict = False
        self.no_touch = False
        self.created = time.time()
        self.last_interaction = self.created
        self.last_cmd = "NULL"
        # Filled by the RESP layer: query buffer / output buffer sizes for CLIENT LIST.
        self.transport_info: Callable[[], dict[str, int]] | None = None
        # Closes this client's connection (CLIENT KILL); set by the RESP layer.
        self.closer: Callable[[], None] | None = None

    def close(self) -> None:
        """Close the connection (CLIENT KILL, CONFIG timeout)."""
        if self.closer is not None:
            self.closer()

    def execute(self, argv: list[bytes]) -> Reply:
        """Run one request; errors come back as ErrorReply values, never exceptions."""
        server = self.server
        cmd = server.table.by_bytes.get(argv[0]) or server.table.lookup(argv[0])
        if cmd is None:
            return errors.unknown_command(argv[0], argv[1:])
        stats = server.stats
        # A container (CLIENT, CONFIG ...) counts, and is checked for loading, by subcommand.
        named = _subcommand(cmd, argv) if cmd.subcommands else cmd
        arity = cmd.arity
        n = len(argv)
        if (arity > 0 and n != arity) or n < -arity:
            stats.command(named.name).rejected += 1
            return errors.wrong_arity(cmd.name)
        if not self.authenticated and "no-auth" not in cmd.flags:
            stats.command(named.name).rejected += 1
            return ErrorReply(errors.NOAUTH)
        if server.loading and "loading" not in named.flags:
            stats.command(named.name).rejected += 1
            return ErrorReply(server.loading)
        stats.total_commands_processed += 1
        self.last_cmd = cmd.name
        self.last_interaction = server.unixtime
        start = _clock()
        try:
            reply = cmd.handler(self, argv)
        except ErrorReply as e:
            reply = e
        cs = stats.command(named.name)  # after: CONFIG RESETSTAT counts itself, as in Redis
        cs.ns += _clock() - start
        cs.calls += 1
        if type(reply) is ErrorReply:
            cs.failed += 1
        return reply


def _subcommand(cmd: Command, argv: list[bytes]) -> Command:
    """The subcommand ``argv`` names of container ``cmd``, or ``cmd`` itself. Loading checks
    the subcommand's flags, as Redis does, so that a client library's connection handshake
    (HELLO, CLIENT SETINFO) still succeeds while the keyspace reloads."""
    if len(argv) > 1:
        sub = cmd.subcommands.get(argv[1].decode("utf-8", "replace").lower())
        if sub is not None:
            return sub
    return cmd
