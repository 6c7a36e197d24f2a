"""``make bench``: redis-server and gossipkv side by side under the same load, as ratios.

Throughput: redis-benchmark (50 clients, keys drawn from the same 100k-key space) runs SET, GET,
INCR and MSET unpipelined and pipelined 16 deep, alternating between the two servers test by
test so that drift in the machine's speed hits both alike; the median of the rounds' ratios
counts. With two CPUs or more, both servers run on the first and redis-benchmark on the
second (bench/tools.py), so that the load generator never competes with the server under test.
The CPU other processes used meanwhile is recorded: figures taken on a busy machine say little.
Data types: redis-benchmark's LPUSH, RPUSH, LPOP, SADD, HSET, SPOP, ZADD, ZPOPMIN and LRANGE_100,
in redis-benchmark's own order, because each pop reads what the pushes and adds
before it left (LRANGE_100 brings its own LPUSH fill, as redis-benchmark does). Every round starts
from a fresh pair of servers and runs the tests alternately on the two, so both hold the same
data before each test. Members are drawn from 100M (-r) so the collections grow with the
requests and every pop finds an element. A gossipkv run taking 20 times redis-server's time (and
at least 10 s) is stopped, its rate read from INFO commandstats or, where gossipkv keeps no
count, shown as a ceiling; the round then goes on from a fresh pair.
Memory: fresh servers, the same ``redis-cli --pipe`` stream of ``SET key:N val:N`` into each,
DBSIZE checked, then resident size from /proc; once more for a gossipkv node whose replication
backlog is as small as it goes, to show the keyspace's own share. Per element of a data type:
fresh servers per type, 1M members added to one set, hash and sorted set 100 per command, the
count checked, resident size before and after. Figures go to bench/results/ as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
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
    COLLECTIONS,
    PROBES,
    BenchError,
    Collection,
    OtherWork,
    Run,
    call,
    dbsize,
    machine,
    pin_server,
    pipe_load,
    redis_benchmark,
    refuses,
    rss_kb,
    set_stream,
)
from tests.servers import ServerProcess, start_gossipkv, start_redis

RESULTS = Path(__file__).resolve().parent / "results"
TESTS = ("set", "get", "incr", "mset")
# redis-benchmark's order: each test finds the data the ones before it left.
TYPE_TESTS = ("lpush", "rpush", "lpop", "sadd", "hset", "spop", "zadd", "zpopmin", "lrange_100")
# What a type test reads: measured only when the tests filling its key ran in full before it.
# LRANGE_100 needs nothing: redis-benchmark fills its list first.
NEEDS = {"lpop": ("lpush",), "spop": ("sadd",), "zpopmin": ("zadd",)}
PIPELINES = (1, 16)
CLIENTS = 50
KEYSPACE = 100_000
MEMBER_SPACE = 100_000_000  # -r of the type tests: few repeats, so pops always find a member
# MSET writes ten keys per request, LRANGE_100 reads a hundred elements and comes with its own
# LPUSH fill: fewer requests keep their share of the run in proportion.
REQUEST_WEIGHT = {"mset": 0.2, "lrange_100": 0.25}
# A gossipkv run is stopped once it takes this many times redis-server's time for the same test
# (and at least STOP_FLOOR_S): it misses any bar by then, and must not hold up the whole run.
STOP_FACTOR = 20.0
STOP_FLOOR_S = 10.0
TYPE_BATCH = 100  # elements per SADD/HSET/ZADD in the memory load


@dataclass(frozen=True)
class Target:
    bar: float  # the acceptance bar of the current milestone
    goal: float | None  # the product target of DESIGN.md, where it names one


THROUGHPUT_TARGETS = {
    ("set", 1): Target(0.6, 0.7),
    ("get", 1): Target(0.6, 0.7),
    ("set", 16): Target(0.5, 0.6),
    ("get", 16): Target(0.5, 0.6),
} | {(test, p): Target(0.5, None) for test in TYPE_TESTS for p in PIPELINES}
# Other processes' average CPU use past which the report calls its figures noisy.
OTHER_WORK_NOISY = 0.25
MEMORY_BAR = 3.0  # gossipkv's RSS at most this many times redis-server's, same keys loaded
# The OS picks the cluster port: the default, client port + 10000, may be taken.
GOSSIPKV_ARGS = ("--log-level", "warning", "--cluster-port", "0")


@dataclass(frozen=True)
class Settings:
    quick: bool
    requests: dict[int, int]  # per pipeline depth, before REQUEST_WEIGHT
    type_requests: dict[int, int]  # the same for the data-type tests
    rounds: int
    memory_keys: int
    type_elements: int  # members per collection for memory per element; 0 skips it
    load_limit_s: float  # per redis-cli --pipe load of a collection

    def requests_for(self, test: str, pipeline: int) -> int:
        base = self.type_requests if test in TYPE_TESTS else self.requests
        return int(base[pipeline] * REQUEST_WEIGHT.get(test, 1.0))


FULL = Settings(
    False, {1: 200_000, 16: 1_000_000}, {1: 100_000, 16: 300_000}, rounds=3,
    memory_keys=1_000_000, type_elements=1_000_000, load_limit_s=120,
)
QUICK = Settings(
    True, {1: 50_000, 16: 300_000}, {1: 20_000, 16: 100_000}, rounds=1,
    memory_keys=100_000, type_elements=100_000, load_limit_s=60,
)


@dataclass
class Row:
    test: str
    pipeline: int
    requests: int
    redis: list[Run] = field(default_factory=list)
    gossipkv: list[Run] = field(default_factory=list)
    unsupported: str = ""  # gossipkv does not implement the test's command yet
    error: str = ""  # a measurement failed
    stopped: str = ""  # gossipkv overstayed its time limit: one round, rate from commandstats
    skipped: str = ""  # not measured: a test it reads the data of was not measured in full

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

    @property
    def ceiling(self) -> bool:
        """Whether a gossipkv figure is only an upper bound (a stopped run it could not count)."""
        return any(g.stopped == "ceiling" for g in self.gossipkv)

    @property
    def measured(self) -> bool:
        """Whether later rounds run this test again."""
        return not (self.unsupported or self.error or self.stopped or self.skipped)

    @property
    def note(self) -> str:
        return self.unsupported or self.error or self.stopped or self.skipped

    def status(self) -> str:
        if self.unsupported or self.error or (self.skipped and not self.gossipkv):
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
            "at_most": self.ceiling,  # the gossipkv rate and the ratio are upper bounds
            "bar": t.bar if t else None,
            "goal": t.goal if t else None,
            "status": self.status(),
            "meets_goal": (
                self.ratio >= t.goal if t and t.goal is not None and self.ratio is not None
                else None
            ),
            "runs": {"redis": [_run_json(r) for r in self.redis],
                     "gossipkv": [_run_json(r) for r in self.gossipkv]},
            "unsupported": self.unsupported or None,
            "error": self.error or None,
            "stopped": self.stopped or None,
            "skipped": self.skipped or None,
        }


def _run_json(run: Run) -> dict[str, Any]:
    """A run as JSON: the unknown latencies of a stopped run become null, not NaN."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v
            for k, v in asdict(run).items()}


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


