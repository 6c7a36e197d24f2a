"""The sorted set's index against a plain sorted list: any sequence of adds and removes leaves
the same order, and every rank, bisection and slice agrees, across sublist splits and joins."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipkv.crdt.sortedbytes import SortedBytes

KEYS = st.binary(min_size=0, max_size=3)
OPS = st.lists(st.tuples(st.booleans(), KEYS, st.integers(0, 10**6)), max_size=300)


def check(index: SortedBytes, model: list[bytes], probe: bytes, n: int) -> None:
    assert list(index) == model
    assert len(index) == len(model) and bool(index) == bool(model)
    assert index.bisect_left(probe) == bisect.bisect_left(model, probe)
    if model:
        rank = n % len(model)
        assert index[rank] == model[rank]
        assert index[-1 - rank] == model[-1 - rank]
        assert index.index(model[rank]) == bisect.bisect_left(model, model[rank])
        start = n % (len(model) + 1)
        stop = start + n % 7
        assert list(index.islice(start, min(stop, len(model)))) == model[start:stop]
    with pytest.raises(IndexError):
        index[len(model)]


@settings(deadline=None, max_examples=300)
@given(start=st.lists(KEYS, max_size=50), ops=OPS, load=st.sampled_from([1, 2, 4, 1000]))
def test_matches_a_sorted_list(
    start: list[bytes], ops: list[tuple[bool, bytes, int]], load: int
) -> None:
    """Small sublists split and join often within a short sequence."""
    index = SortedBytes(start, load=load)
    model = sorted(start)
    for adding, key, n in ops:
        if adding:
            index.add(key)
            bisect.insort(model, key)
        elif key in model:
            index.remove(key)
            model.remove(key)
        else:
            with pytest.raises(ValueError):
                index.remove(key)
            with pytest.raises(ValueError):
                index.index(key)
        check(index, model, key, n)
    copied = index.copy()
    copied.add(b"\xff" * 4)
    assert list(index) == model


def test_many_sublists_split_and_join() -> None:
    """Enough keys for many sublists of the real size: ranks stay right as keys come and go
    from the front (ZPOPMIN), the back and the middle, and after the tree is rebuilt."""
    keys = [b"%08d" % i for i in range(0, 20000, 2)]
    index = SortedBytes(keys)
    model = list(keys)
    for i in range(1, 20000, 4):
        index.add(b"%08d" % i)
        bisect.insort(model, b"%08d" % i)
        if i % 400 == 1:
            assert index.index(model[len(model) // 3]) == len(model) // 3
    for step in range(6000):
        victim = model[(0, -1, len(model) // 2)[step % 3]]
        index.remove(victim)
        model.remove(victim)
        if step % 500 == 0:
            assert index[len(model) // 2] == model[len(model) // 2]
            assert index.bisect_left(b"%08d" % 12345) == bisect.bisect_left(model, b"%08d" % 12345)
    assert list(index) == model
    assert list(index.islice(100, 2100)) == model[100:2100]


def test_small_load_splits() -> None:
    index = SortedBytes(load=4)
    model: list[bytes] = []
    for i in range(200):
        key = b"%03d" % ((i * 37) % 200)
        index.add(key)
        bisect.insort(model, key)
        check(index, model, key, i)
    for i in range(200):
        key = b"%03d" % ((i * 53) % 200)
        index.remove(key)
        model.remove(key)
        check(index, model, key, i)
