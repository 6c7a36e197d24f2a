"""Random string/key command sequences, replayed on gossipkv and redis-server and compared.

Hypothesis draws sequences over three keys and a handful of values chosen to hit the interesting
paths (integers, their limits, floats, non-numbers, the empty string), so the sequences collide on
keys and reach the numeric, append, range and expiry code often. Every reply must match Redis byte
for byte, except the few that depend on wall time (see ``VOLATILE``). TTLs are large enough that
no key expires during a sequence; zero and negative TTLs (immediate deletion) are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.differential.harness import Reply, RespConnection, open_session
from tests.servers import ServerProcess

Command = tuple[str, ...]

KEYS = ("a", "b", "c")
VALUES = (
    "", "0", "1", "-1", "7", "42", "10", "-100", "3.5", "0.1", "-2.25", "1e3", "5.0e-1", "abc",
    "hello world", " 1", "01", "+5", "9223372036854775807", "-9223372036854775808",
    "9223372036854775808", "inf", "nan", "0x10",
)  # fmt: skip
FAR_FUTURE_S = 4_102_444_800  # 2100-01-01, far beyond any TTL arithmetic edge

key = st.sampled_from(KEYS)
value = st.one_of(
    st.sampled_from(VALUES),
    st.integers(-1000, 1000).map(str),
    st.text(alphabet="xyz01.-", max_size=6),
)
increment = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.sampled_from(["9223372036854775807", "-9223372036854775808", "1.5", "x", ""]),
)
float_increment = st.one_of(
    st.sampled_from(["1", "-1", "0.1", "2.5", "-0.5", "1e2", "3", "x", "", "inf", "5.0e3"]),
    st.integers(-100, 100).map(str),
)
ttl_s = st.one_of(st.integers(1000, 100_000).map(str), st.sampled_from(["0", "-1", "x"]))
ttl_ms = st.one_of(st.integers(1_000_000, 100_000_000).map(str), st.sampled_from(["0", "-5"]))
# Absolute deadlines: far future (kept), a past one (deletes the key at once), a malformed one.
unix_s = st.sampled_from([str(FAR_FUTURE_S), str(FAR_FUTURE_S + 7), "1", "x"])
unix_ms = st.sampled_from([str(FAR_FUTURE_S * 1000), str(FAR_FUTURE_S * 1000 + 5), "1"])
small_index = st.integers(-8, 8).map(str)
offset = st.one_of(st.integers(0, 10).map(str), st.sampled_from(["-1", "x"]))

set_option = st.sampled_from(
    [
        ("NX",), ("XX",), ("GET",), ("KEEPTTL",), ("EX", "5000"), ("PX", "9000000"),
        ("EXAT", str(FAR_FUTURE_S)), ("PXAT", str(FAR_FUTURE_S * 1000)), ("EX", "0"), ("EX", "x"),
    ]
)  # fmt: skip
expire_flag = st.sampled_from([(), (), ("NX",), ("XX",), ("GT",), ("LT",)])
getex_option = st.sampled_from(
    [(), ("PERSIST",), ("EX", "3000"), ("PX", "4000000"), ("EXAT", str(FAR_FUTURE_S))]
)


def _cmd(*parts: str | Command) -> Command:
    flat: list[str] = []
    for p in parts:
        flat.extend((p,) if isinstance(p, str) else p)
    return tuple(flat)


def _pairs(n_min: int = 1, n_max: int = 3) -> st.SearchStrategy[Command]:
    pair = st.tuples(key, value)
    return st.lists(pair, min_size=n_min, max_size=n_max).map(lambda ps: _cmd(*ps))


def _keys(n_min: int = 1, n_max: int = 3) -> st.SearchStrategy[Command]:
    return st.lists(key, min_size=n_min, max_size=n_max).map(tuple)


command = st.one_of(
    st.builds(
        lambda k, v, opts: _cmd("SET", k, v, *opts), key, value, st.lists(set_option, max_size=3)
    ),
    st.builds(lambda k: _cmd("GET", k), key),
    st.builds(lambda k: _cmd("INCR", k), key),
    st.builds(lambda k: _cmd("DECR", k), key),
    st.builds(lambda k, n: _cmd("INCRBY", k, n), key, increment),
    st.builds(lambda k, n: _cmd("DECRBY", k, n), key, increment),
    st.builds(lambda k, n: _cmd("INCRBYFLOAT", k, n), key, float_increment),
    st.builds(lambda k, v: _cmd("APPEND", k, v), key, value),
    st.builds(lambda k: _cmd("STRLEN", k), key),
    st.builds(lambda k, a, b: _cmd("GETRANGE", k, a, b), key, small_index, small_index),
    st.builds(lambda k, a, b: _cmd("SUBSTR", k, a, b), key, small_index, small_index),
    st.builds(lambda k, o, v: _cmd("SETRANGE", k, o, v), key, offset, value),
    st.builds(lambda ks: _cmd("DEL", ks), _keys()),
    st.builds(lambda ks: _cmd("UNLINK", ks), _keys()),
    st.builds(lambda ks: _cmd("TOUCH", ks), _keys()),
    st.builds(lambda ks: _cmd("EXISTS", ks), _keys()),
    st.builds(lambda ps: _cmd("MSET", ps), _pairs()),
    st.builds(lambda ps: _cmd("MSETNX", ps), _pairs()),
    st.builds(lambda ks: _cmd("MGET", ks), _keys()),
    st.builds(lambda k, v: _cmd("GETSET", k, v), key, value),
    st.builds(lambda k: _cmd("GETDEL", k), key),
    st.builds(lambda k, v: _cmd("SETNX", k, v), key, value),
    st.builds(lambda k, t, v: _cmd("SETEX", k, t, v), key, ttl_s, value),
    st.builds(lambda k, t, v: _cmd("PSETEX", k, t, v), key, ttl_ms, value),
    st.builds(lambda k, opts: _cmd("GETEX", k, opts), key, getex_option),
    st.builds(lambda k, t, f: _cmd("EXPIRE", k, t, f), key, ttl_s, expire_flag),
    st.builds(lambda k, t, f: _cmd("PEXPIRE", k, t, f), key, ttl_ms, expire_flag),
    st.builds(lambda k, t, f: _cmd("EXPIREAT", k, t, f), key, unix_s, expire_flag),
    st.builds(lambda k, t, f: _cmd("PEXPIREAT", k, t, f), key, unix_ms, expire_flag),
    st.builds(lambda k: _cmd("PERSIST", k), key),
    st.builds(lambda k: _cmd("EXPIRETIME", k), key),
    st.builds(lambda k: _cmd("PEXPIRETIME", k), key),
    st.builds(lambda k: _cmd("TTL", k), key),
    st.builds(lambda k: _cmd("PTTL", k), key),
    st.builds(lambda k: _cmd("TYPE", k), key),
    st.builds(lambda a, b: _cmd("RENAME", a, b), key, key),
    st.builds(lambda a, b: _cmd("RENAMENX", a, b), key, key),
    st.just(("DBSIZE",)),
    st.just(("KEYS", "*")),
    st.just(("RANDOMKEY",)),
)


def _ttl_class(r: Reply) -> object:
    """-2 and -1 are exact answers; any positive remaining time is as good as another."""
    if r.kind == "integer" and r.value > 0:
        return "positive"
    return r.raw


def _same_ttl_seconds(want: Reply, got: Reply) -> bool:
    # TTL rounds (ms + 500) / 1000 and EXPIRETIME counts from a wall-clock second, so one apart is
    # the same deadline seen from either side of a second boundary.
    if want.kind == got.kind == "integer" and want.value > 0 and got.value > 0:
        return bool(abs(want.value - got.value) <= 1)
    return want.raw == got.raw


def _same_sorted(want: Reply, got: Reply) -> bool:
    """KEYS lists keys in hash-table order, which is nobody's contract."""
    if want.kind != got.kind or want.kind not in ("array", "set"):
        return want.raw == got.raw
    return sorted(e.raw for e in want.elements) == sorted(e.raw for e in got.elements)