@dataclass
class PerElement:
    """Memory per element of one collection holding ``elements`` members under one key."""

    collection: str
    command: str
    elements: int
    empty_kb: dict[str, int] = field(default_factory=dict)  # by server: "redis", "gossipkv"
    loaded_kb: dict[str, int] = field(default_factory=dict)
    load_s: dict[str, float] = field(default_factory=dict)
    unsupported: str = ""
    error: str = ""

    def bytes_per_element(self, name: str) -> float | None:
        if name not in self.loaded_kb:
            return None
        return (self.loaded_kb[name] - self.empty_kb[name]) * 1024 / self.elements

    @property
    def ratio(self) -> float | None:
        ours, theirs = self.bytes_per_element("gossipkv"), self.bytes_per_element("redis")
        return ours / theirs if ours is not None and theirs else None

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "command": self.command,
            "elements": self.elements,
            "per_command": TYPE_BATCH,
            "rss_kb": self.loaded_kb,
            "empty_rss_kb": self.empty_kb,
            "bytes_per_element": {
                name: round(b, 1) for name in self.loaded_kb
                if (b := self.bytes_per_element(name)) is not None
            },
            "load_seconds": self.load_s,
            "ratio": _round(self.ratio),
            "unsupported": self.unsupported or None,
            "error": self.error or None,
        }


