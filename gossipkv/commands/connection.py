"""Connection commands: PING, ECHO, HELLO, AUTH, SELECT, CLIENT, QUIT, RESET."""

from __future__ import annotations

from gossipkv.commands.replies import PONG, Reply
from gossipkv.commands.session import Session
from gossipkv.commands.table import command


@command("ping", -1, "fast", group="connection", summary="Returns the server's liveliness response.")
def ping(s: Session, argv: list[bytes]) -> Reply:
    if len(argv) == 1:
        return PONG
    return argv[1]
