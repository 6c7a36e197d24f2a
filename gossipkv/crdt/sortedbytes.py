"""A sorted list of bytes: the sorted set's index of score-and-member keys.

The layout is sortedcontainers' SortedList (a list of sublists of about ``LOAD`` keys, with each
sublist's last key in ``maxes`` to bisect on), kept here so that it compiles with the rest of the
request path: interpreted, SortedList's add, remove and lookup cost a ZADD or ZPOPMIN about half
a microsecond more. Sublists are shorter than SortedList's (256 keys, not 1000), so that ZPOPMIN's
removal from the front shifts less memory; bisecting costs the same. Ranks come from a Fenwick
tree over the sublists' lengths, built on the first rank asked for and kept up to date until a
sublist splits or goes.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator
from typing import Final

LOAD: Final = 256  # a sublist's usual size: it splits at twice this, joins a neighbour below half


class SortedBytes:
    __slots__ = ("_len", "_lists", "_load", "_maxes", "_tree")

    def __init__(self, keys: Iterable[bytes] = (), load: int = LOAD) -> None:
        ordered = sorted(keys)
        self._load = load
        self._lists: list[list[bytes]] = [
            ordered[i : i + load] for i in range(0, len(ordered), load)
        ]
        self._maxes: list[bytes] = [sub[-1] for sub in self._lists]
        self._len = len(ordered)
        # Fenwick tree of sublist lengths (1-based); empty when not built.
        self._tree: list[int] = []

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[bytes]:
        for sub in self._lists:
            yield from sub

    def copy(self) -> SortedBytes:
        c = SortedBytes(load=self._load)
        c._lists = [list(sub) for sub in self._lists]
        c._maxes = list(self._maxes)
        c._len = self._len
        return c

    # -- changes ---------------------------------------------------------------------------------

    def add(self, key: bytes) -> None:
        maxes = self._maxes
        if not maxes:
            self._lists.append([key])
            maxes.append(key)
            self._len = 1
            return
        pos = bisect_right(maxes, key)
        if pos == len(maxes):
            pos -= 1
            sub = self._lists[pos]
            sub.append(key)
            maxes[pos] = key
        else:
            sub = self._lists[pos]
            insort(sub, key)
        self._len += 1
        if self._split(pos):
            self._tree = []
        elif self._tree:
            self._grow(pos, 1)

    def _seek(self, key: bytes) -> tuple[int, int]:
        """(sublist, offset in it) of the first key >= ``key``; sublist = len(maxes) past the
        end."""
        maxes = self._maxes
        # ZPOPMIN removes the first key: one comparison each instead of two bisections.
        pos = 0 if maxes and key <= maxes[0] else bisect_left(maxes, key)
        if pos == len(maxes):
            return pos, 0
        sub = self._lists[pos]
        return pos, 0 if key <= sub[0] else bisect_left(sub, key)

    def remove(self, key: bytes) -> None:
        """Remove ``key``, which must be present (ValueError otherwise)."""
        pos, at = self._seek(key)
        maxes = self._maxes
        if pos == len(maxes) or self._lists[pos][at] != key:
            raise ValueError(key)
        sub = self._lists[pos]
        del sub[at]
        self._len -= 1
        if not sub:
            del self._lists[pos]
            del maxes[pos]
            self._tree = []
            return
        if at == len(sub):
            maxes[pos] = sub[-1]
        load = self._load
        if len(sub) < load // 2 and len(self._lists) > 1:
            # join with a neighbour (and split again if that makes it too long)
            left = pos - 1 if pos else pos
            self._lists[left].extend(self._lists[left + 1])
            del self._lists[left + 1]
            del maxes[left + 1]
            maxes[left] = self._lists[left][-1]
            self._split(left)
            self._tree = []
        elif self._tree:
            self._grow(pos, -1)

    def _split(self, pos: int) -> bool:
        """Split sublist ``pos`` in two if it holds more than twice the load; whether it did."""
        sub = self._lists[pos]
        load = self._load
        if len(sub) <= 2 * load:
            return False
        self._lists.insert(pos + 1, sub[load:])
        del sub[load:]
        self._maxes[pos] = sub[-1]
        self._maxes.insert(pos + 1, self._lists[pos + 1][-1])
        return True

    # -- positions -------------------------------------------------------------------------------

    def __getitem__(self, rank: int) -> bytes:
        """The key at ``rank`` (negative counts from the end); IndexError when out of range."""
        if rank < 0:
            rank += self._len
        if rank < 0 or rank >= self._len:
            raise IndexError("rank out of range")
        lists = self._lists
        if rank < len(lists[0]):
            return lists[0][rank]
        last = lists[-1]
        tail = self._len - len(last)
        if rank >= tail:
            return last[rank - tail]
        pos, offset = self._locate(rank)
        return lists[pos][offset]

    def islice(self, start: int, stop: int) -> Iterator[bytes]:
        """Keys of ranks ``start`` up to ``stop`` (excluded), both within 0..len."""
        if start >= stop:
            return
        pos, offset = self._locate(start) if start else (0, 0)
        lists = self._lists
        left = stop - start
        while left > 0:
            sub = lists[pos]
            end = min(len(sub), offset + left)
            yield from sub[offset:end]
            left -= end - offset
            pos += 1
            offset = 0

    def bisect_left(self, key: bytes) -> int:
        """The rank the first key >= ``key`` has (len when none)."""
        pos, at = self._seek(key)
        if pos == len(self._maxes):
            return self._len
        return self._before(pos) + at

    def index(self, key: bytes) -> int:
        """The rank of ``key``, which must be present (ValueError otherwise)."""
        pos, at = self._seek(key)
        if pos == len(self._maxes) or self._lists[pos][at] != key:
            raise ValueError(key)
        return self._before(pos) + at

    # -- the Fenwick tree ------------------------------------------------------------------------

    def _build(self) -> list[int]:
        lists = self._lists
        n = len(lists)
        tree = [0] * (n + 1)
        for i in range(1, n + 1):
            tree[i] += len(lists[i - 1])
            parent = i + (i & -i)
            if parent <= n:
                tree[parent] += tree[i]
        self._tree = tree
        return tree

    def _grow(self, pos: int, by: int) -> None:
        tree = self._tree
        n = len(tree) - 1
        i = pos + 1
        while i <= n:
            tree[i] += by
            i += i & -i

    def _before(self, pos: int) -> int:
        """How many keys the sublists before ``pos`` hold."""
        if pos == 0:
            return 0
        tree = self._tree or self._build()
        total = 0
        i = pos
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total

    def _locate(self, rank: int) -> tuple[int, int]:
        """(sublist, offset in it) of the key at ``rank`` (0 <= rank < len)."""
        tree = self._tree or self._build()
        n = len(tree) - 1
        pos = 0
        step = 1
        while step * 2 <= n:
            step *= 2
        while step:
            nxt = pos + step
            if nxt <= n and tree[nxt] <= rank:
                pos = nxt
                rank -= tree[nxt]
            step //= 2
        return pos, rank
