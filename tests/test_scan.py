"""SCAN's guarantee under concurrent change, its options, and the bucket index behind it.

Redis guarantees that a full SCAN iteration (cursor 0 back to 0) returns every key that was
present for the whole iteration, even while keys are added and deleted between calls and the
table grows or shrinks. These tests drive a real node with redis-py and check exactly that.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import cast

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipkv.store.buckets import BUCKET_BITS, Buckets, scan_level

MAX_CALLS = 100_000  # a full iteration that has not ended by then never will


def full_scan(
    client: redis.Redis,
    between: Callable[[int], None] = lambda _: None,
    **options: object,
) -> tuple[set[bytes], int]:
    """Every key one full SCAN iteration returned, and how many calls it took.

    ``between(call_number)`` runs after each call that did not end the iteration.
    """
    seen: set[bytes] = set()
    cursor = 0
    for calls in range(1, MAX_CALLS):
        cursor, batch = client.scan(cursor, **options)  # type: ignore[arg-type]
        seen.update(cast(list[bytes], batch))
        if cursor == 0:
            return seen, calls
        between(calls)
    raise AssertionError("SCAN never returned cursor 0")


def fill(client: redis.Redis, keys: list[bytes]) -> None:
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.set(k, b"v")
    pipe.execute()


def drop(client: redis.Redis, keys: list[bytes]) -> None:
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.delete(k)
    pipe.execute()


# -- the guarantee, against a real node -----------------------------------------------------------


def test_scan_returns_every_key_present_throughout_churn(gkv_client: redis.Redis) -> None:
    rng = random.Random(7)
    stable = [b"stable:%d" % i for i in range(3000)]
    churn = [b"churn:%d" % i for i in range(1000)]
    fill(gkv_client, stable + churn)
    ever = set(stable) | set(churn)
    added = 0

    def mutate(call: int) -> None:
        nonlocal added
        # Delete a few churn keys, re-add some, and add brand-new ones between every two calls.
        victims = rng.sample(churn, 20)
        drop(gkv_client, victims)
        fill(gkv_client, rng.sample(victims, 10))
        fresh = [b"new:%d" % (added + i) for i in range(30)]
        added += len(fresh)
        fill(gkv_client, fresh)
        ever.update(fresh)

    seen, calls = full_scan(gkv_client, mutate, count=50)
    assert calls > 10  # the iteration really was interleaved with writes
    assert set(stable) <= seen
    assert seen <= ever  # and nothing that never existed came back


def test_scan_survives_the_keyspace_growing_tenfold(gkv_client: redis.Redis) -> None:
    stable = [b"s:%d" % i for i in range(300)]
    fill(gkv_client, stable)
    grown = 0

    def grow(call: int) -> None:
        nonlocal grown
        if grown < 10 * len(stable):
            fill(gkv_client, [b"g:%d" % (grown + i) for i in range(300)])
            grown += 300

    seen, _ = full_scan(gkv_client, grow, count=20)
    assert set(stable) <= seen
    assert grown >= 10 * len(stable)  # the keyspace did grow tenfold mid-iteration


def test_scan_survives_the_keyspace_shrinking(gkv_client: redis.Redis) -> None:
    stable = [b"s:%d" % i for i in range(200)]
    doomed = [b"d:%d" % i for i in range(5000)]
    fill(gkv_client, stable + doomed)
    remaining = list(doomed)

    def shrink(call: int) -> None:
        batch, remaining[:] = remaining[:600], remaining[600:]
        drop(gkv_client, batch)

    seen, _ = full_scan(gkv_client, shrink, count=100)
    assert set(stable) <= seen
    assert not remaining  # the keyspace shrank below a twentieth of its size mid-iteration


# -- options ---------------------------------------------------------------------------------------


def test_scan_match_count_and_type(gkv_client: redis.Redis) -> None:
    users = [b"user:%d" % i for i in range(250)]
    others = [b"order:%d" % i for i in range(250)]
    fill(gkv_client, users + others)

    assert full_scan(gkv_client)[0] == set(users + others)
    assert full_scan(gkv_client, match="user:*")[0] == set(users)
    assert full_scan(gkv_client, match="user:1?")[0] == {b"user:%d" % i for i in range(10, 20)}
    assert full_scan(gkv_client, match="nothing*")[0] == set()
    assert full_scan(gkv_client, _type="string")[0] == set(users + others)
    assert full_scan(gkv_client, _type="STRING", match="order:*")[0] == set(others)
    assert full_scan(gkv_client, _type="list")[0] == set()

    # COUNT is a hint: a small one takes many calls, a large one finishes in one.
    cursor, batch = gkv_client.scan(0, count=5)
    assert cursor != 0 and len(batch) < len(users + others)
    cursor, batch = gkv_client.scan(0, count=1000)
    assert cursor == 0 and set(batch) == set(users + others)


def test_scan_on_an_empty_keyspace_ends_at_once(gkv_client: redis.Redis) -> None:
    assert gkv_client.scan(0) == (0, [])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["abc"], "invalid cursor"),
        ([" 1"], "invalid cursor"),
        (["18446744073709551616"], "invalid cursor"),
        (["0", "COUNT", "0"], "syntax error"),
        (["0", "COUNT", "-3"], "syntax error"),
        (["0", "COUNT", "ten"], "value is not an integer or out of range"),
        (["0", "MATCH"], "syntax error"),
        (["0", "BOGUS", "x"], "syntax error"),
    ],
)
def test_scan_argument_errors(gkv_client: redis.Redis, args: list[str], message: str) -> None:
    with pytest.raises(redis.ResponseError) as err:
        gkv_client.execute_command("SCAN", *args)  # type: ignore[no-untyped-call]
    assert str(err.value) == message


def test_scan_match_agrees_with_redis(gkv_client: redis.Redis, redis_client: redis.Redis) -> None:
    """Random glob patterns, including brackets, ranges, escapes and high bytes, pick the same
    keys on both servers."""
    rng = random.Random(11)
    alphabet = [b"a", b"b", b"c", b"*", b"?", b"[", b"]", b"^", b"-", b"\\", b"\x80", b"\xff"]
    keys = {b"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5))) for _ in range(300)}
    fill(gkv_client, sorted(keys))
    fill(redis_client, sorted(keys))
    for _ in range(150):
        pattern = b"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
        want = full_scan(redis_client, match=pattern)[0]
        assert full_scan(gkv_client, match=pattern)[0] == want, pattern
        assert set(gkv_client.keys(pattern)) == want, pattern


def test_randomkey_draws_live_keys(gkv_client: redis.Redis) -> None:
    assert gkv_client.randomkey() is None
    keys = {b"a", b"b", b"c"}
    fill(gkv_client, sorted(keys))
    drawn: set[bytes] = set()
    for _ in range(2000):
        key = gkv_client.randomkey()
        assert key in keys
        drawn.add(key)
        if drawn == keys:
            break
    assert drawn == keys
    drop(gkv_client, sorted(keys))
    assert gkv_client.randomkey() is None


# -- the index itself ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    initial=st.integers(0, 3000),
    steps=st.lists(st.tuples(st.integers(-400, 400), st.integers(1, 60)), max_size=60),
    seed=st.integers(0, 2**32),
)
def test_bucket_scan_guarantee(initial: int, steps: list[tuple[int, int]], seed: int) -> None:
    """Between SCAN steps the index gains or loses up to 400 keys, crossing virtual table sizes;
    keys present throughout are all returned, and the walk ends."""
    rng = random.Random(seed)
    index = Buckets()
    stable = {b"stable:%d" % i for i in range(initial)}
    for k in stable:
        index.add(k)
    transient: list[bytes] = []
    serial = 0
    seen: set[bytes] = set()
    cursor = 0
    calls = 0
    plan = iter(steps)
    while True:
        change, count = next(plan, (0, 10))
        cursor, batch = index.scan(cursor, count)
        seen.update(batch)
        calls += 1
        if cursor == 0:
            break
        assert calls < MAX_CALLS
        if change > 0:
            for _ in range(change):
                key = b"t:%d" % serial
                serial += 1
                index.add(key)
                transient.append(key)
        else:
            for _ in range(min(-change, len(transient))):
                index.discard(transient.pop(rng.randrange(len(transient))))
    assert stable <= seen
    assert len(index) == len(stable) + len(transient)


def test_bucket_index_tracks_size_and_random_picks() -> None:
    index = Buckets()
    assert index.random_key() is None
    assert index.scan(0, 10) == (0, [])
    keys = [b"k%d" % i for i in range(5000)]
    for k in keys:
        index.add(k)
    index.add(keys[0])  # adding twice counts once
    assert len(index) == 5000
    assert scan_level(len(index)) == BUCKET_BITS
    for k in keys[:4999]:
        index.discard(k)
    index.discard(b"never added")
    assert len(index) == 1
    assert index.random_key() == keys[4999]
    assert index.scan(0, 10) == (0, [keys[4999]])
