"""``make bench``: redis-server and gossipkv side by side under the same load, as ratios.

Throughput: redis-benchmark (50 clients, keys drawn from the same 100k-key space) runs SET, GET,
INCR and MSET unpipelined and pipelined 16 deep, alternating between the two servers test by
test so that drift in the machine's speed hits both alike; the median of the rounds' ratios
counts. The load average is recorded: figures taken on a busy machine say little.
Memory: fresh servers, the same ``redis-cli --pipe`` stream of ``SET key:N val:N`` into each,
DBSIZE checked, then resident size from /proc; once more for a gossipkv node whose replication
backlog is as small as it goes, to show the keyspace's own share. Figures go to bench/results/
as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import bench.cluster
from bench.tools import (
    PROBES,
    BenchError,
    Run,
    dbsize,
    machine,
    pipe_load,
    redis_benchmark,
    refuses,
    rss_kb,
    set_stream,
)
from tests.servers import ServerProcess, start_gossipkv, start_redis

RESULTS = Path(__file__).resolve().parent / "results"
TESTS = ("set", "get", "incr", "mset")
PIPELINES = (1, 16)
CLIENTS = 50
KEYSPACE = 100_000
# MSET writes ten keys per request; fewer requests keep its share of the run in proportion.
REQUEST_WEIGHT = {"mset": 0.2}


@dataclass(frozen=True)
class Target:
    bar: float  # the acceptance bar of the current milestone
    goal: float  # the product target of DESIGN.md


THROUGHPUT_TARGETS = {
    ("set", 1): Target(0.6, 0.7),
    ("get", 1): Target(0.6, 0.7),
    ("set", 16): Target(0.5, 0.6),
    ("get", 16): Target(0.5, 0.6),
}
MEMORY_BAR = 3.0  # gossipkv's RSS at most this many times redis-server's, same keys loaded
# The OS picks the cluster port: the default, client port + 10000, may be taken.
GOSSIPKV_ARGS = ("--log-level", "warning", "--cluster-port", "0")


@dataclass(frozen=True)
class Settings:
    quick: bool
    requests: dict[int, int]  # per pipeline depth, before REQUEST_WEIGHT
    rounds: int
    memory_keys: int

    def requests_for(self, test: str, pipeline: int) -> int:
        return int(self.requests[pipeline] * REQUEST_WEIGHT.get(test, 1.0))


FULL = Settings(False, {1: 200_000, 16: 1_000_000}, rounds=3, memory_keys=1_000_000)
QUICK = Settings(True, {1: 50_000, 16: 300_000}, rounds=1, memory_keys=100_000)


@dataclass
class Row:
    test: str
    pipeline: int
    requests: int
    redis: list[Run] = field(default_factory=list)
    gossipkv: list[Run] = field(default_factory=list)
    unsupported: str = ""  # gossipkv does not implement the test's command yet
    error: str = ""  # a measurement failed

    @property
    def target(self) -> Target | None:
        return THROUGHPUT_TARGETS.get((self.test, self.pipeline))

    def rps(self, runs: list[Run]) -> float | None:
        return statistics.median(r.rps for r in runs) if runs else None

    @property
    def ratio(self) -> float | None:
        """The median of the rounds' ratios: each round runs both servers back to back, so a
        pair shares the machine's state of the moment and drift cancels out of its ratio."""
        pairs = [g.rps / r.rps for r, g in zip(self.redis, self.gossipkv, strict=False) if r.rps]
        return statistics.median(pairs) if pairs else None

    def status(self) -> str:
        if self.unsupported or self.error:
            return "n/a"
        t, r = self.target, self.ratio
        if t is None or r is None:
            return "-"
        return "pass" if r >= t.bar else "miss"

    def to_json(self) -> dict[str, Any]:
        t = self.target
        return {
            "test": self.test.upper(),
            "pipeline": self.pipeline,
            "requests": self.requests,
            "redis_rps": self.rps(self.redis),
            "gossipkv_rps": self.rps(self.gossipkv),
            "ratio": _round(self.ratio),
            "bar": t.bar if t else None,
            "goal": t.goal if t else None,
            "status": self.status(),
            "meets_goal": (self.ratio >= t.goal) if t and self.ratio is not None else None,
            "runs": {"redis": [asdict(r) for r in self.redis],
                     "gossipkv": [asdict(r) for r in self.gossipkv]},
            "unsupported": self.unsupported or None,
            "error": self.error or None,
        }


