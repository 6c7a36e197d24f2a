"""The gossipkv command line: ``serve`` runs a node, ``status`` shows a node's view of its cluster,
``sync`` forces an anti-entropy exchange, ``local-cluster`` runs three nodes on this machine
(``make run``)."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gossipkv import __version__
from gossipkv.config import (
    PROFILE_NAMES,
    REJOIN_MODES,
    ConfigError,
    NodeConfig,
    check_port,
    load,
    parse_seeds,
)

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
    cluster_port: Annotated[
        int | None,
        typer.Option(help="Cluster bus port, UDP and TCP (default: port + 10000)."),
    ] = None,
    admin_port: Annotated[
        int | None, typer.Option(help="HTTP status port (GET /status); 0 turns it off.")
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Cluster ports to join at start: host:port,host:port.")
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="Membership timing profile: lan, wan or local.")
    ] = None,
    advertise_host: Annotated[
        str | None, typer.Option(help="Address peers are told to reach this node at.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    chaos: Annotated[
        bool, typer.Option("--chaos", help="Allow fault injection through the admin /chaos.")
    ] = False,
    anti_entropy_interval: Annotated[
        float | None,
        typer.Option(help="Seconds between anti-entropy exchanges (jittered); 0 turns them off."),
    ] = None,
    gc_horizon: Annotated[
        float | None,
        typer.Option(help="Seconds a dead member holds back tombstone GC before it is expelled."),
    ] = None,
    rejoin: Annotated[
        str | None,
        typer.Option(help="After the GC horizon: auto (rejoin in-process) or manual (restart)."),
    ] = None,
) -> None:
    """Run one node in the foreground until SIGINT or SIGTERM (which announce a leave first)."""
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
    try:
        if cluster_port is not None:
            check_port("cluster port", cluster_port)
            cfg.cluster_port = cluster_port
        if admin_port is not None:
            check_port("admin port", admin_port)
            cfg.admin_port = admin_port
        if seeds is not None:
            cfg.seeds = parse_seeds(seeds)
    except ValueError as e:
        fail(str(e))
    if profile is not None:
        if profile not in PROFILE_NAMES:
            fail(f"unknown profile {profile!r}: use one of {', '.join(PROFILE_NAMES)}")
        cfg.profile = profile
    if advertise_host is not None:
        cfg.advertise_host = advertise_host
    if chaos:
        cfg.chaos = True
    if anti_entropy_interval is not None:
        if anti_entropy_interval < 0:
            fail("--anti-entropy-interval must not be negative")
        cfg.anti_entropy_interval = anti_entropy_interval
    if gc_horizon is not None:
        if gc_horizon <= 0:
            fail("--gc-horizon must be positive")
        cfg.gc_horizon = gc_horizon
    if rejoin is not None:
        if rejoin not in REJOIN_MODES:
            fail(f"unknown rejoin mode {rejoin!r}: use one of {', '.join(REJOIN_MODES)}")
        cfg.rejoin = rejoin
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
    from gossipkv.node import ListenError, Node, tune_gc

    node = Node(cfg)
    try:
        await node.start()
    except ListenError as e:
        err.print(f"gossipkv: {e}", markup=False)
        return 2
    except OSError as e:  # pragma: no cover - every bind is reported as a ListenError
        what = "address already in use" if e.errno == errno.EADDRINUSE else e.strerror or str(e)
        err.print(f"gossipkv: cannot start: {what}", markup=False)
        return 2
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # a second signal while stopping changes nothing
    node.server.shutdown = stop.set  # SHUTDOWN: the same clean stop
    admin = f", admin http://{cfg.host}:{node.admin.port}/status" if node.admin else ""
    cluster = node.bus.port if node.bus is not None else 0
    err.print(
        f"gossipkv {__version__} node {node.keyspace.node} ready on "
        f"{cfg.host}:{node.server.port}  (redis-cli -h {cfg.host} -p {node.server.port}); "
        f"cluster port {cluster}{admin}",
        markup=False,
    )
    await stop.wait()
    await node.stop()
    return 0


@app.command()
def status(
    host: Annotated[str, typer.Option(help="Host of the node's admin endpoint.")] = "127.0.0.1",
    admin_port: Annotated[int, typer.Option(help="The node's --admin-port.")] = 8379,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the /status document as JSON.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 5.0,
) -> None:
    """Show one node's view of the cluster: members, state, incarnation, replication lag."""
    from gossipkv.admin.report import StatusError, fetch, render

    try:
        check_port("admin port", admin_port)
        doc = fetch(host, admin_port, timeout)
    except (ValueError, StatusError) as e:
        fail(str(e))
        return
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
    else:
        console = Console(highlight=False)
        if not console.is_terminal:  # pipes and logs get whole rows, not an 80-column cut
            console = Console(highlight=False, width=160)
        render(doc, console)


