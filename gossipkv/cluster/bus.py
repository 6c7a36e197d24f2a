"""The cluster port: one UDP endpoint for gossip and one TCP listener for streams, same number.

Membership, replication and join register handlers by message kind; the bus only moves frames.
Every packet and stream passes ``allow`` first, the seam where fault injection cuts traffic;
with chaos on, ``faults`` also drops and delays packets, names the sender of inbound streams,
and closes the open streams of a peer a new rule cuts off.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from gossipkv.cluster.faults import Faults, stream_sender
from gossipkv.cluster.frames import FrameError, pack, read_frame, unpack_body

log = logging.getLogger("gossipkv.cluster")

Addr = tuple[str, int]
PacketHandler = Callable[[list[Any], Addr], None]
StreamHandler = Callable[
    [list[Any], asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]
]
# (kind, peer address, "in" or "out") -> deliver?  Chaos replaces it; normally always True.
TrafficFilter = Callable[[str, Addr, str], bool]

MAX_PACKET = 64 * 1024


def _allow_all(kind: str, addr: Addr, direction: str) -> bool:
    return True


@functools.lru_cache(maxsize=1024)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, bus: ClusterBus) -> None:
        self.bus = bus

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.bus._packet_in(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("event=udp_error error=%r", exc)


class ClusterBus:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.allow: TrafficFilter = _allow_all
        self._packet_handlers: dict[str, PacketHandler] = {}
        self._stream_handlers: dict[str, StreamHandler] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._streams: set[asyncio.Task[None]] = set()
        self.bytes_out = 0
        self.bytes_in = 0
        self.faults: Faults | None = None
        # Open streams (either side) by writer -> the peer's member name, for chaos to close.
        self._open: dict[asyncio.StreamWriter, str | None] = {}

    def install_faults(self, faults: Faults) -> None:
        """Turn fault injection on: its rules filter, drop and delay this bus's traffic."""
        self.faults = faults
        self.allow = faults.allow
        faults.listeners.append(self._enforce)

    def _enforce(self) -> None:
        """Close every open stream with a peer the rules now cut."""
        faults = self.faults
        if faults is None:
            return
        for writer, name in list(self._open.items()):
            if writer.is_closing():
                del self._open[writer]
            elif faults.is_cut(name):
                log.info("event=chaos_stream_closed peer=%s", name)
                writer.close()
                del self._open[writer]

    def _track(self, writer: asyncio.StreamWriter, name: str | None) -> None:
        if len(self._open) >= 64:
            for w in [w for w in self._open if w.is_closing()]:
                del self._open[w]
        self._open[writer] = name

    def on_packet(self, kind: str, handler: PacketHandler) -> None:
        self._packet_handlers[kind] = handler

    def on_stream(self, kind: str, handler: StreamHandler) -> None:
        self._stream_handlers[kind] = handler

    async def start(self) -> None:
        """Bind both sockets; OSError when the port is taken."""
        loop = asyncio.get_running_loop()
        self._tcp = await asyncio.start_server(
            self._stream_in, self.host, self.port, reuse_address=True, limit=2**20
        )
        if self.port == 0:
            self.port = self._tcp.sockets[0].getsockname()[1]
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=(self.host, self.port)
        )
        self._udp = transport

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for t in list(self._streams):
            t.cancel()
        for t in list(self._streams):
            with contextlib.suppress(BaseException):
                await t
        if self._tcp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)

    # -- UDP ----------------------------------------------------------------------------------

    def send_packet(self, addr: Addr, msg: list[Any]) -> None:
        if self._udp is None or not self.allow(msg[0], addr, "out"):
            return
        if not (0 < addr[1] < 65536 and _is_ip(addr[0])):
            # A bad port would close the UDP transport for good, and a host name would be
            # resolved inside sendto, blocking the loop: peers' addresses must be IP literals.
            log.warning("event=bad_packet_addr addr=%s:%s", addr[0], addr[1])
            return
        body = msgpack.packb(msg, use_bin_type=True)
        if len(body) > MAX_PACKET:
            log.warning("event=packet_too_big kind=%s bytes=%d", msg[0], len(body))
            return
        if self.faults is not None and self.faults.active:
            hold = self.faults.packet(addr, "out")
            if hold is None:
                return
            if hold > 0:
                asyncio.get_running_loop().call_later(hold, self._send_later, body, addr)
                return
        self.bytes_out += len(body)
        self._udp.sendto(body, addr)

    def _send_later(self, body: bytes, addr: Addr) -> None:
        if self._udp is not None and not self._udp.is_closing():
            self.bytes_out += len(body)
            self._udp.sendto(body, addr)

    def _packet_in(self, data: bytes, addr: Addr) -> None:
        try:
            msg = unpack_body(data)
        except (FrameError, ValueError, msgpack.UnpackException) as e:
            log.debug("event=bad_packet from=%s:%d error=%r", addr[0], addr[1], e)
            return
        self.bytes_in += len(data)
        handler = self._packet_handlers.get(msg[0])
        if handler is None or not self.allow(msg[0], addr, "in"):
            return
        if self.faults is not None and self.faults.active:
            hold = self.faults.packet(addr, "in")
            if hold is None:
                return
            if hold > 0:
                asyncio.get_running_loop().call_later(hold, self._deliver_later, handler, msg, addr)
                return
        handler(msg, addr)

    def _deliver_later(self, handler: PacketHandler, msg: list[Any], addr: Addr) -> None:
        if self._udp is not None and not self._udp.is_closing():
            handler(msg, addr)

    # -- TCP ----------------------------------------------------------------------------------

    async def open_stream(
        self, addr: Addr, hello: list[Any], timeout: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to a peer's cluster port and send the first frame, which names the kind."""
        cut = self.faults is not None and self.faults.is_cut(self.faults.name_of(addr))
        if cut or not self.allow(hello[0], addr, "out"):
            raise ConnectionRefusedError(f"traffic to {addr[0]}:{addr[1]} is cut")
        # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation.
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(addr[0], addr[1], limit=2**20)
        writer.write(pack(hello))
        if self.faults is not None:
            self._track(writer, self.faults.name_of(addr))
        return reader, writer

    async def _stream_in(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        peer = writer.get_extra_info("peername") or ("?", 0)
        try:
            hello = await read_frame(reader)
            handler = self._stream_handlers.get(hello[0])
            if handler is None or not self.allow(hello[0], (peer[0], peer[1]), "in"):
                return
            if self.faults is not None:
                sender = stream_sender(hello)
                if not self.faults.allow_stream(sender):
                    return
                self._track(writer, sender)
            await handler(hello, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, FrameError, ValueError) as e:
            log.debug("event=stream_closed peer=%s error=%r", peer, e)
        except asyncio.CancelledError:
            pass
        finally:
            self._streams.discard(task)
            self._open.pop(writer, None)
            writer.close()
