"""The asyncio protocol of one client connection.

Each read batch is parsed into requests, every request is executed, and all replies go out in
one ``transport.write`` — pipelining costs one syscall per batch. A client that stops reading its
replies has its reading paused once the transport's buffer passes the high-water mark, so a
flood of requests can never grow memory without bound.

Replies are written when the event loop's iteration ends, every connection's in one burst
(``PendingWrites``), as Redis writes them before it sleeps. A write to a client that waits wakes
it, a few microseconds of kernel time on a VM; written at once, nearly every reply found its
client waiting, and in a burst most find it still awake: under 50 clients a ZPOPMIN spent 6.5 µs
of system time per request the first way, and 1.5 µs the second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final, cast

from gossipkv.commands.replies import NO_REPLY, OK, ErrorReply, Reply
from gossipkv.commands.session import Server, Session
from gossipkv.resp.encoder import ENCODERS, error_bytes
from gossipkv.resp.parser import ProtocolError, RequestParser

log: Final = logging.getLogger("gossipkv.resp")

WRITE_HIGH_WATER: Final = 4 * 1024 * 1024
WRITE_LOW_WATER: Final = 1024 * 1024
BLOCKED_QUEUE_MAX: Final = 1024  # requests queued behind a blocked command before reading pauses
MAX_CLIENTS_REACHED: Final = b"-ERR max number of clients reached\r\n"


class PendingWrites:
    """The connections with replies waiting for the end of this event-loop iteration."""

    __slots__ = ("connections", "schedule")

    def __init__(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        self.schedule = schedule  # runs a callback once this iteration's I/O is handled
        self.connections: list[ClientProtocol] = []

    def add(self, connection: ClientProtocol) -> None:
        connections = self.connections
        connections.append(connection)
        if len(connections) == 1:
            self.schedule(self.write)

    def write(self) -> None:
        connections = self.connections
        self.connections = []
        for connection in connections:
            connection.write_pending()


class ClientProtocol(asyncio.Protocol):
    __slots__ = (
        "bad", "blocked", "parser", "paused", "pending", "queue", "server", "session", "transport",
        "writes",
    )

    def __init__(self, server: Server, writes: PendingWrites) -> None:
        self.server = server
        self.writes = writes
        self.pending: list[bytes] | None = None  # replies not yet written, when in ``writes``
        self.parser = RequestParser()
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.paused = False
        self.queue: list[list[bytes]] = []  # parsed requests not yet executed
        self.blocked: asyncio.Future[Reply] | None = None  # the reply a blocked client awaits
        self.bad: ProtocolError | None = None  # malformed input seen after the queued requests

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        server = self.server
        if len(server.clients) >= server.maxclients:
            # As Redis: the error, then the connection closes; the client never gets a session.
            server.stats.rejected_connections += 1
            transport.write(MAX_CLIENTS_REACHED)
            transport.close()
            return
        session = Session(server, _addr(peer), _addr(sock))
        session.transport_info = self._buffers
        self.session = session
        self.server.clients[session.id] = session
        self.server.stats.total_connections_received += 1
        self.parser.authenticated = session.authenticated
        session.closer = transport.close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.blocked is not None:
            self.blocked.cancel()  # the blocking command cleans up on cancellation
        if self.session is not None:
            self.server.clients.pop(self.session.id, None)

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop reading its requests.
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self.paused:
            self.paused = False
            if self.blocked is None:
                self.transport.resume_reading()
                if self.queue:
                    self._run_queue()  # requests left waiting while the client caught up

    def data_received(self, data: bytes) -> None:
        if self.session is None:
            return  # refused at connection (maxclients): closing, nothing is served
        self.server.stats.total_net_input_bytes += len(data)
        try:
            self.parser.feed(data, self.queue)
        except ProtocolError as e:
            self.bad = e
        if self.blocked is None:
            self._run_queue()
        elif len(self.queue) > BLOCKED_QUEUE_MAX and self.transport is not None:
            # A blocked client keeps being read, so that a disconnect cancels its command; but
            # what it pipelines behind the blocking command must stay bounded.
            self.transport.pause_reading()

    def _run_queue(self) -> None:
        """Execute queued requests in order; stop at one that blocks until its reply is ready."""
        while self._run_batch():
            pass

    def _run_batch(self) -> bool:
        """Run the queue once; True when the parser handed over more requests to run."""
        session = self.session
        transport = self.transport
        assert session is not None and transport is not None
        queue = self.queue
        out: list[bytes] = []
        size = 0  # bytes of values in ``out``: what one batch of small requests can amplify into
        for k in range(len(queue)):  # compiled to a plain loop: enumerate is an object a batch
            argv = queue[k]
            reply = session.execute(argv)
            # The two commonest replies skip the type dispatch; both encode alike in RESP2/3.
            if reply is OK:
                out.append(b"+OK\r\n")
            elif type(reply) is bytes:
                out.append(b"$%d\r\n%s\r\n" % (len(reply), reply))
                size += len(reply)
            elif isinstance(reply, asyncio.Future):
                if not reply.done():
                    # A blocking command (WAIT, BLPOP ...): later requests wait for its reply.
                    del queue[: k + 1]
                    self.blocked = reply
                    session.blocked = True
                    # Reading goes on (requests queue up) so that a client that disconnects
                    # while blocked is noticed and its blocking command cancelled.
                    reply.add_done_callback(self._unblock)
                    if out:
                        self._send(b"".join(out))
                    return False
                out.append(ENCODERS[session.resp](_result(reply)))
            elif reply is NO_REPLY:
                pass  # the command closes the connection (session.closing) without a reply
            else:
                encoded = ENCODERS[session.resp](reply)
                out.append(encoded)
                size += len(encoded)
            if session.closing:
                self.bad = None
                break
            if size > WRITE_HIGH_WATER:
                # The replies to one read batch can dwarf its requests (GETs of a large value):
                # hand them over now, and while the transport is over its limit leave the rest
                # queued for resume_writing, so a client that never reads stays bounded.
                self._send(b"".join(out))
                self.write_pending()  # now: the transport's buffer decides whether to pause
                out.clear()
                size = 0
                if self.paused:
                    del queue[: k + 1]
                    return False
        queue.clear()
        parser = self.parser
        if not parser.authenticated:
            # Before AUTH the parser hands over one request at a time, so that the limits for
            # unauthenticated clients stop applying right after a successful AUTH.
            parser.authenticated = session.authenticated
            if parser.buffered and self.bad is None and not session.closing:
                try:
                    parser.feed(b"", queue)
                except ProtocolError as e:
                    self.bad = e
                if queue:
                    if out:
                        self._send(b"".join(out))
                    return True
        parser.authenticated = session.authenticated
        bad = self.bad
        if bad is not None:
            out.append(error_bytes("ERR Protocol error: " + bad.message))
        if out:
            self._send(b"".join(out) if len(out) > 1 else out[0])
        if bad is not None or session.closing:
            self.write_pending()
            transport.close()
        return False

    def _unblock(self, fut: asyncio.Future[Reply]) -> None:
        self.blocked = None
        if self.session is not None:
            self.session.blocked = False
        transport = self.transport
        if transport is None or transport.is_closing() or self.session is None:
            return
        self._send(ENCODERS[self.session.resp](_result(fut)))
        if not self.paused:
            transport.resume_reading()
        self._run_queue()

    def _send(self, data: bytes) -> None:
        """Queue ``data`` to be written when this event-loop iteration ends."""
        self.server.stats.total_net_output_bytes += len(data)
        pending = self.pending
        if pending is None:
            self.pending = [data]
            self.writes.add(self)
        else:
            pending.append(data)

    def write_pending(self) -> None:
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def _buffers(self) -> dict[str, int]:
        t = self.transport
        return {
            "qbuf": self.parser.buffered,
            "omem": t.get_write_buffer_size() if t is not None else 0,
        }


def _result(fut: asyncio.Future[Reply]) -> Reply:
    if fut.cancelled():
        return ErrorReply("ERR command cancelled")
    exc = fut.exception()
    if isinstance(exc, ErrorReply):
        return exc
    if exc is not None:
        log.error("event=command_failed error=%r", exc)
        return ErrorReply(f"ERR {exc}")
    return fut.result()


def _addr(a: Any) -> str:
    if isinstance(a, tuple) and len(a) >= 2:
        return f"{a[0]}:{a[1]}"
    return str(a or "")
