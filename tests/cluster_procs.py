"""Clusters of real ``python -m gossipkv serve`` processes, for tests and benchmarks.

Each node gets free client and cluster ports (an admin port on request), a name and a region;
``start_cluster`` seeds every node with the first one's cluster port and waits until each node
sees all the others alive with a streaming replication link.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.servers import ROOT, ServerProcess, answers_ping, free_ports, wait_for

REGIONS = ("eu", "us", "ap", "sa", "af")


@dataclass
class ClusterNode:
    """One node process and what a test needs to reach it again (or restart it)."""

    name: str
    region: str
    port: int
    cluster_port: int
    admin_port: int
    tmp: Path
    extra: list[str] = field(default_factory=list)
    server: ServerProcess | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.server is not None
        return self.server.proc

    def args(self) -> list[str]:
        args = [
            sys.executable, "-m", "gossipkv", "serve", "--port", str(self.port),
            "--cluster-port", str(self.cluster_port), "--name", self.name,
            "--region", self.region, *self.extra,
        ]
        if self.admin_port:
            args += ["--admin-port", str(self.admin_port)]
        return args

    def spawn(self) -> None:
        """Start the process without waiting (``wait_listening`` waits)."""
        log = self.tmp / f"{self.name}-{self.port}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(self.args(), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.server = ServerProcess(self.port, proc, log, self.args())

    def wait_listening(self, timeout: float = 20) -> None:
        proc = self.proc
        wait_for(
            lambda: answers_ping(self.port) or proc.poll() is not None, timeout,
            f"{self.name} to listen",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.output()}")

    def start(self) -> ClusterNode:
        self.spawn()
        self.wait_listening()
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return self.server.stop(sig) if self.server is not None else 0

    def output(self) -> str:
        return self.server.output() if self.server is not None else ""

    def client(self, protocol: int = 2, **kwargs: Any) -> redis.Redis:
        return redis.Redis(port=self.port, protocol=protocol, socket_timeout=20, **kwargs)

    def members(self) -> dict[str, dict[str, Any]]:
        """MEMBERS as this node answers it, by member name."""
        with self.client(protocol=3, decode_responses=True) as c:
            rows = c.execute_command("MEMBERS")  # type: ignore[no-untyped-call]
        return {row["name"]: row for row in rows}

    def state_of(self, name: str) -> str | None:
        row = self.members().get(name)
        return None if row is None else str(row["state"])

    def digest(self) -> str:
        with self.client(decode_responses=True) as c:
            return str(c.execute_command("DEBUG", "DIGEST"))  # type: ignore[no-untyped-call]

    def dbsize(self) -> int:
        with self.client() as c:
            return int(c.dbsize())


def new_node(
    tmp: Path, index: int, profile: str = "local", seeds: Sequence[ClusterNode] = (),
    admin: bool = False, name: str | None = None, extra: Iterable[str] = (),
) -> ClusterNode:
    region = REGIONS[index % len(REGIONS)]
    args = ["--profile", profile, "--log-level", "info", *extra]
    if seeds:
        args += ["--seeds", ",".join(f"127.0.0.1:{s.cluster_port}" for s in seeds)]
    port, cluster_port, admin_port = free_ports(3)
    return ClusterNode(
        name or f"{region}-{index + 1}", region, port, cluster_port,
        admin_port if admin else 0, tmp, args,
    )


def start_cluster(
    tmp: Path, n: int, profile: str = "local", admin: bool = False, formed_within: float = 30,
    extra: Iterable[str] = (),
) -> list[ClusterNode]:
    """n nodes seeded with the first, started together; returns once the cluster has formed.
    ``extra``: more ``serve`` flags for every node (e.g. ``--chaos``)."""
    extra = list(extra)
    first = new_node(tmp, 0, profile, admin=admin, extra=extra)
    nodes = [first] + [
        new_node(tmp, i, profile, [first], admin, extra=extra) for i in range(1, n)
    ]
    try:
        for node in nodes:
            node.spawn()
        for node in nodes:
            node.wait_listening()
        wait_formed(nodes, formed_within)
    except BaseException:
        stop_all(nodes, signal.SIGKILL)
        raise
    return nodes


def formed(nodes: Sequence[ClusterNode]) -> bool:
    """Every node sees every other alive, with a streaming replication link to it."""
    names = {n.name for n in nodes}
    for node in nodes:
        rows = node.members()
        for name in names - {node.name}:
            row = rows.get(name)
            if row is None or row["state"] != "alive" or row["link"] != "streaming":
                return False
    return True


def wait_formed(nodes: Sequence[ClusterNode], timeout: float = 30) -> None:
    wait_for(lambda: formed(nodes), timeout, "the cluster to form")


def converged(nodes: Sequence[ClusterNode]) -> bool:
    return len({n.digest() for n in nodes}) == 1


def wait_converged(nodes: Sequence[ClusterNode], timeout: float = 30) -> None:
    wait_for(lambda: converged(nodes), timeout, "every node to report the same DEBUG DIGEST")


def stop_all(nodes: Iterable[ClusterNode], sig: int = signal.SIGTERM) -> None:
    """Signal every node at once (so they leave together), then reap each."""
    running = [n for n in nodes if n.server is not None and n.proc.poll() is None]
    for node in running:
        node.proc.send_signal(sig)
    for node in running:
        try:
            node.proc.wait(15)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()


def write_concurrently(
    nodes: Sequence[ClusterNode], writer: Callable[[ClusterNode, int], None], timeout: float = 120
) -> None:
    """Run ``writer(node, seed)`` on every node at once, each in its own thread, and wait."""
    threads = [
        threading.Thread(target=writer, args=(node, seed)) for seed, node in enumerate(nodes)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
