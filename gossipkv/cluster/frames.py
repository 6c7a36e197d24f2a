"""Framing of the cluster port's TCP streams: a 4-byte big-endian length, then msgpack.

A frame body is a msgpack array whose first element names the message kind. UDP packets carry
one body each, without the length prefix.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgpack

MAX_FRAME = 64 * 1024 * 1024
_LEN = struct.Struct(">I")


class FrameError(Exception):
    """A peer sent something that is not a frame; the stream is closed."""


def pack(msg: list[Any]) -> bytes:
    body: bytes = msgpack.packb(msg, use_bin_type=True)
    return _LEN.pack(len(body)) + body


def unpack_body(body: bytes) -> list[Any]:
    msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
    if not isinstance(msg, list) or not msg or not isinstance(msg[0], str):
        raise FrameError("frame is not a [kind, ...] array")
    return msg


async def read_frame(reader: asyncio.StreamReader) -> list[Any]:
    """The next frame; IncompleteReadError at a clean end of stream."""
    head = await reader.readexactly(4)
    (size,) = _LEN.unpack(head)
    if size > MAX_FRAME:
        raise FrameError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    return unpack_body(await reader.readexactly(size))


def write_frame(writer: asyncio.StreamWriter, msg: list[Any]) -> None:
    writer.write(pack(msg))
