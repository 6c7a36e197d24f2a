"""Anti-entropy benchmark: detect-and-repair time and bytes, and the cost to clients.

Two ``gossipkv serve`` processes on loopback (lan profile, periodic exchanges off, chaos on).
A holds N keys (1M), replicated to B. Then, for 1, 100 and 10,000 keys: those keys are written
on A while a chaos ``drop`` rule loses every delta frame to B, and ``ANTIENTROPY PEER A`` on B
finds and repairs them; its reply gives the time, bytes and round trips. The in-sync check is
the same command on equal replicas.

Write throughput: redis-benchmark SET (50 clients) on B, alone and while B runs back-to-back
dry-run exchanges with A over the whole keyspace (10,000 differing keys spread over every leaf,
so each exchange swaps the pairs of all N keys), with redis-server measured in the same run.

``python -m bench.antientropy [--keys N] [--quick]``; ``make bench-ae``. Results go to
bench/results/ as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from bench.tools import (
    BenchError,
    machine,
    pin_server,
    pipe_load,
    redis_benchmark,
    set_stream,
)
from gossipkv.admin.chaos import request as chaos
from tests.cluster_procs import ClusterNode, start_cluster, stop_all
from tests.servers import start_redis, wait_for

RESULTS = Path(__file__).resolve().parent / "results"
CLIENTS = 50
DIFFS = (1, 100, 10_000)
# DESIGN.md's targets for 1 differing key among 1M, and for the in-sync check.
TARGETS = {"repair_1_ms": 50.0, "repair_1_bytes": 16 * 1024, "in_sync_bytes": 2048}


def _client(node: ClusterNode) -> redis.Redis:
    return redis.Redis(port=node.port, protocol=3, socket_timeout=600, decode_responses=True)


def _exchange(node: ClusterNode, *args: str) -> dict[str, Any]:
    with _client(node) as c:
        reply = c.execute_command("ANTIENTROPY", *args)  # type: ignore[no-untyped-call]
    if not isinstance(reply, dict):
        raise BenchError(f"ANTIENTROPY replied {reply!r}")
    if reply.get("error"):
        raise BenchError(f"ANTIENTROPY failed: {reply['error']}")
    return reply


def _lose(a: ClusterNode, b: ClusterNode, keys: list[str]) -> None:
    """Write ``keys`` on A while every delta frame to B is lost."""
    chaos("127.0.0.1", a.admin_port, "POST",
          {"peer": b.name, "action": "drop", "direction": "out", "rate": 1.0})
    try:
        with a.client() as c:
            pipe = c.pipeline(transaction=False)
            for k in keys:
                pipe.set(k, k)
            pipe.execute()
            if c.execute_command("WAIT", 1, 60000) != 1:  # type: ignore[no-untyped-call]
                raise BenchError("B did not acknowledge the lost writes")
    finally:
        chaos("127.0.0.1", a.admin_port, "DELETE")


def _figures(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "ms": r["ms"], "bytes": r["bytes_sent"] + r["bytes_received"],
        "round_trips": r["round_trips"], "differences": r["differences"],
        "keys_compared": r["keys_compared"],
    }


def repair(a: ClusterNode, b: ClusterNode, reps: int, console: Console) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runs = [_figures(_exchange(b, "PEER", a.name)) for _ in range(reps)]
    out["in_sync"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    console.log(f"in sync: {out['in_sync']}")
    serial = 0
    for n in DIFFS:
        runs = []
        for _ in range(reps if n < 10_000 else 1):
            keys = [f"diff:{serial}:{i}" for i in range(n)]
            serial += 1
            _lose(a, b, keys)
            r = _exchange(b, "PEER", a.name)
            if r["differences"] != n:
                raise BenchError(f"{n} lost keys, {r['differences']} differences found")
            runs.append(_figures(r))
        out[f"diff_{n}"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        console.log(f"{n} differing: {out[f'diff_{n}']}")
    if a.digest() != b.digest():
        raise BenchError("replicas differ after the exchanges")
    return out


def throughput(
    tmp: Path, a: ClusterNode, b: ClusterNode, requests: int, console: Console
) -> dict[str, Any]:
    ref = start_redis(tmp)
    pin_server(ref.proc.pid)  # redis-server and node B on the servers' CPU, as bench/run.py
    pin_server(b.proc.pid)
    try:
        redis_rps = redis_benchmark(ref.port, "set", 1, requests, CLIENTS, 100_000).rps
    finally:
        ref.stop()
    alone = redis_benchmark(b.port, "set", 1, requests, CLIENTS, 100_000).rps
    _lose(a, b, [f"spread:{i}" for i in range(10_000)])
    stop = threading.Event()
    done: list[dict[str, Any]] = []

    def loop() -> None:
        while not stop.is_set():
            done.append(_exchange(b, "PEER", a.name, "DRYRUN"))

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    wait_for(lambda: _running(b), 30, "an exchange to start")
    try:
        during = redis_benchmark(b.port, "set", 1, requests, CLIENTS, 100_000).rps
    finally:
        stop.set()
        worker.join(600)
    _exchange(b, "PEER", a.name)  # repair the spread keys
    console.log(f"SET on B: {alone:.0f}/s alone, {during:.0f}/s during exchanges")
    return {
        "redis_rps": redis_rps,
        "gossipkv_rps": alone,
        "gossipkv_rps_during_exchange": during,
        "ratio_vs_redis": round(alone / redis_rps, 3),
        "ratio_during_vs_redis": round(during / redis_rps, 3),
        "ratio_during_vs_alone": round(during / alone, 3),
        "exchanges_during": len(done),
        "exchange_ms": statistics.median(r["ms"] for r in done) if done else None,
        "exchange_keys_compared": done[-1]["keys_compared"] if done else 0,
    }


def _running(node: ClusterNode) -> bool:
    with node.client() as c:
        return str(c.info("replication").get("ae_running")) == "1"


def run(tmp: Path, keys: int, reps: int, requests: int, console: Console) -> dict[str, Any]:
    nodes = start_cluster(
        tmp, 2, profile="lan", admin=True,
        extra=["--chaos", "--anti-entropy-interval", "0", "--log-level", "warning"],
    )
    try:
        a, b = nodes
        console.log(f"loading {keys:,} keys into A")
        pipe_load(a.port, set_stream(keys), keys)
        wait_for(lambda: b.dbsize() == keys, 600, "B to hold A's keys")
        return {
            "keys": keys,
            "repair": repair(a, b, reps, console),
            "throughput": throughput(tmp, a, b, requests, console),
        }
    finally:
        stop_all(nodes)


def report(console: Console, doc: dict[str, Any]) -> None:
    rep = doc["repair"]
    t = Table(title=f"anti-entropy, {doc['keys']:,} keys on two nodes")
    for col in ("case", "ms", "bytes", "round trips", "differences"):
        t.add_column(col, justify="right")
    for name in ("in_sync", *(f"diff_{n}" for n in DIFFS)):
        r = rep[name]
        t.add_row(name, f"{r['ms']:.1f}", f"{r['bytes']:,.0f}", f"{r['round_trips']:.0f}",
                  f"{r['differences']:.0f}")
    console.print(t)
    th = doc["throughput"]
    console.print(
        f"SET: redis {th['redis_rps']:.0f}/s; gossipkv {th['gossipkv_rps']:.0f}/s "
        f"({th['ratio_vs_redis']}x); during exchanges {th['gossipkv_rps_during_exchange']:.0f}/s "
        f"({th['ratio_during_vs_redis']}x redis, {th['ratio_during_vs_alone']}x alone; "
        f"{th['exchanges_during']} exchanges of {th['exchange_keys_compared']:,} keys)"
    )
    d1 = rep["diff_1"]
    console.print(
        f"targets: 1 key {d1['ms']:.1f} ms (<= {TARGETS['repair_1_ms']:.0f}), "
        f"{d1['bytes']:,.0f} B (<= {TARGETS['repair_1_bytes']:,}); in sync "
        f"{rep['in_sync']['bytes']:,.0f} B (<= {TARGETS['in_sync_bytes']:,})"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.antientropy")
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--quick", action="store_true", help="100k keys, fewer repetitions")
    args = p.parse_args(argv)
    keys = 100_000 if args.quick else args.keys
    reps = 3 if args.quick else 5
    requests = 100_000 if args.quick else 300_000
    console = Console()
    with tempfile.TemporaryDirectory(prefix="gossipkv-bench-ae-") as tmpdir:
        try:
            doc = run(Path(tmpdir), keys, reps, requests, console)
        except BenchError as e:
            console.print(f"[red]bench failed:[/] {e}")
            return 1
    doc["machine"] = machine()
    doc["targets"] = TARGETS
    report(console, doc)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(doc, indent=2) + "\n"
    for target in (RESULTS / f"{stamp}-antientropy.json", RESULTS / "antientropy-latest.json"):
        target.write_text(text)
    console.print(f"saved to bench/results/{stamp}-antientropy.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
