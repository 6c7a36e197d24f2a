"""Random hash, set and list command sequences, replayed on gossipkv and redis-server and compared.

Each type gets its own generator over two or three keys of that type plus a plain string key, and a
handful of fields, members and values, so commands collide on keys, hit empty/missing keys, cross
types (WRONGTYPE) and reach the numeric paths. Replies must match Redis byte for byte, except the
commands whose element order is Redis's hash-table order (``UNORDERED``), which are compared as
multisets (HGETALL as a set of field/value pairs). Sorted sets have their own sequence test in
test_zset_crdt.py.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.differential.harness import Reply, open_session
from tests.servers import ServerProcess
from tests.test_random_sequences import VOLATILE, Command, Comparator, _cmd, run_sequence

STRING_KEY = "str"


def _unordered_form(r: Reply) -> tuple[str, list[bytes]]:
    if r.kind == "map":
        return r.kind, sorted(k.raw + v.raw for k, v in r.value)
    if r.kind in ("array", "set"):
        return r.kind, sorted(e.raw for e in r.value)
    return r.kind, [r.raw]


def _same_unordered(want: Reply, got: Reply) -> bool:
    """Members come back in hash-table order, which is nobody's contract."""
    return _unordered_form(want) == _unordered_form(got)


def _same_pairs(want: Reply, got: Reply) -> bool:
    """HGETALL in RESP2 is a flat field, value, ... array: compare it as a set of pairs."""
    if want.kind == got.kind == "array":

        def pairs(r: Reply) -> list[bytes]:
            flat = [e.raw for e in r.value]
            return sorted(f + v for f, v in zip(flat[::2], flat[1::2], strict=True))

        return len(want.value) == len(got.value) and pairs(want) == pairs(got)
    return _same_unordered(want, got)


UNORDERED: dict[str, Comparator] = {
    "HKEYS": _same_unordered,
    "HVALS": _same_unordered,
    "HGETALL": _same_pairs,
    "SMEMBERS": _same_unordered,
    "SINTER": _same_unordered,
    "SUNION": _same_unordered,
    "SDIFF": _same_unordered,
}


@pytest.fixture
def unordered_comparisons(monkeypatch: pytest.MonkeyPatch) -> None:
    """Teach the shared sequence runner which replies are unordered, for this test only."""
    for name, compare in UNORDERED.items():
        monkeypatch.setitem(VOLATILE, name, compare)


def _string_ops(key: st.SearchStrategy[str]) -> list[st.SearchStrategy[Command]]:
    """String commands on a typed key (WRONGTYPE) and a plain string to clash with."""
    return [
        st.builds(lambda k: _cmd("GET", k), key),
        st.builds(lambda k: _cmd("INCR", k), key),
        st.just(_cmd("SET", STRING_KEY, "7")),
        st.builds(lambda ks: _cmd("DEL", ks), st.lists(key, min_size=1, max_size=2).map(tuple)),
        st.builds(lambda ks: _cmd("EXISTS", ks), st.lists(key, min_size=1, max_size=2).map(tuple)),
        st.builds(lambda k: _cmd("TYPE", k), key),
    ]


# -- hashes -------------------------------------------------------------------------------------

hkey = st.sampled_from(["h1", "h2", STRING_KEY])
field = st.sampled_from(["f", "g", "n", "x", ""])
hvalue = st.one_of(
    st.sampled_from(["", "v", "0", "1", "-3", "2.5", "1e2", "abc", "9223372036854775807", " 1"]),
    st.integers(-50, 50).map(str),
)
hincr = st.one_of(
    st.integers(-20, 20).map(str),
    st.sampled_from(["9223372036854775807", "-9223372036854775808", "1.5", "x", ""]),
)
hincr_float = st.one_of(
    st.sampled_from(["1", "-1", "0.1", "2.5", "-0.5", "1e2", "x", "", "inf", "5.0e3"]),
    st.integers(-20, 20).map(str),
)
field_values = st.lists(st.tuples(field, hvalue), min_size=1, max_size=3).map(lambda ps: _cmd(*ps))
fields = st.lists(field, min_size=1, max_size=3).map(tuple)

