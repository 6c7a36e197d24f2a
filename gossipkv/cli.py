"""The gossipkv command line: ``gossipkv serve`` runs a node; more verbs come with the cluster."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gossipkv import __version__
from gossipkv.config import ConfigError, NodeConfig, load

app = typer.Typer(
    name="gossipkv",
    help="Active-active, Redis-protocol, CRDT-replicated key-value store.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # one line, whatever its length


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gossipkv {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """gossipkv: every node accepts reads and writes from any Redis client."""


def fail(message: str) -> None:
    """One clear line on stderr and exit code 2: the contract for every user error."""
    err.print(f"gossipkv: {message}", markup=False)
    raise typer.Exit(2)


@app.command()
def serve(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML config file.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on for clients.")] = None,
    port: Annotated[int | None, typer.Option(help="Client (RESP) port.")] = None,
    name: Annotated[str | None, typer.Option(help="Node name, unique in the cluster.")] = None,
    region: Annotated[str | None, typer.Option(help="Region label of this node.")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run one node in the foreground until SIGINT or SIGTERM."""
    try:
        cfg = load(config)
    except ConfigError as e:
        fail(str(e))
        return
    if host is not None:
        cfg.host = host
    if port is not None:
        if not 0 <= port <= 65535:
            fail(f"port {port} is out of range")
        cfg.port = port
    if name is not None:
        cfg.name = name
    if region is not None:
        cfg.region = region
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        fail(f"unknown log level {log_level!r}")
        return
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s level=%(levelname)s %(message)s"
    )
    code = _run(cfg)
    if code:
        raise typer.Exit(code)


def _run(cfg: NodeConfig) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        pass
    try:
        return asyncio.run(_serve(cfg))
    except KeyboardInterrupt:
        return 0


async def _serve(cfg: NodeConfig) -> int:
    from gossipkv.node import Node

    node = Node(cfg)
    try:
        await node.start()
    except OSError as e:
        what = "address already in use" if e.errno == errno.EADDRINUSE else e.strerror or str(e)
        err.print(f"gossipkv: cannot listen on {cfg.host}:{cfg.port}: {what}", markup=False)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    err.print(
        f"gossipkv {__version__} node {node.keyspace.node} ready on "
        f"{cfg.host}:{node.server.port}  (redis-cli -h {cfg.host} -p {node.server.port})",
        markup=False,
    )
    await stop.wait()
    await node.stop()
    return 0
