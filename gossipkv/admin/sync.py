"""``gossipkv sync``: force an anti-entropy exchange on a node, show its progress and summary.

It speaks RESP to the node's client port, so it needs nothing but the port redis-cli uses: one
connection sends ``ANTIENTROPY [PEER name] [DRYRUN]`` and waits for the summary; a second one
polls ``INFO replication`` (the ``ae_now_*`` fields of the exchange in progress) to draw the
progress line.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import hiredis
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

POLL = 0.1  # seconds between progress polls


class SyncError(Exception):
    """The node refused or could not be reached; the message is one line for the user."""


class _Conn:
    """A minimal blocking RESP2 connection (the CLI does not depend on a Redis client)."""

    def __init__(self, host: str, port: int, timeout: float, password: str) -> None:
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise SyncError(f"cannot connect to {host}:{port}: {e.strerror or e}") from None
        self.reader = hiredis.Reader()
        if password:
            self.call(b"AUTH", password.encode())

    def call(self, *argv: bytes) -> Any:
        self.sock.sendall(
            b"*%d\r\n" % len(argv) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in argv)
        )
        while True:
            reply = self.reader.gets()
            if reply is not False:
                break
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise SyncError("the node did not answer in time") from None
            if not data:
                raise SyncError("the node closed the connection")
            self.reader.feed(data)
        if isinstance(reply, hiredis.ReplyError):
            raise SyncError(str(reply))
        return reply

    def close(self) -> None:
        self.sock.close()


def _pairs(flat: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i in range(0, len(flat) - 1, 2):
        value = flat[i + 1]
        out[flat[i].decode()] = value.decode() if isinstance(value, bytes) else value
    return out


def _info(conn: _Conn) -> dict[str, str]:
    text = conn.call(b"INFO", b"replication").decode()
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value
    return out


def run(
    host: str, port: int, peer: str | None, dry_run: bool, timeout: float, password: str,
    console: Console,
) -> dict[str, Any]:
    """Run the exchange, drawing progress on ``console``; the summary as a dict."""
    argv = [b"ANTIENTROPY"]
    if peer:
        argv += [b"PEER", peer.encode()]
    if dry_run:
        argv.append(b"DRYRUN")
    conn = _Conn(host, port, timeout, password)
    poll = _Conn(host, port, timeout, password)
    result: dict[str, Any] = {}
    failure: list[SyncError] = []

    def call() -> None:
        try:
            result.update(_pairs(conn.call(*argv)))
        except SyncError as e:
            failure.append(e)

    worker = threading.Thread(target=call, daemon=True)
    try:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
            console=console, transient=True,
        ) as progress:
            task = progress.add_task("starting the exchange", total=None)
            worker.start()
            while worker.is_alive():
                worker.join(POLL)
                try:
                    info = _info(poll)
                except SyncError:
                    continue
                if info.get("ae_running") == "1":
                    progress.update(task, description=(
                        f"with {info.get('ae_now_peer', '?')}: levels walked "
                        f"{info.get('ae_now_levels_walked', 0)}, keys compared "
                        f"{info.get('ae_now_keys_compared', 0)}, repaired "
                        f"{info.get('ae_now_repaired', 0)}"
                    ))
        if failure:
            raise failure[0]
    finally:
        conn.close()
        poll.close()
    return result


def render(summary: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"anti-entropy with {summary.get('peer', '?')} ({summary.get('mode', '?')})"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("in sync", "yes" if summary.get("in_sync") else "no"),
        ("levels walked", summary.get("levels_walked")),
        ("leaves differing", summary.get("leaves_differing")),
        ("keys compared", summary.get("keys_compared")),
        ("differences", summary.get("differences")),
        ("repaired here", summary.get("repaired_here")),
        ("repaired on the peer", summary.get("repaired_there")),
        ("round trips", summary.get("round_trips")),
        ("bytes sent", summary.get("bytes_sent")),
        ("bytes received", summary.get("bytes_received")),
        ("time (ms)", summary.get("ms")),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    if summary.get("error"):
        table.add_row("error", str(summary["error"]))
    console.print(table)