hash_command = st.one_of(
    st.builds(lambda k, fv: _cmd("HSET", k, fv), hkey, field_values),
    st.builds(lambda k, fv: _cmd("HMSET", k, fv), hkey, field_values),
    st.builds(lambda k, f, v: _cmd("HSETNX", k, f, v), hkey, field, hvalue),
    st.builds(lambda k, f: _cmd("HGET", k, f), hkey, field),
    st.builds(lambda k, fs: _cmd("HMGET", k, fs), hkey, fields),
    st.builds(lambda k, fs: _cmd("HDEL", k, fs), hkey, fields),
    st.builds(lambda k, f: _cmd("HEXISTS", k, f), hkey, field),
    st.builds(lambda k: _cmd("HLEN", k), hkey),
    st.builds(lambda k: _cmd("HKEYS", k), hkey),
    st.builds(lambda k: _cmd("HVALS", k), hkey),
    st.builds(lambda k: _cmd("HGETALL", k), hkey),
    st.builds(lambda k, f, n: _cmd("HINCRBY", k, f, n), hkey, field, hincr),
    st.builds(lambda k, f, n: _cmd("HINCRBYFLOAT", k, f, n), hkey, field, hincr_float),
    st.builds(lambda k, f: _cmd("HSTRLEN", k, f), hkey, field),
    st.builds(lambda k: _cmd("SADD", k, "m"), hkey),
    *_string_ops(hkey),
)

# -- sets ---------------------------------------------------------------------------------------

skey = st.sampled_from(["s1", "s2", "s3", STRING_KEY])
member = st.sampled_from(["a", "b", "c", "d", "1", ""])
members = st.lists(member, min_size=1, max_size=4).map(tuple)
skeys = st.lists(skey, min_size=1, max_size=3).map(tuple)
set_algebra = st.sampled_from(["SINTER", "SUNION", "SDIFF"])
set_store = st.sampled_from(["SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE"])


def _sintercard(ks: Command, limit: Command) -> Command:
    return _cmd("SINTERCARD", str(len(ks)), ks, limit)


set_command = st.one_of(
    st.builds(lambda k, ms: _cmd("SADD", k, ms), skey, members),
    st.builds(lambda k, ms: _cmd("SREM", k, ms), skey, members),
    st.builds(lambda k: _cmd("SMEMBERS", k), skey),
    st.builds(lambda k, m: _cmd("SISMEMBER", k, m), skey, member),
    st.builds(lambda k, ms: _cmd("SMISMEMBER", k, ms), skey, members),
    st.builds(lambda k: _cmd("SCARD", k), skey),
    st.builds(lambda a, b, m: _cmd("SMOVE", a, b, m), skey, skey, member),
    st.builds(lambda op, ks: _cmd(op, ks), set_algebra, skeys),
    st.builds(lambda op, d, ks: _cmd(op, d, ks), set_store, skey, skeys),
    st.builds(
        _sintercard,
        skeys,
        st.sampled_from([(), ("LIMIT", "0"), ("LIMIT", "1"), ("LIMIT", "2"), ("LIMIT", "-1")]),
    ),
    st.builds(lambda k: _cmd("HSET", k, "f", "v"), skey),
    *_string_ops(skey),
)

# -- lists --------------------------------------------------------------------------------------

lkey = st.sampled_from(["l1", "l2", STRING_KEY])
element = st.sampled_from(["a", "b", "c", "1", ""])
elements = st.lists(element, min_size=1, max_size=4).map(tuple)
index = st.integers(-5, 5).map(str)
pop_count = st.sampled_from([(), (), ("0",), ("1",), ("2",), ("5",), ("-1",), ("x",)])
end = st.sampled_from(["LEFT", "RIGHT"])
push = st.sampled_from(["LPUSH", "RPUSH", "LPUSH", "RPUSH", "LPUSHX", "RPUSHX"])
lpos_option = st.sampled_from(
    [(), ("RANK", "1"), ("RANK", "-1"), ("RANK", "2"), ("RANK", "0"), ("COUNT", "0"),
     ("COUNT", "2"), ("MAXLEN", "2"), ("RANK", "-2", "COUNT", "0")]
)  # fmt: skip