@dataclass
class Memory:
    keys: int
    empty_kb: dict[str, int] = field(default_factory=dict)  # by server: "redis", "gossipkv"
    loaded_kb: dict[str, int] = field(default_factory=dict)
    load_s: dict[str, float] = field(default_factory=dict)
    error: str = ""

    @property
    def ratio(self) -> float | None:
        ours, theirs = self.loaded_kb.get("gossipkv"), self.loaded_kb.get("redis")
        return ours / theirs if ours and theirs else None

    def status(self) -> str:
        if self.error or self.ratio is None:
            return "n/a"
        return "pass" if self.ratio <= MEMORY_BAR else "miss"

    def to_json(self) -> dict[str, Any]:
        per_key = {
            name: round((kb - self.empty_kb[name]) * 1024 / self.keys, 1)
            for name, kb in self.loaded_kb.items()
        }
        return {
            "keys": self.keys,
            "rss_kb": self.loaded_kb,
            "empty_rss_kb": self.empty_kb,
            "bytes_per_key": per_key,
            "load_seconds": self.load_s,
            "ratio": _round(self.ratio),
            "bar": MEMORY_BAR,
            "status": self.status(),
            "error": self.error or None,
        }


def _round(x: float | None) -> float | None:
    return round(x, 3) if x is not None else None


