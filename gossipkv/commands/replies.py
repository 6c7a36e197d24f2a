"""Reply values a command returns; the RESP encoder turns them into RESP2 or RESP3 bytes.

bytes is a bulk string, int an integer, None a null, list an array, dict a map (a flat array in
RESP2), float a double (a bulk string in RESP2). The classes below mark the other RESP types.
"""

from __future__ import annotations

from typing import Any


class Status(bytes):
    """A simple string reply, ``+OK``."""

    __slots__ = ()


class Verbatim(bytes):
    """A verbatim text reply (``=`` in RESP3, a bulk string in RESP2), as INFO sends."""

    __slots__ = ()


class RespSet(list[Any]):
    """A set reply (``~`` in RESP3, an array in RESP2); a list so that order is stable."""

    __slots__ = ()


class NullArray:
    """The null array: ``*-1`` in RESP2, ``_`` in RESP3 (BLPOP time-outs, EXEC aborts)."""

    __slots__ = ()


NULL_ARRAY = NullArray()


class NoReply:
    """No reply at all: the connection closes instead (SHUTDOWN, as redis-server does)."""

    __slots__ = ()


NO_REPLY = NoReply()


class ErrorReply(Exception):
    """An error reply. Raise it from a command; the message starts with its code (ERR, ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


OK = Status(b"OK")
PONG = Status(b"PONG")

Reply = Any  # bytes | int | None | list | dict | float | Status | Verbatim | NullArray | ErrorReply
