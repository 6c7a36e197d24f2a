"""INFO commandstats and the network byte counters, against redis-server's own."""

from __future__ import annotations

import contextlib

import redis

from tests.servers import ServerProcess

SCRIPT: list[tuple[str, ...]] = [
    ("SET", "stats:k", "v"),
    ("SET", "stats:k", "w"),
    ("GET", "stats:k"),
    ("LPUSH", "stats:k", "x"),  # WRONGTYPE: a failed call
    ("GET",),  # wrong arity: a rejected call
    ("CONFIG", "GET", "maxmemory"),
]


def _commandstats(r: redis.Redis) -> dict[str, dict[str, float]]:
    """INFO commandstats as redis-py parses it: command name -> its fields."""
    info = r.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): {k: float(v) for k, v in fields.items()}
        for name, fields in info.items()
    }


def _run(port: int) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    r = redis.Redis(port=port, protocol=2)
    try:
        r.config_resetstat()
        r.delete("stats:k")
        for args in SCRIPT:
            with contextlib.suppress(redis.ResponseError):
                r.execute_command(*args)  # type: ignore[no-untyped-call]
        stats = _commandstats(r)
        info = r.info("stats")
        net = {k: int(info[k]) for k in ("total_net_input_bytes", "total_net_output_bytes")}
        return stats, net
    finally:
        r.close()


def test_commandstats_count_calls_rejections_and_failures_as_redis_does(
    gkv: ServerProcess, redis_ref: ServerProcess
) -> None:
    mine, mine_net = _run(gkv.port)
    ref, _ = _run(redis_ref.port)
    for name in ("set", "get", "lpush", "config|get", "del"):
        assert name in ref and name in mine, (name, sorted(mine))
        for field in ("calls", "rejected_calls", "failed_calls"):
            assert mine[name][field] == ref[name][field], (name, field, mine[name], ref[name])
    assert mine["lpush"]["failed_calls"] == 1 and mine["get"]["rejected_calls"] == 1
    # Time is really measured: three SETs and GETs cannot all take no time at all.
    assert sum(s["usec"] for s in mine.values()) > 0
    for s in mine.values():
        if s["calls"]:
            assert abs(s["usec_per_call"] - s["usec"] / s["calls"]) < 0.01
    # Every byte of the script went in and its replies came out (resetstat zeroed both).
    assert mine_net["total_net_input_bytes"] > 100
    assert mine_net["total_net_output_bytes"] > 30


def test_resetstat_clears_commandstats(gkv: ServerProcess) -> None:
    r = redis.Redis(port=gkv.port)
    try:
        r.set("stats:x", "1")
        r.config_resetstat()
        stats = _commandstats(r)
        assert set(stats) <= {"config|resetstat", "info"}, stats
    finally:
        r.close()