@contextmanager
def servers(tmp: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """A fresh redis-server and a fresh gossipkv node, both stopped on the way out."""
    ref = start_redis(tmp)
    try:
        node = start_gossipkv(tmp, *GOSSIPKV_ARGS)
    except BaseException:
        ref.stop()
        raise
    try:
        yield ref, node
    finally:
        node.stop()
        ref.stop()


def throughput(tmp: Path, settings: Settings, console: Console) -> list[Row]:
    rows: list[Row] = []
    with servers(tmp) as (ref, node):
        missing = {t: refuses(node.port, *PROBES[t]) for t in TESTS}
        for pipeline in PIPELINES:
            for test in TESTS:
                row = Row(test, pipeline, settings.requests_for(test, pipeline))
                rows.append(row)
                if missing[test]:
                    row.unsupported = f"gossipkv replies {missing[test]!r}"
                    continue
                for n in range(settings.rounds):
                    console.log(f"{test.upper()} -P {pipeline}: round {n + 1}/{settings.rounds}")
                    try:
                        for server, runs in ((ref, row.redis), (node, row.gossipkv)):
                            runs.append(redis_benchmark(
                                server.port, test, pipeline, row.requests, CLIENTS, KEYSPACE
                            ))
                    except BenchError as e:
                        row.error = str(e)
                        break
    return rows


# The replication backlog keeps this node's recent writes for peers that reconnect; bounded at
# 1M writes by default, it holds every key of the load. A second node with the smallest backlog
# shows how much of the figure is the keyspace itself.
LEAN = "gossipkv, no replication backlog"
NO_BACKLOG = "[cluster]\nbacklog_ops = 1\nbacklog_bytes = 1\n"


def memory(tmp: Path, keys: int, console: Console) -> Memory:
    result = Memory(keys)
    stream = set_stream(keys)

    def load(name: str, server: ServerProcess) -> None:
        result.empty_kb[name] = rss_kb(server.proc.pid)
        console.log(f"loading {keys:,} keys into {name}")
        start = time.monotonic()
        pipe_load(server.port, stream, keys)
        result.load_s[name] = round(time.monotonic() - start, 2)
        size = dbsize(server.port)
        if size != keys:
            raise BenchError(f"{name}: DBSIZE is {size} after loading {keys} keys")
        result.loaded_kb[name] = rss_kb(server.proc.pid)

    try:
        with servers(tmp) as (ref, node):
            load("redis", ref)
            load("gossipkv", node)
        config = tmp / "no-backlog.toml"
        config.write_text(NO_BACKLOG)
        lean = start_gossipkv(tmp, *GOSSIPKV_ARGS, "--config", str(config))
        try:
            load(LEAN, lean)
        finally:
            lean.stop()
    except BenchError as e:
        result.error = str(e)
    return result


def report(
    console: Console, info: dict[str, Any], rows: list[Row], mem: Memory | None,
    settings: Settings,
) -> None:
    table = Table(title="gossipkv vs redis-server (redis-benchmark, 50 clients, -r 100000)")
    table.add_column("test")
    for col in ("pipeline", "redis rps", "gossipkv rps", "ratio"):
        table.add_column(col, justify="right")
    table.add_column("target (goal)")
    table.add_column("status")
    for row in rows:
        t = row.target
        table.add_row(
            row.test.upper(), str(row.pipeline), _rps(row.rps(row.redis)),
            _rps(row.rps(row.gossipkv)), _ratio(row.ratio),
            f">= {t.bar}x ({t.goal}x)" if t else "", _styled(row.status()),
        )
    if mem is not None:
        table.add_section()
        table.add_row(
            f"RSS, {mem.keys:,} keys", "", _mb(mem.loaded_kb.get("redis")),
            _mb(mem.loaded_kb.get("gossipkv")),
            _ratio(mem.ratio), f"<= {MEMORY_BAR}x", _styled(mem.status()),
        )
        lean = mem.loaded_kb.get(LEAN)
        if lean is not None:
            theirs = mem.loaded_kb.get("redis")
            table.add_row(
                "  without the repl. backlog", "", "", _mb(lean),
                _ratio(lean / theirs if theirs else None), "", "",
            )
    console.print(table)
    for row in rows:
        if row.unsupported or row.error:
            why = row.unsupported or row.error
            console.print(f"[yellow]{row.test.upper()} -P {row.pipeline}:[/] {escape(why)}")
    if mem is not None and mem.error:
        console.print(f"[yellow]memory:[/] {escape(mem.error)}")
    rounds = f"; ratios are the median of {settings.rounds} paired round(s)" if rows else ""
    console.print(
        f"{info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"redis-server {info['redis']}, gossipkv {info['gossipkv']} at {info['commit']}{rounds}"
    )
    load = max(info["loadavg_start"], info["loadavg_end"])
    if load > 0.5 * (info["nproc"] or 1):
        console.print(
            f"[yellow]load average reached {load:.2f} on {info['nproc']} CPUs: other work "
            "competed for the machine, so these figures are noisy[/]"
        )


def _rps(x: float | None) -> str:
    return f"{x:,.0f}" if x is not None else "-"


def _ratio(x: float | None) -> str:
    return f"{x:.2f}x" if x is not None else "-"


def _mb(kb: int | None) -> str:
    return f"{kb / 1024:,.1f} MiB" if kb else "-"


def _styled(status: str) -> str:
    colour = {"pass": "green", "miss": "red"}.get(status)
    return f"[{colour}]{status}[/]" if colour else status


def save(document: dict[str, Any], directory: Path) -> Path:
    """Write the timestamped file and latest.json, each through a rename so readers never see
    half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2) + "\n"
    stamp = document["timestamp"].replace(":", "").replace("-", "")
    path = directory / f"{stamp}{'-quick' if document['settings']['quick'] else ''}.json"
    for target in (path, directory / "latest.json"):
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests, one round, 100k keys")
    parser.add_argument("--rounds", type=int, help="rounds per test (median counts)")
    parser.add_argument("--memory-keys", type=int, help="keys loaded for the memory figure")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory figure")
    parser.add_argument(
        "--no-cluster", action="store_true", help="skip the cluster figures (bench/cluster.py)"
    )
    parser.add_argument("--no-throughput", action="store_true", help="skip redis-benchmark")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON results")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    settings = Settings(
        base.quick, base.requests, args.rounds or base.rounds, args.memory_keys or base.memory_keys
    )
    console = Console()
    if not console.is_terminal:  # keep the table on one line per row in logs and pipes
        console = Console(width=120)
    info = machine()
    info["loadavg_start"] = os.getloadavg()[0]
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="gossipkv-bench-") as tmpdir:
        tmp = Path(tmpdir)
        rows = [] if args.no_throughput else throughput(tmp, settings, console)
        mem = None if args.no_memory else memory(tmp, settings.memory_keys, console)
        cluster = None if args.no_cluster else bench.cluster.run_all(
            tmp / "cluster", bench.cluster.QUICK if settings.quick else bench.cluster.FULL, console
        )
    info["loadavg_end"] = os.getloadavg()[0]
    report(console, info, rows, mem, settings)
    if cluster is not None:
        bench.cluster.report(console, cluster)
    document = {
        "timestamp": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round((datetime.now(UTC) - started).total_seconds(), 1),
        "machine": info,
        "settings": {
            "quick": settings.quick,
            "clients": CLIENTS,
            "keyspace": KEYSPACE,
            "rounds": settings.rounds,
            "requests": {str(p): n for p, n in settings.requests.items()},
            "request_weight": REQUEST_WEIGHT,
            "memory_keys": None if mem is None else settings.memory_keys,
        },
        "throughput": [row.to_json() for row in rows],
        "memory": mem.to_json() if mem is not None else None,
        "cluster": cluster,
    }
    path = save(document, args.out)
    console.print(f"results: {path} (and {args.out / 'latest.json'})")
    failed = any(row.error for row in rows) or (mem is not None and bool(mem.error))
    failed = failed or (cluster is not None and bench.cluster.failed(cluster))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