list_command = st.one_of(
    st.builds(lambda op, k, es: _cmd(op, k, es), push, lkey, elements),
    st.builds(lambda op, k, n: _cmd(op, k, n), st.sampled_from(["LPOP", "RPOP"]), lkey, pop_count),
    st.builds(lambda k: _cmd("LLEN", k), lkey),
    st.builds(lambda k, a, b: _cmd("LRANGE", k, a, b), lkey, index, index),
    st.builds(lambda k, i: _cmd("LINDEX", k, i), lkey, index),
    st.builds(lambda k, i, e: _cmd("LSET", k, i, e), lkey, index, element),
    st.builds(
        lambda k, w, p, e: _cmd("LINSERT", k, w, p, e),
        lkey,
        st.sampled_from(["BEFORE", "AFTER", "MIDDLE"]),
        element,
        element,
    ),
    st.builds(lambda k, n, e: _cmd("LREM", k, n, e), lkey, st.integers(-3, 3).map(str), element),
    st.builds(lambda k, a, b: _cmd("LTRIM", k, a, b), lkey, index, index),
    st.builds(lambda k, e, o: _cmd("LPOS", k, e, o), lkey, element, lpos_option),
    st.builds(lambda a, b, x, y: _cmd("LMOVE", a, b, x, y), lkey, lkey, end, end),
    st.builds(lambda a, b: _cmd("RPOPLPUSH", a, b), lkey, lkey),
    st.builds(lambda k: _cmd("SADD", k, "m"), lkey),
    *_string_ops(lkey),
)

sequence_settings = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
protocols = pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])


@protocols
@sequence_settings
@given(commands=st.lists(hash_command, min_size=1, max_size=30))
def test_random_hash_sequences_match_redis(
    commands: list[Command],
    protocol: int,
    gkv: ServerProcess,
    redis_ref: ServerProcess,
    unordered_comparisons: None,
) -> None:
    run_sequence(commands, gkv.port, redis_ref.port, protocol)


@protocols
@sequence_settings
@given(commands=st.lists(set_command, min_size=1, max_size=30))
def test_random_set_sequences_match_redis(
    commands: list[Command],
    protocol: int,
    gkv: ServerProcess,
    redis_ref: ServerProcess,
    unordered_comparisons: None,
) -> None:
    run_sequence(commands, gkv.port, redis_ref.port, protocol)


@protocols
@sequence_settings
@given(commands=st.lists(list_command, min_size=1, max_size=30))
def test_random_list_sequences_match_redis(
    commands: list[Command],
    protocol: int,
    gkv: ServerProcess,
    redis_ref: ServerProcess,
    unordered_comparisons: None,
) -> None:
    run_sequence(commands, gkv.port, redis_ref.port, protocol)


def test_unordered_comparison_keeps_pairs_and_multiplicity(redis_ref: ServerProcess) -> None:
    """HGETALL pairs must stay paired, and a reordered set still matches."""
    with open_session(redis_ref.port, 2) as conn:
        conn.call("HSET", "h", "f", "1", "g", "2")
        conn.call("HSET", "k", "f", "2", "g", "1")
        conn.call("SADD", "s", "a", "b", "c")
        conn.call("SADD", "t", "c", "b", "a")
        h, k = conn.call("HGETALL", "h"), conn.call("HGETALL", "k")
        s, t = conn.call("SMEMBERS", "s"), conn.call("SMEMBERS", "t")
    assert sorted(e.raw for e in h.value) == sorted(e.raw for e in k.value)
    assert not _same_pairs(h, k)
    assert _same_pairs(h, h)
    assert _same_unordered(s, t)
    assert not _same_unordered(s, h)
