"""What the benchmark measures with: redis-benchmark, a redis-cli --pipe loader, RSS, machine facts.

Every figure comes from a real process and the stock Redis tools, so redis-server and gossipkv are
measured the same way and only the ratio between them matters.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import redis

import gossipkv

# redis-benchmark -t names, and how its CSV spells each test's row.
ROW_NAMES = {"set": "SET", "get": "GET", "incr": "INCR", "mset": "MSET (10 keys)"}

# One command per test, sent before benchmarking: redis-benchmark stops at the first error
# reply, so a command a server lacks would otherwise show up as a silent, empty row.
PROBES: dict[str, tuple[str, ...]] = {
    "set": ("SET", "bench:probe", "xxx"),
    "get": ("GET", "bench:probe"),
    "incr": ("INCR", "bench:probe:counter"),
    "mset": ("MSET", "bench:probe:a", "1", "bench:probe:b", "2"),
}


class BenchError(Exception):
    """A measurement could not be taken; the message says which and why."""


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"{name} is not installed (make system-deps installs it)")
    return path


def refuses(port: int, *command: str) -> str | None:
    """None when the server runs ``command``, else the error it replied with."""
    client = redis.Redis(port=port, protocol=2, socket_timeout=10)
    try:
        client.execute_command(*command)  # type: ignore[no-untyped-call]
    except redis.ResponseError as e:
        return str(e)
    finally:
        client.close()
    return None


@dataclass(frozen=True)
class Run:
    """One redis-benchmark invocation's outcome for one test."""

    rps: float
    p50_ms: float
    p99_ms: float


def redis_benchmark(
    port: int, test: str, pipeline: int, requests: int, clients: int, keyspace: int
) -> Run:
    """Run one test of redis-benchmark against ``port`` and read its CSV row."""
    args = [
        tool("redis-benchmark"), "-h", "127.0.0.1", "-p", str(port), "-c", str(clients),
        "-n", str(requests), "-r", str(keyspace), "-P", str(pipeline), "-t", test, "--csv",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)
    row = _csv_row(proc.stdout, ROW_NAMES[test])
    if proc.returncode != 0 or row is None:
        why = (proc.stderr.strip().splitlines() or ["no result row"])[-1]
        raise BenchError(f"redis-benchmark {test} -P {pipeline} on port {port}: {why}")
    return Run(float(row["rps"]), float(row["p50_latency_ms"]), float(row["p99_latency_ms"]))


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


def pipe_load(port: int, stream: bytes, expected: int) -> None:
    """Feed ``stream`` through ``redis-cli --pipe`` and check every reply arrived without error."""
    # redis-cli ends the stream with an ECHO and waits for it: fail now, not after the timeout.
    for command in (("ECHO", "bench"), ("DBSIZE",)):
        error = refuses(port, *command)
        if error:
            raise BenchError(f"port {port} cannot be loaded and counted: {error}")
    proc = subprocess.run(
        [tool("redis-cli"), "-h", "127.0.0.1", "-p", str(port), "--pipe", "--pipe-timeout", "60"],
        input=stream, capture_output=True, timeout=900, check=False,
    )
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
