"""Redis's error texts, word for word: clients and tests match on them."""

from __future__ import annotations

from typing import Final

from gossipkv.commands.replies import ErrorReply

SYNTAX: Final = "ERR syntax error"
WRONGTYPE: Final = "WRONGTYPE Operation against a key holding the wrong kind of value"
NOT_INTEGER: Final = "ERR value is not an integer or out of range"
NOT_FLOAT: Final = "ERR value is not a valid float"
OVERFLOW: Final = "ERR increment or decrement would overflow"
NAN_OR_INF: Final = "ERR increment would produce NaN or Infinity"
NO_SUCH_KEY: Final = "ERR no such key"
NOAUTH: Final = "NOAUTH Authentication required."
WRONGPASS: Final = "WRONGPASS invalid username-password pair or user is disabled."
STRING_TOO_LONG: Final = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
INVALID_EXPIRE: Final = "ERR invalid expire time in '{}' command"
DB_INDEX_OUT_OF_RANGE: Final = "ERR DB index is out of range"


def wrong_arity(name: str) -> ErrorReply:
    return ErrorReply(f"ERR wrong number of arguments for '{name}' command")


def unknown_command(name: bytes, args: list[bytes]) -> ErrorReply:
    """Redis quotes the name (cut to 128 bytes) and arguments until 128 bytes are shown."""
    shown = b""
    for a in args:
        if len(shown) >= 128:
            break
        shown += b"'" + a[: 128 - len(shown)] + b"' "
    return ErrorReply(
        f"ERR unknown command '{text(name[:128])}', with args beginning with: {text(shown)}"
    )


def unknown_subcommand(sub: bytes, container: str) -> ErrorReply:
    return ErrorReply(
        f"ERR unknown subcommand '{_printable(sub)}'. Try {container.upper()} HELP."
    )


def _printable(b: bytes) -> str:
    return text(b[:128])


def text(b: bytes) -> str:
    """Bytes as str, losslessly: the encoder turns it back with the same error handler."""
    return b.decode("utf-8", "surrogateescape")