Comparator = Callable[[Reply, Reply], bool]
VOLATILE: dict[str, Comparator] = {
    "TTL": _same_ttl_seconds,
    "EXPIRETIME": _same_ttl_seconds,
    "PTTL": lambda w, g: _ttl_class(w) == _ttl_class(g),
    "PEXPIRETIME": lambda w, g: _ttl_class(w) == _ttl_class(g),
    "KEYS": _same_sorted,
    "RANDOMKEY": lambda w, g: w.kind == g.kind,
}


def _same(cmd: Command, want: Reply, got: Reply) -> bool:
    compare = VOLATILE.get(cmd[0])
    if compare is not None:
        return compare(want, got)
    return want.raw == got.raw


def _transcript(rows: list[tuple[Command, Reply, Reply]]) -> str:
    lines = []
    for i, (cmd, want, got) in enumerate(rows, start=1):
        text = " ".join(repr(a) if not a or " " in a else a for a in cmd)
        mark = "  " if _same(cmd, want, got) else "!!"
        lines.append(f"{mark} {i:3d}  {text}")
        lines.append(f"         redis:    {want.show()}")
        if mark == "!!":
            lines.append(f"         gossipkv: {got.show()}")
    return "\n".join(lines)


def run_sequence(commands: list[Command], gkv_port: int, redis_port: int, protocol: int) -> None:
    """Replay ``commands`` on both servers in lockstep; fail at the first differing reply."""
    rows: list[tuple[Command, Reply, Reply]] = []
    redis_conn: RespConnection
    gkv_conn: RespConnection
    with (
        open_session(redis_port, protocol) as redis_conn,
        open_session(gkv_port, protocol) as gkv_conn,
    ):
        for cmd in commands:
            want, got = redis_conn.call(*cmd), gkv_conn.call(*cmd)
            rows.append((cmd, want, got))
            if not _same(cmd, want, got):
                pytest.fail(
                    f"RESP{protocol}: reply {len(rows)} differs from redis-server\n"
                    + _transcript(rows),
                    pytrace=False,
                )


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(commands=st.lists(command, min_size=1, max_size=30))
def test_random_string_sequences_match_redis(
    commands: list[Command], protocol: int, gkv: ServerProcess, redis_ref: ServerProcess
) -> None:
    run_sequence(commands, gkv.port, redis_ref.port, protocol)


def test_sequence_comparison_reports_a_difference(redis_ref: ServerProcess) -> None:
    """Both sides on one server share state, so the second INCR answers 2 and must be reported."""
    with pytest.raises(pytest.fail.Exception) as failure:
        run_sequence([("SET", "k", "v"), ("INCR", "n")], redis_ref.port, redis_ref.port, 2)
    report = str(failure.value)
    assert "reply 2 differs" in report
    assert "(integer) 1" in report and "(integer) 2" in report
