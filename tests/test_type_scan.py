"""SSCAN and ZSCAN on large collections, through a real server in RESP2 and RESP3: pages of about
COUNT members with a non-zero cursor until the end, and Redis's guarantee that a member present
for the whole iteration is returned (here exactly once) while others come and go."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import redis

N = 1000


def _walk(
    step: Callable[[int], tuple[int, list[bytes]]], churn: Callable[[int], None]
) -> tuple[list[bytes], list[int]]:
    cursor, seen, sizes, calls = 0, [], [], 0
    while True:
        cursor, page = step(cursor)
        seen.extend(page)
        sizes.append(len(page))
        churn(calls)
        calls += 1
        assert calls < 10 * N, "the cursor never came back to 0"
        if cursor == 0:
            return seen, sizes


@pytest.mark.parametrize("gkv_client", [2, 3], indirect=True)
def test_sscan_pages_a_large_set_and_keeps_the_scan_guarantee(gkv_client: redis.Redis) -> None:
    r = gkv_client
    members = [b"m:%d" % i for i in range(N)]
    r.sadd("s", *members)
    rnd = random.Random(3)
    removed = set(rnd.sample(members, 100))
    steady = set(members) - removed
    doomed = list(removed)

    def churn(i: int) -> None:
        if doomed:
            r.srem("s", doomed.pop())
        r.sadd("s", b"new:%d" % i)

    seen, sizes = _walk(lambda c: r.sscan("s", c, count=50), churn)  # type: ignore[arg-type]
    assert len(sizes) > 5 and max(sizes) < 200  # pages, not everything at once
    counted = {m: seen.count(m) for m in steady}
    assert set(counted.values()) == {1}
    assert set(seen) <= set(members) | {b"new:%d" % i for i in range(len(sizes))}


@pytest.mark.parametrize("gkv_client", [2, 3], indirect=True)
def test_zscan_pages_a_large_zset_with_scores(gkv_client: redis.Redis) -> None:
    r = gkv_client
    r.zadd("z", {b"m:%d" % i: i / 4 for i in range(N)})

    def churn(i: int) -> None:
        r.zadd("z", {b"m:%d" % i: -1.5})  # a score change moves no member between pages

    pairs: list[tuple[bytes, float]] = []

    def step(cursor: int) -> tuple[int, list[bytes]]:
        cursor, page = r.zscan("z", cursor, count=40)  # type: ignore[misc]
        pairs.extend(page)
        return cursor, [m for m, _ in page]

    seen, sizes = _walk(step, churn)
    assert len(sizes) > 5 and max(sizes) < 200
    assert sorted(seen) == sorted(b"m:%d" % i for i in range(N))  # each exactly once
    for m, score in pairs:
        i = int(m.split(b":")[1])
        assert score in (i / 4, -1.5)


@pytest.mark.parametrize("gkv_client", [2], indirect=True)
def test_small_collections_come_whole(gkv_client: redis.Redis) -> None:
    r = gkv_client
    r.sadd("s", *range(100))
    r.zadd("z", {b"m%d" % i: i for i in range(100)})
    cursor, members = r.sscan("s", 0, count=5)  # type: ignore[misc]
    assert cursor == 0 and len(members) == 100
    cursor, pairs = r.zscan("z", 0, count=5)  # type: ignore[misc]
    assert cursor == 0 and [m for m, _ in pairs] == [b"m%d" % i for i in range(100)]
