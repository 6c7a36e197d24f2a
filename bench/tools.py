"""What the benchmark measures with: redis-benchmark, a redis-cli --pipe loader, RSS, machine facts.

Every figure comes from a real process and the stock Redis tools, so redis-server and gossipkv are
measured the same way and only the ratio between them matters.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import gossipkv

# redis-benchmark -t names, and how its CSV spells each test's row.
ROW_NAMES = {
    "set": "SET", "get": "GET", "incr": "INCR", "mset": "MSET (10 keys)",
    "lpush": "LPUSH", "rpush": "RPUSH", "lpop": "LPOP", "sadd": "SADD", "spop": "SPOP",
    "hset": "HSET", "zadd": "ZADD", "zpopmin": "ZPOPMIN",
    "lrange_100": "LRANGE_100 (first 100 elements)",
}

# The command each test sends, as INFO commandstats names it.
COMMANDS = {test: test for test in ROW_NAMES} | {"lrange_100": "lrange"}

# One command per test, sent before benchmarking: redis-benchmark stops at the first error
# reply, so a command a server lacks would otherwise show up as a silent, empty row.
PROBES: dict[str, tuple[str, ...]] = {
    "set": ("SET", "bench:probe", "xxx"),
    "get": ("GET", "bench:probe"),
    "incr": ("INCR", "bench:probe:counter"),
    "mset": ("MSET", "bench:probe:a", "1", "bench:probe:b", "2"),
    "lpush": ("LPUSH", "bench:probe:list", "xxx"),
    "rpush": ("RPUSH", "bench:probe:list", "xxx"),
    "lpop": ("LPOP", "bench:probe:list"),
    "sadd": ("SADD", "bench:probe:set", "element"),
    "spop": ("SPOP", "bench:probe:set"),
    "hset": ("HSET", "bench:probe:hash", "element", "xxx"),
    "zadd": ("ZADD", "bench:probe:zset", "1", "element"),
    "zpopmin": ("ZPOPMIN", "bench:probe:zset"),
    "lrange_100": ("LRANGE", "bench:probe:list", "0", "99"),
}


class BenchError(Exception):
    """A measurement could not be taken; the message says which and why."""


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"{name} is not installed (make system-deps installs it)")
    return path


def call(port: int, *command: str | bytes, timeout: float = 60) -> object:
    """One command on a connection of its own; the reply as redis-py parses it. Error replies
    raise redis.ResponseError; a server that does not answer in time raises BenchError, at
    once: redis-py's own retries would multiply the wait on a busy server."""
    client = redis.Redis(
        port=port, protocol=2, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        return client.execute_command(*command)  # type: ignore[no-untyped-call]
    except (redis.ConnectionError, redis.TimeoutError) as e:
        name = command[0].decode() if isinstance(command[0], bytes) else command[0]
        raise BenchError(f"{name} on port {port}: {e}") from e
    finally:
        client.close()


def refuses(port: int, *command: str) -> str | None:
    """None when the server runs ``command``, else the error it replied with."""
    try:
        call(port, *command, timeout=10)
    except redis.ResponseError as e:
        return str(e)
    return None


def command_calls(port: int, command: str, timeout: float = 5) -> int | None:
    """How many times the server has run ``command``, from INFO commandstats; None if it
    does not say in time (a server that keeps no count lists no such line)."""
    try:
        stats = call(port, "INFO", "commandstats", timeout=timeout)
    except (redis.ResponseError, BenchError):
        return None
    entry = stats.get(f"cmdstat_{command}") if isinstance(stats, dict) else None
    calls = entry.get("calls") if isinstance(entry, dict) else None
    return int(calls) if calls is not None else None


@dataclass(frozen=True)
class Run:
    """One redis-benchmark invocation's outcome for one test.

    A run that overstayed its time limit is stopped and its latencies are unknown (NaN). Its
    rate is then "counted": the server's own count of the test's command (INFO commandstats)
    over the whole invocation; or, when the server keeps no count, a "ceiling": the requests
    asked for over the time it had, which it did not reach.
    """

    rps: float
    p50_ms: float
    p99_ms: float
    seconds: float = 0.0  # wall time of the whole invocation
    stopped: Literal["", "counted", "ceiling"] = ""


# With two CPUs or more, servers run on the first and redis-benchmark on the second, so that
# the load generator never competes with the server under test for a CPU.
SERVER_CPUS = {0}
LOAD_CPUS = {1}


def pinned() -> bool:
    return (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")


def pin_server(pid: int) -> None:
    """Keep a server process (and its threads) on the servers' CPU."""
    if pinned():
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.sched_setaffinity(int(task.name), SERVER_CPUS)


def _on_load_cpu() -> None:
    os.sched_setaffinity(0, LOAD_CPUS)


def redis_benchmark(
    port: int, test: str, pipeline: int, requests: int, clients: int, keyspace: int,
    time_limit: float | None = None,
) -> Run:
    """Run one test of redis-benchmark against ``port`` and read its CSV row; past
    ``time_limit`` seconds, stop it and measure what it got done. A stopped server may still
    be working off the requests it had read: start the next test on a fresh one."""
    args = [
        tool("redis-benchmark"), "-h", "127.0.0.1", "-p", str(port), "-c", str(clients),
        "-n", str(requests), "-r", str(keyspace), "-P", str(pipeline), "-t", test, "--csv",
    ]
    before = command_calls(port, COMMANDS[test]) if time_limit is not None else None
    start = time.monotonic()
    try:
        proc = subprocess.run(
            args, capture_output=True, text=True, timeout=time_limit or 900, check=False,
            preexec_fn=_on_load_cpu if pinned() else None,
        )
    except subprocess.TimeoutExpired:
        seconds = time.monotonic() - start
        after = command_calls(port, COMMANDS[test])
        if after is None or before is None or after == before:
            # No count, or none that moved: a server that ran the command keeps no count.
            return Run(round(requests / seconds, 2), math.nan, math.nan, round(seconds, 2),
                       "ceiling")
        return Run(round((after - before) / seconds, 2), math.nan, math.nan, round(seconds, 2),
                   "counted")
    seconds = time.monotonic() - start
    row = _csv_row(proc.stdout, ROW_NAMES[test])
    if proc.returncode != 0 or row is None:
        why = (proc.stderr.strip().splitlines() or ["no result row"])[-1]
        raise BenchError(f"redis-benchmark {test} -P {pipeline} on port {port}: {why}")
    return Run(
        float(row["rps"]), float(row["p50_latency_ms"]), float(row["p99_latency_ms"]),
        round(seconds, 2),
    )


def _csv_row(text: str, name: str) -> dict[str, str] | None:
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("test") == name:
            return row
    return None


def set_stream(keys: int) -> bytes:
    """RESP for ``SET key:N val:N`` for every N < keys: the same bytes for both servers."""
    parts = []
    for n in range(keys):
        k = b"key:%d" % n
        v = b"val:%d" % n
        parts.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
    return b"".join(parts)


def resp(*args: bytes) -> bytes:
    """One command as RESP, as a client sends it."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


@dataclass(frozen=True)
class Collection:
    """A data type loaded one key deep for the memory-per-element figure."""

    name: str
    key: bytes
    add: bytes  # the command adding elements, many per call
    count: bytes  # the command counting them
    element: Callable[[int], tuple[bytes, ...]]  # the arguments adding element N

    def stream(self, elements: int, batch: int) -> bytes:
        """RESP adding ``elements`` elements to ``key``, ``batch`` per command: the same bytes
        for both servers."""
        parts = []
        for first in range(0, elements, batch):
            args = [self.add, self.key]
            for n in range(first, min(first + batch, elements)):
                args.extend(self.element(n))
            parts.append(resp(*args))
        return b"".join(parts)

    def command_count(self, elements: int, batch: int) -> int:
        return -(-elements // batch)


COLLECTIONS = (
    Collection("set", b"bench:set", b"SADD", b"SCARD", lambda n: (b"member:%d" % n,)),
    Collection(
        "hash", b"bench:hash", b"HSET", b"HLEN", lambda n: (b"field:%d" % n, b"value:%d" % n)
    ),
    Collection(
        "sorted set", b"bench:zset", b"ZADD", b"ZCARD", lambda n: (b"%d" % n, b"member:%d" % n)
    ),
)


def pipe_load(port: int, stream: bytes, expected: int, time_limit: float = 900) -> None:
    """Feed ``stream`` through ``redis-cli --pipe`` and check every reply arrived without error."""
    # redis-cli ends the stream with an ECHO and waits for it: fail now, not after the timeout.
    for command in (("ECHO", "bench"), ("DBSIZE",)):
        error = refuses(port, *command)
        if error:
            raise BenchError(f"port {port} cannot be loaded and counted: {error}")
    try:
        proc = subprocess.run(
            [tool("redis-cli"), "-h", "127.0.0.1", "-p", str(port), "--pipe",
             "--pipe-timeout", "60"],
            input=stream, capture_output=True, timeout=time_limit, check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise BenchError(
            f"redis-cli --pipe into port {port}: not done after {time_limit:.0f} s"
        ) from e
    out = proc.stdout.decode(errors="replace")
    m = re.search(r"errors: (\d+), replies: (\d+)", out)
    if proc.returncode != 0 or m is None or m.group(1) != "0" or int(m.group(2)) != expected:
        said = (proc.stderr.decode(errors="replace") + out).strip().splitlines()
        raise BenchError(f"redis-cli --pipe into port {port}: {' / '.join(said[-3:])}")


def dbsize(port: int) -> int:
    client = redis.Redis(port=port, protocol=2, socket_timeout=60)
    try:
        return int(client.dbsize())
    finally:
        client.close()


def rss_kb(pid: int) -> int:
    """Resident set size of a process, from /proc (what the kernel charges it)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


class OtherWork:
    """How much CPU processes other than this run's used while it ran, in CPUs on average.

    The load average cannot tell: the servers and redis-benchmark under test keep it near two by
    themselves. This counts the machine's busy time (/proc/stat, steal included: a neighbour on
    the host competes too) minus what this process and the children it waited for used.
    """

    def __init__(self) -> None:
        self._start = time.monotonic(), _machine_busy(), _own_cpu()

    def cpus(self) -> float | None:
        """Other processes' CPU use since construction, None where /proc/stat is missing."""
        wall0, busy0, own0 = self._start
        busy = _machine_busy()
        wall = time.monotonic() - wall0
        if busy is None or busy0 is None or wall <= 0:
            return None
        return max(0.0, (busy - busy0 - (_own_cpu() - own0)) / wall)


def _machine_busy() -> float | None:
    """Seconds every CPU together spent busy since boot (user, system, interrupts, steal)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields[:8]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    """CPU seconds of this process and of the children it has waited for (servers stopped,
    redis-benchmark runs finished)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def machine() -> dict[str, object]:
    """What a reader needs to compare two result files."""
    version = subprocess.run(
        [tool("redis-server"), "--version"], capture_output=True, text=True, check=False
    ).stdout
    m = re.search(r"v=(\S+)", version)
    try:
        loop = f"uvloop {metadata.version('uvloop')}"
    except metadata.PackageNotFoundError:
        loop = "asyncio"
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "redis": m.group(1) if m else version.strip(),
        "gossipkv": gossipkv.__version__,
        "event_loop": loop,
        "commit": _commit(),
        "pinned": f"servers on CPU {sorted(SERVER_CPUS)}, redis-benchmark on {sorted(LOAD_CPUS)}"
        if pinned() else "no",
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    """The commit measured, with '+dirty' when the tree has local changes (read-only git)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")