@app.command()
def sync(
    host: Annotated[str, typer.Option(help="Host of the node's client port.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The node's client (RESP) port.")] = 6379,
    peer: Annotated[
        str | None, typer.Option(help="Member to exchange with (default: a random live one).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Find and mark differences, repair nothing.")
    ] = False,
    password: Annotated[str, typer.Option(help="The node's requirepass, if any.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the exchange.")] = 300.0,
) -> None:
    """Run an anti-entropy exchange on a node now (ANTIENTROPY over RESP): progress, then a
    summary table of keys compared, differences, bytes and time."""
    from gossipkv.admin.sync import SyncError, render, run

    try:
        check_port("port", port, allow_zero=False)
    except ValueError as e:
        fail(str(e))
    console = Console(highlight=False, stderr=as_json)
    try:
        summary = run(host, port, peer, dry_run, timeout, password, console)
    except SyncError as e:
        fail(str(e))
        return
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        render(summary, Console(highlight=False))
    if summary.get("error"):
        raise typer.Exit(1)


@app.command("chaos")
def chaos_cmd(
    action: Annotated[str, typer.Argument(help="cut, drop, delay, clear or list.")],
    admin: Annotated[
        str, typer.Option(help="HOST:PORT of the node's admin endpoint (started --chaos).")
    ] = "127.0.0.1:8379",
    peer: Annotated[str, typer.Option(help="Member name, or * for every peer.")] = "*",
    direction: Annotated[str, typer.Option(help="in, out or both.")] = "both",
    rate: Annotated[float, typer.Option(help="drop: probability of dropping.")] = 1.0,
    delay_ms: Annotated[int, typer.Option(help="delay: milliseconds to hold traffic.")] = 0,
    jitter_ms: Annotated[int, typer.Option(help="delay: +/- this many milliseconds.")] = 0,
) -> None:
    """Inject faults on one node's cluster traffic with a peer (clear: remove rules of --peer,
    all with the default *)."""
    from gossipkv.admin.chaos import ChaosError, request

    host, _, port = admin.rpartition(":")
    if not host or not port.isdigit():
        fail(f"--admin {admin!r} is not HOST:PORT")
    rule: dict[str, object] | None = None
    if action in ("cut", "drop", "delay"):
        rule = {"peer": peer, "action": action, "direction": direction}
        if action == "drop":
            rule["rate"] = rate
        if action == "delay":
            rule.update(delay_ms=delay_ms, jitter_ms=jitter_ms)
        method = "POST"
    elif action in ("clear", "list"):
        method = "DELETE" if action == "clear" else "GET"
    else:
        fail(f"unknown chaos action {action!r}: use cut, drop, delay, clear or list")
        return
    query = f"?peer={peer}" if action == "clear" and peer != "*" else ""
    try:
        doc = request(host, int(port), method, rule, query)
    except ChaosError as e:
        fail(str(e))
        return
    typer.echo(json.dumps(doc, indent=2))


# ``make run``: three regions on one machine, each node's ports offset from the first's.
LOCAL_NODES = (("eu-1", "eu"), ("us-1", "us"), ("ap-1", "ap"))
ADMIN_PORT_OFFSET = 2000