def _round(x: float | None) -> float | None:
    return round(x, 3) if x is not None else None


def start_pair(tmp: Path) -> tuple[ServerProcess, ServerProcess]:
    """A fresh redis-server and a fresh gossipkv node."""
    ref = start_redis(tmp)
    try:
        node = start_gossipkv(tmp, *GOSSIPKV_ARGS)
    except BaseException:
        ref.stop()
        raise
    pin_server(ref.proc.pid)
    pin_server(node.proc.pid)
    return ref, node


@contextmanager
def servers(tmp: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """A fresh pair, both stopped on the way out."""
    ref, node = start_pair(tmp)
    try:
        yield ref, node
    finally:
        node.stop()
        ref.stop()


def throughput(
    tmp: Path, settings: Settings, types: bool, console: Console, strings: bool = True
) -> list[Row]:
    rows: list[Row] = []
    with servers(tmp) if strings else _no_servers() as (ref, node):
        missing = {t: refuses(node.port, *PROBES[t]) for t in TESTS} if strings else {}
        for pipeline in PIPELINES if strings else ():
            for test in TESTS:
                row = Row(test, pipeline, settings.requests_for(test, pipeline))
                rows.append(row)
                if missing[test]:
                    row.unsupported = f"gossipkv replies {missing[test]!r}"
                    continue
                for n in range(settings.rounds):
                    console.log(f"{test.upper()} -P {pipeline}: round {n + 1}/{settings.rounds}")
                    if not pair(ref, node, row, KEYSPACE):
                        break
    if types:
        for pipeline in PIPELINES:
            rows.extend(type_throughput(tmp, pipeline, settings, console))
    return rows


@contextmanager
def _no_servers() -> Iterator[tuple[Any, Any]]:
    """No string tests (--only-types): nothing to start."""
    yield None, None


def pair(
    ref: ServerProcess, node: ServerProcess, row: Row, keyspace: int, limited: bool = False
) -> bool:
    """One round of one test: redis-server, then gossipkv, ``limited`` to a time drawn from
    redis-server's time. False when the test should not run again."""
    try:
        theirs = redis_benchmark(
            ref.port, row.test, row.pipeline, row.requests, CLIENTS, keyspace
        )
        limit = max(STOP_FLOOR_S, STOP_FACTOR * theirs.seconds) if limited else None
        ours = redis_benchmark(
            node.port, row.test, row.pipeline, row.requests, CLIENTS, keyspace, limit
        )
    except BenchError as e:
        row.error = str(e)
        return False
    row.redis.append(theirs)
    row.gossipkv.append(ours)
    if ours.stopped:
        how = (
            "its rate is its INFO commandstats count over that time" if ours.stopped == "counted"
            else f"its INFO commandstats keep no count, so its rate is a ceiling: {row.requests:,} "
            "requests not done in that time"
        )
        row.stopped = (
            f"gossipkv stopped at its time limit, after {ours.seconds:.1f} s (redis-server took "
            f"{theirs.seconds:.2f} s), and not run again; {how}"
        )
        return False
    return True


def type_throughput(tmp: Path, pipeline: int, settings: Settings, console: Console) -> list[Row]:
    """The data-type tests at one pipeline depth, rounds outermost: each round starts from a
    fresh pair of servers and runs the whole sequence, so a pop meets what the adds before it
    left. A test that does not run in full (stopped, failed) may leave gossipkv busy or broken:
    the round goes on from a fresh pair, without the tests reading what the old pair held."""
    rows = {t: Row(t, pipeline, settings.requests_for(t, pipeline)) for t in TYPE_TESTS}
    with servers(tmp) as (ref, node):
        for test, row in rows.items():
            refused = refuses(node.port, *PROBES[test])
            if refused:
                row.unsupported = f"gossipkv replies {refused!r}"
    for n in range(settings.rounds):
        if not any(row.measured for row in rows.values()):
            break
        ref, node = start_pair(tmp)
        try:
            done: set[str] = set()  # the tests this pair ran in full on both servers
            for test, row in rows.items():
                lacking = [t for t in NEEDS.get(test, ()) if t not in done]
                if lacking and row.measured:
                    row.skipped = (
                        f"reads the data of {', '.join(t.upper() for t in lacking)}, "
                        "which did not run in full"
                    )
                if not row.measured:
                    continue
                console.log(f"{test.upper()} -P {pipeline}: round {n + 1}/{settings.rounds}")
                if pair(ref, node, row, MEMBER_SPACE, limited=True):
                    done.add(test)
                    continue
                node.stop(signal.SIGKILL)  # a busy node would take its time over SIGTERM
                ref.stop()
                ref, node = start_pair(tmp)
                done.clear()
        finally:
            node.stop()
            ref.stop()
    return list(rows.values())


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


def per_element(
    tmp: Path, elements: int, time_limit: float, console: Console
) -> list[PerElement]:
    """Each collection on fresh servers: resident size before and after the same load."""
    results = []
    for coll in COLLECTIONS:
        result = PerElement(coll.name, coll.add.decode(), elements)
        results.append(result)
        try:
            with servers(tmp) as (ref, node):
                refused = refuses(node.port, coll.add.decode(), "bench:probe", *(
                    a.decode() for a in coll.element(0)
                ))
                if refused:
                    result.unsupported = f"gossipkv replies {refused!r}"
                    continue
                stream = coll.stream(elements, TYPE_BATCH)
                for name, server in (("redis", ref), ("gossipkv", node)):
                    load_collection(name, server, coll, stream, result, time_limit, console)
        except BenchError as e:
            result.error = str(e)
    return results


def load_collection(
    name: str, server: ServerProcess, coll: Collection, stream: bytes, result: PerElement,
    time_limit: float, console: Console,
) -> None:
    result.empty_kb[name] = rss_kb(server.proc.pid)
    console.log(f"adding {result.elements:,} members to one {coll.name} in {name}")
    start = time.monotonic()
    pipe_load(server.port, stream, coll.command_count(result.elements, TYPE_BATCH), time_limit)
    result.load_s[name] = round(time.monotonic() - start, 2)
    size = call(server.port, coll.count, coll.key)
    if size != result.elements:
        raise BenchError(
            f"{name}: {coll.count.decode()} is {size!r} after adding {result.elements} members"
        )
    result.loaded_kb[name] = rss_kb(server.proc.pid)


def report(
    console: Console, info: dict[str, Any], rows: list[Row], mem: Memory | None,
    elements: list[PerElement], settings: Settings,
) -> None:
    table = Table(title=(
        f"gossipkv vs redis-server (redis-benchmark, {CLIENTS} clients, -r {KEYSPACE}; "
        f"data types -r {MEMBER_SPACE})"
    ))
    table.add_column("test")
    for col in ("pipeline", "redis rps", "gossipkv rps", "ratio"):
        table.add_column(col, justify="right")
    table.add_column("target (goal)")
    table.add_column("status")
    for i, row in enumerate(rows):
        if i and (row.test in TYPE_TESTS) != (rows[i - 1].test in TYPE_TESTS):
            table.add_section()
        t = row.target
        goal = f" ({t.goal}x)" if t and t.goal is not None else ""
        below = "< " if row.ceiling else ""
        table.add_row(
            row.test.upper(), str(row.pipeline), _rps(row.rps(row.redis)),
            below + _rps(row.rps(row.gossipkv)), below + _ratio(row.ratio),
            f">= {t.bar}x{goal}" if t else "", _styled(row.status()),
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
    if elements:
        table.add_section()
    for e in elements:
        table.add_row(
            f"bytes per member, {e.collection} of {e.elements:,}", "",
            _bytes(e.bytes_per_element("redis")), _bytes(e.bytes_per_element("gossipkv")),
            _ratio(e.ratio), "", "n/a" if e.unsupported or e.error else "-",
        )
    console.print(table)
    for row in rows:
        if row.note:
            console.print(f"[yellow]{row.test.upper()} -P {row.pipeline}:[/] {escape(row.note)}")
    if mem is not None and mem.error:
        console.print(f"[yellow]memory:[/] {escape(mem.error)}")
    for e in elements:
        if e.unsupported or e.error:
            console.print(f"[yellow]{e.collection} memory:[/] {escape(e.unsupported or e.error)}")
    rounds = f"; ratios are the median of {settings.rounds} paired round(s)" if rows else ""
    console.print(
        f"{info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"redis-server {info['redis']}, gossipkv {info['gossipkv']} at {info['commit']}{rounds}"
    )
    console.print(f"CPU placement: {info['pinned']}")
    other = info.get("other_cpus")
    if isinstance(other, float) and other > OTHER_WORK_NOISY:
        console.print(
            f"[yellow]other processes kept {other:.2f} of {info['nproc']} CPUs busy on average "
            "while this ran, so these figures are noisy[/]"
        )


def _rps(x: float | None) -> str:
    return f"{x:,.0f}" if x is not None else "-"


def _ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.3f}x"


def _bytes(x: float | None) -> str:
    return f"{x:,.1f} B" if x is not None else "-"


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
    parser.add_argument(
        "--quick", action="store_true", help="fewer requests, one round, 100k keys and members"
    )
    parser.add_argument("--rounds", type=int, help="rounds per test (median counts)")
    parser.add_argument("--memory-keys", type=int, help="keys loaded for the memory figure")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory figures")
    parser.add_argument(
        "--no-types", action="store_true",
        help="skip the data-type figures (their redis-benchmark tests and memory per element)",
    )
    parser.add_argument(
        "--type-elements", type=int,
        help="members per set, hash and sorted set for memory per element (0 skips it)",
    )
    parser.add_argument(
        "--no-cluster", action="store_true", help="skip the cluster figures (bench/cluster.py)"
    )
    parser.add_argument("--no-throughput", action="store_true", help="skip redis-benchmark")
    parser.add_argument(
        "--only-types", action="store_true",
        help="only the data-type redis-benchmark tests (no strings, memory or cluster figures)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON results")
    args = parser.parse_args(argv)
    if args.only_types:
        args.no_memory = args.no_cluster = True
        args.no_types = False
    base = QUICK if args.quick else FULL
    settings = Settings(
        base.quick, base.requests, base.type_requests, args.rounds or base.rounds,
        args.memory_keys or base.memory_keys,
        base.type_elements if args.type_elements is None else args.type_elements,
        base.load_limit_s,
    )
    types = not args.no_types
    console = Console()
    if not console.is_terminal:  # keep the table on one line per row in logs and pipes
        console = Console(width=120)
    info = machine()
    info["loadavg_start"] = os.getloadavg()[0]
    other = OtherWork()
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="gossipkv-bench-") as tmpdir:
        tmp = Path(tmpdir)
        rows = [] if args.no_throughput else throughput(
            tmp, settings, types, console, strings=not args.only_types
        )
        mem = None if args.no_memory else memory(tmp, settings.memory_keys, console)
        elements = (
            per_element(tmp, settings.type_elements, settings.load_limit_s, console)
            if types and not args.no_memory and settings.type_elements > 0 else []
        )
        cluster = None if args.no_cluster else bench.cluster.run_all(
            tmp / "cluster", bench.cluster.QUICK if settings.quick else bench.cluster.FULL, console
        )
    info["loadavg_end"] = os.getloadavg()[0]
    info["other_cpus"] = other.cpus()
    report(console, info, rows, mem, elements, settings)
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
            "member_space": MEMBER_SPACE,
            "rounds": settings.rounds,
            "requests": {str(p): n for p, n in settings.requests.items()},
            "type_requests": {str(p): n for p, n in settings.type_requests.items()},
            "request_weight": REQUEST_WEIGHT,
            "stop_factor": STOP_FACTOR,
            "memory_keys": None if mem is None else settings.memory_keys,
            "type_elements": settings.type_elements if elements else None,
        },
        "throughput": [row.to_json() for row in rows],
        "memory": mem.to_json() if mem is not None else None,
        "memory_per_element": [e.to_json() for e in elements],
        "cluster": cluster,
    }
    path = save(document, args.out)
    console.print(f"results: {path} (and {args.out / 'latest.json'})")
    failed = any(row.error for row in rows) or (mem is not None and bool(mem.error))
    failed = failed or any(e.error for e in elements)
    failed = failed or (cluster is not None and bench.cluster.failed(cluster))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
