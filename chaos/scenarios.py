"""The chaos scenarios: a three-node cluster under a client workload, one fault each, then the
checker. Every scenario ends with all faults cleared, the workload stopped, a wait (with a
deadline) for equal DEBUG DIGEST on every node, and the checker's verdict on every node.

- partition: {A} | {B, C} while clients write on both sides, then heal;
- kill: ``kill -9`` of a node under load, then an empty process in its place (same name and
  ports) joined with MEET; its clients count a write only once ``WAIT 1`` saw it on a peer,
  since nothing persists yet;
- pause: SIGSTOP of a node under load, SIGCONT after its peers declared it failed;
- lossy: packet and frame loss plus delay between every pair of regions (lost replication
  frames are healed by anti-entropy only);
- backlog: a partition that outlives a small replication backlog (``backlog_ops``);
- horizon: a partition {A} | {B, C} that outlives a short GC horizon: each side expels the
  other, and after the heal A, the smaller side, drops its state and rejoins by itself.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from chaos import cluster
from chaos.checker import Check, Verdict, check
from chaos.workload import ERROR, OK, UNCERTAIN, Target, Workload
from gossipkv.admin.report import StatusError, fetch
from tests.cluster_procs import ClusterNode, formed, new_node, stop_all
from tests.servers import wait_for


@dataclass
class Run:
    """One scenario's cluster, workload and notes while it runs."""

    name: str
    short: bool
    tmp: Path
    nodes: list[ClusterNode]
    workload: Workload
    figures: dict[str, Any] = field(default_factory=dict)

    def load(self, seconds: float) -> None:
        """Let the workload run for a while (the length of a phase, not a synchronisation)."""
        time.sleep(seconds)

    def seconds(self, short: float, full: float) -> float:
        return short if self.short else full

    def timed(self, what: str, cond: Callable[[], bool], timeout: float) -> None:
        """Wait for ``cond`` with a deadline and record how long it took (or that it did not)."""
        start = time.monotonic()
        try:
            wait_for(lambda: _safe(cond), timeout, what)
            self.figures[what] = f"{time.monotonic() - start:.1f} s"
        except TimeoutError:
            self.figures[what] = f"not within {timeout:.0f} s"


def _safe(cond: Callable[[], bool]) -> bool:
    try:
        return cond()
    except (redis.RedisError, OSError, KeyError):
        return False


@dataclass
class Result:
    name: str
    verdict: Verdict
    converged: bool
    converge_s: float
    acknowledged: int
    uncertain: int
    errors: int
    figures: dict[str, Any]
    logs: Path

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    def line(self) -> str:
        conv = f"converged in {self.converge_s:.1f} s" if self.converged else (
            f"NOT converged after {self.converge_s:.0f} s"
        )
        return (
            f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.acknowledged} ops acknowledged, "
            f"{self.uncertain} uncertain, {self.errors} errors; {conv}; "
            f"{len(self.verdict.violations())} violations"
        )


# -- the faults ------------------------------------------------------------------------------------


def _sees(node: ClusterNode, name: str, states: tuple[str, ...]) -> bool:
    return node.state_of(name) in states


def partition(run: Run) -> None:
    a, b, c = run.nodes
    run.load(run.seconds(1.0, 2.0))
    cluster.partition([a], [b, c])
    run.timed(
        "A sees B and C failed",
        lambda: all(_sees(a, x.name, ("suspect", "dead")) for x in (b, c)), 15,
    )
    run.load(run.seconds(2.0, 8.0))
    cluster.heal(run.nodes)
    run.timed("rejoined after heal", lambda: formed(run.nodes), 30)
    run.load(1.0)


def kill(run: Run) -> None:
    a, _, victim = run.nodes
    run.load(2.0)
    victim.stop(signal.SIGKILL)
    run.timed("victim declared dead", lambda: _sees(a, victim.name, ("dead",)), 15)
    run.load(1.0)
    # The same name and ports, nothing else: the empty process learns everything from MEET.
    fresh = new_node(run.tmp, 2, admin=True, name=victim.name, extra=["--chaos"])
    fresh.port, fresh.cluster_port, fresh.admin_port = (
        victim.port, victim.cluster_port, victim.admin_port
    )
    fresh.start()
    with fresh.client() as cl:
        cl.execute_command("MEET", "127.0.0.1", a.port)
    run.nodes[2] = fresh
    run.timed("empty node joined by MEET", lambda: formed(run.nodes), 30)
    run.load(2.0)