@app.command("local-cluster")
def local_cluster(
    base_port: Annotated[
        int, typer.Option(help="Client port of the first node; the others follow it.")
    ] = 6379,
    host: Annotated[str, typer.Option(help="Address every node listens on.")] = "127.0.0.1",
    profile: Annotated[str, typer.Option(help="Membership profile: lan, wan or local.")] = "local",
    log_level: Annotated[str, typer.Option(help="The nodes' log level.")] = "info",
) -> None:
    """Run three nodes in three regions on this machine as one cluster, until Ctrl-C.

    Node i listens for clients on base-port + i, for its cluster on that + 10000 and for
    /status on that + 2000; every node is given all three cluster ports as seeds.
    """
    from gossipkv.config import CLUSTER_PORT_OFFSET

    ports = [base_port + i for i in range(len(LOCAL_NODES))]
    try:
        for p in ports:
            check_port("base port", p, allow_zero=False)
            check_port("cluster port", p + CLUSTER_PORT_OFFSET)
    except ValueError as e:
        fail(f"{e}: choose a lower --base-port")
    if profile not in PROFILE_NAMES:
        fail(f"unknown profile {profile!r}: use one of {', '.join(PROFILE_NAMES)}")
    seeds = ",".join(f"{host}:{p + CLUSTER_PORT_OFFSET}" for p in ports)
    nodes: list[tuple[str, str, int, subprocess.Popen[bytes]]] = []
    lock = threading.Lock()
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for (name, region), port in zip(LOCAL_NODES, ports, strict=True):
        args = [
            sys.executable, "-m", "gossipkv", "serve", "--host", host, "--port", str(port),
            "--cluster-port", str(port + CLUSTER_PORT_OFFSET),
            "--admin-port", str(port + ADMIN_PORT_OFFSET), "--name", name, "--region", region,
            "--profile", profile, "--seeds", seeds, "--log-level", log_level,
        ]
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
        nodes.append((name, region, port, proc))
    for name, _, _, proc in nodes:  # only now: no thread may run while preexec_fn does
        threading.Thread(target=_relay, args=(name, proc, lock), daemon=True).start()
    code = 0
    deadline = time.monotonic() + 15
    while not stopping.is_set() and not all(_answers_ping(host, p) for _, _, p, _ in nodes):
        if any(proc.poll() is not None for *_, proc in nodes) or time.monotonic() > deadline:
            code = 2
            break
        stopping.wait(0.05)
    if code == 0 and not stopping.is_set():
        with lock:
            print(f"\nthree nodes, one cluster (profile {profile}):", flush=True)
            for name, region, port, _ in nodes:
                print(
                    f"  {name}  region {region}  redis-cli -h {host} -p {port}    "
                    f"status: gossipkv status --admin-port {port + ADMIN_PORT_OFFSET}",
                    flush=True,
                )
            print("Ctrl-C stops all three.\n", flush=True)
    while not stopping.is_set() and code == 0:
        if any(proc.poll() is not None for *_, proc in nodes):
            code = 1  # a node died on its own: bring the rest down too
            break
        stopping.wait(0.2)
    for *_, proc in nodes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # each node announces its leave and stops
    for *_, proc in nodes:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.returncode not in (0, -signal.SIGTERM) and code == 0:
            code = 1
        if proc.returncode == 2:
            code = 2
    if code:
        failed = [f"{name} (exit {proc.returncode})" for name, _, _, proc in nodes
                  if proc.returncode not in (0, -signal.SIGTERM)]
        err.print(f"gossipkv: local cluster stopped: {', '.join(failed) or 'a node'} failed",
                  markup=False)
        raise typer.Exit(code)


def _die_with_parent() -> None:
    """In a node's process before exec: a SIGTERM when local-cluster dies, even by SIGKILL, so
    that no node outlives it (Linux; elsewhere Ctrl-C and SIGTERM still stop every node)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def _relay(name: str, proc: subprocess.Popen[bytes], lock: threading.Lock) -> None:
    """Copy a node's output to ours, each line tagged with the node's name."""
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        with lock:
            print(f"{name:5} | {line}", flush=True)


def _answers_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False
