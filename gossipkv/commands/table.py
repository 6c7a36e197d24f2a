"""The command table: every command declared once, and the dispatch that runs them.

A declaration carries what Redis's command table does (name, arity, flags, key positions) and
the docs COMMAND INFO/DOCS serve, so those replies are generated from the same place that
dispatches. Arity follows Redis: n means exactly n words including the name, -n at least n.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gossipkv.commands import errors
from gossipkv.commands.replies import ErrorReply, Reply

if TYPE_CHECKING:
    from gossipkv.commands.session import Session

Handler = Callable[["Session", list[bytes]], Reply]


@dataclass(slots=True)
class Command:
    name: str  # lower case; for subcommands "container|sub"
    arity: int
    flags: tuple[str, ...]
    first_key: int
    last_key: int
    step: int
    group: str
    summary: str
    since: str
    handler: Handler
    acl_categories: tuple[str, ...] = ()
    subcommands: dict[str, Command] = field(default_factory=dict)
    # COMMAND INFO's key-spec flags (RO/RW/OW/RM, access/update/insert/delete) and tips,
    # as Redis's command JSON files declare them.
    key_flags: tuple[str, ...] = ()
    tips: tuple[str, ...] = ()

    @property
    def is_write(self) -> bool:
        return "write" in self.flags


class CommandTable:
    """Name -> Command, with lookups keyed by the raw bytes clients send."""

    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}
        # Lookup by the exact bytes received; filled lazily so that "get", "GET", "Get" all hit.
        self.by_bytes: dict[bytes, Command] = {}

    def add(self, cmd: Command) -> None:
        if "|" in cmd.name:
            parent, sub = cmd.name.split("|", 1)
            self.commands[parent].subcommands[sub] = cmd
        else:
            self.commands[cmd.name] = cmd

    def lookup(self, name: bytes) -> Command | None:
        cmd = self.by_bytes.get(name)
        if cmd is None:
            try:
                cmd = self.commands.get(name.decode("ascii").lower())
            except UnicodeDecodeError:
                return None
            if cmd is not None and len(self.by_bytes) < 4096:
                self.by_bytes[name] = cmd
        return cmd


TABLE = CommandTable()


def command(
    name: str,
    arity: int,
    flags: str = "",
    keys: tuple[int, int, int] = (0, 0, 0),
    group: str = "generic",
    summary: str = "",
    since: str = "1.0.0",
    acl: str = "",
    key_flags: str = "",
    tips: str = "",
) -> Callable[[Handler], Handler]:
    """Declare a command in TABLE: ``@command("get", 2, "readonly fast", (1, 1, 1), ...)``."""

    def register(fn: Handler) -> Handler:
        TABLE.add(
            Command(
                name=name,
                arity=arity,
                flags=tuple(flags.split()),
                first_key=keys[0],
                last_key=keys[1],
                step=keys[2],
                group=group,
                summary=summary,
                since=since,
                handler=fn,
                acl_categories=tuple(acl.split()),
                key_flags=tuple(key_flags.split()),
                tips=tuple(tips.split()),
            )
        )
        return fn

    return register


def container(
    name: str, arity: int = -2, flags: str = "", group: str = "server", summary: str = "",
    since: str = "1.0.0",
) -> None:
    """Declare a command made of subcommands (CLIENT, CONFIG, COMMAND, DEBUG ...)."""

    def dispatch(s: Session, argv: list[bytes]) -> Reply:
        sub = TABLE.commands[name].subcommands.get(argv[1].decode("utf-8", "replace").lower())
        if sub is None:
            raise errors.unknown_subcommand(argv[1], name)
        if (sub.arity > 0 and len(argv) != sub.arity) or len(argv) < -sub.arity:
            raise ErrorReply(
                f"ERR wrong number of arguments for '{name}|{sub.name.split('|')[1]}' command"
            )
        return sub.handler(s, argv)

    TABLE.add(
        Command(name, arity, tuple(flags.split()), 0, 0, 0, group, summary, since, dispatch)
    )