def pause(run: Run) -> None:
    a, _, victim = run.nodes
    run.load(1.5)
    victim.proc.send_signal(signal.SIGSTOP)
    try:
        run.timed("paused node suspected", lambda: _sees(a, victim.name, ("suspect", "dead")), 15)
        run.load(run.seconds(1.0, 4.0))
    finally:
        victim.proc.send_signal(signal.SIGCONT)
    run.timed("resumed node alive again", lambda: formed(run.nodes), 30)
    run.load(1.5)


def lossy(run: Run) -> None:
    rate, delay, jitter = (0.1, 20, 10) if run.short else (0.2, 40, 20)
    run.load(1.0)
    for node in run.nodes:
        cluster.rule(node, peer="*", action="drop", rate=rate)
        cluster.rule(node, peer="*", action="delay", delay_ms=delay, jitter_ms=jitter)
    run.figures["faults"] = f"drop {rate:.0%}, delay {delay}+/-{jitter} ms, every pair"
    run.load(run.seconds(3.0, 8.0))
    dropped = [cluster.counters(n) for n in run.nodes]
    run.figures["packets dropped"] = sum(d.get("packets_dropped", 0) for d in dropped)
    run.figures["frames dropped"] = sum(d.get("frames_dropped", 0) for d in dropped)
    run.figures["frames delayed"] = sum(d.get("frames_delayed", 0) for d in dropped)
    cluster.heal(run.nodes)
    run.load(1.0)


BACKLOG_OPS = 200


def backlog(run: Run) -> None:
    a, b, c = run.nodes
    run.load(1.0)
    cluster.partition([a], [b, c])
    run.load(run.seconds(4.0, 10.0))
    cluster.heal(run.nodes)
    run.timed("rejoined after heal", lambda: formed(run.nodes), 30)
    run.load(1.0)


HORIZON_S = 2


def _gc(node: ClusterNode) -> dict[str, Any]:
    doc: dict[str, Any] = fetch("127.0.0.1", node.admin_port)
    return dict(doc.get("gc") or {})


def _rejoins(node: ClusterNode) -> int:
    doc: dict[str, Any] = fetch("127.0.0.1", node.admin_port)
    return int((doc.get("rejoin") or {}).get("rejoins", 0))


def horizon(run: Run) -> None:
    a, b, c = run.nodes
    run.load(1.0)
    cluster.partition([a], [b, c])
    run.timed("B and C expel A", lambda: all(a.name in _gc(x)["expelled"] for x in (b, c)), 30)
    run.timed("A expels B and C", lambda: {b.name, c.name} <= set(_gc(a)["expelled"]), 30)
    cluster.heal(run.nodes)
    with contextlib.suppress(redis.RedisError), a.client() as cl:
        cl.execute_command("MEET", "127.0.0.1", b.port)  # in case A forgot them meanwhile
    run.timed("A rejoined by itself", lambda: _rejoins(a) >= 1, 30)
    run.timed("rejoined after heal", lambda: formed(run.nodes), 30)
    run.load(1.0)
    run.figures["rejoins"] = {n.name: _rejoins(n) for n in run.nodes}


def _rejoined_once(figures: dict[str, Any], smaller: str) -> Check:
    """The horizon scenario's own claim: the smaller side, and only it, rejoined once."""
    c = Check("the smaller side rejoined, once")
    rejoins: dict[str, int] = figures.get("rejoins", {})
    c.items = sum(rejoins.values())
    expected = {name: int(name == smaller) for name in rejoins}
    if not rejoins or rejoins != expected:
        c.violations.append(f"rejoins {rejoins}, expected {expected}")
    return c


SCENARIOS: dict[str, tuple[Callable[[Run], None], str]] = {
    "partition": (partition, "partition {A} | {B, C} under load, then heal"),
    "kill": (kill, "kill -9 of a node under load, empty node back with MEET"),
    "pause": (pause, "SIGSTOP / SIGCONT of a node under load"),
    "lossy": (lossy, "packet/frame loss and delay between regions"),
    "backlog": (backlog, f"partition outliving a {BACKLOG_OPS}-op replication backlog"),
    "horizon": (horizon, f"partition {{A}} | {{B, C}} outliving a {HORIZON_S} s GC horizon"),
}


def _config(tmp: Path, name: str) -> list[str]:
    if name == "horizon":
        # Both sides expel each other; A, the smaller, rejoins in-process on its own.
        return ["--gc-horizon", str(HORIZON_S)]
    if name != "backlog":
        return []
    path = tmp / "backlog.toml"
    # A peer past the backlog is told its missed operations are lost, and only anti-entropy
    # heals it (no snapshot): the scenario proves that path alone loses nothing.
    path.write_text(f"[cluster]\nbacklog_ops = {BACKLOG_OPS}\noverrun = \"anti-entropy\"\n")
    return ["--config", str(path)]


def _healing(nodes: list[ClusterNode]) -> tuple[int, int, int]:
    """(replication snapshots sent, catch-ups left to anti-entropy, differences anti-entropy
    found) summed over the nodes."""
    snapshots = overruns = differences = 0
    for node in nodes:
        try:
            doc = fetch("127.0.0.1", node.admin_port)
        except (StatusError, OSError):
            continue
        peers = doc.get("replication", {}).get("peers", [])
        snapshots += sum(int(p.get("snapshots_sent", 0)) for p in peers)
        overruns += sum(int(p.get("overruns", 0)) for p in peers)
        differences += int((doc.get("antientropy") or {}).get("total_differences", 0))
    return snapshots, overruns, differences


def _healed_by_exchange(figures: dict[str, Any]) -> Check:
    """The backlog scenario's own claim: the partition outlived the backlog, and no snapshot
    but anti-entropy brought the sides together."""
    c = Check("healed by anti-entropy alone")
    overruns = int(figures["backlog overruns left to anti-entropy"])
    c.items = overruns
    if overruns == 0:
        c.violations.append("no peer fell past the backlog: the scenario proved nothing")
    if figures["replication snapshots"]:
        c.violations.append(f"{figures['replication snapshots']} snapshots were sent")
    return c


def run_scenario(name: str, short: bool = False, converge_within: float = 60) -> Result:
    """Start a cluster, run one scenario under the workload, check, and stop the cluster."""
    body, _ = SCENARIOS[name]
    tmp = Path(tempfile.mkdtemp(prefix=f"gossipkv-chaos-{name}-"))
    nodes = cluster.start(tmp, 3, _config(tmp, name))
    targets = [
        Target(n.name, n.port, wait_replicas=1 if name == "kill" and i == 2 else 0)
        for i, n in enumerate(nodes)
    ]
    workload = Workload(targets, clients_per_node=2, ops_per_second=60.0 if short else 150.0)
    run = Run(name, short, tmp, nodes, workload)
    try:
        snaps_before, overruns_before, diffs_before = _healing(nodes)
        workload.start()
        try:
            body(run)
        finally:
            cluster.heal(run.nodes)
            workload.stop()
        converged, took = cluster.wait_converged(run.nodes, converge_within)
        snaps, overruns, diffs = _healing(run.nodes)
        run.figures["replication snapshots"] = snaps - snaps_before
        run.figures["backlog overruns left to anti-entropy"] = overruns - overruns_before
        run.figures["anti-entropy differences"] = diffs - diffs_before
        readers: dict[str, Callable[..., Any]] = {}
        clients = []
        for node in run.nodes:
            cl = node.client(decode_responses=True)
            clients.append(cl)
            readers[node.name] = cl.execute_command
        try:
            verdict = check(workload.ops, readers, converged)
            if name == "backlog":
                verdict.checks.append(_healed_by_exchange(run.figures))
            if name == "horizon":
                verdict.checks.append(_rejoined_once(run.figures, run.nodes[0].name))
        finally:
            for cl in clients:
                cl.close()
    finally:
        stop_all(run.nodes, signal.SIGKILL)
    return Result(
        name, verdict, converged, took, workload.count(OK), workload.count(UNCERTAIN),
        workload.count(ERROR), run.figures, tmp,
    )
