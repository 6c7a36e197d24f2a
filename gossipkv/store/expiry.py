"""The expiry index: which live keys carry a deadline, and which deadline passes next."""

from __future__ import annotations

import heapq


class ExpiryIndex:
    """Deadlines by key, plus a heap to find due keys without scanning.

    The heap may hold stale (deadline, key) pairs after a key's deadline changes; they are
    skipped when popped, and the heap is rebuilt once stale pairs outnumber live ones.
    """

    __slots__ = ("_heap", "deadlines")

    def __init__(self) -> None:
        self.deadlines: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self.deadlines)

    def set(self, key: bytes, deadline: int) -> None:
        """Record a key's deadline (0 removes it)."""
        if deadline:
            if self.deadlines.get(key) != deadline:
                self.deadlines[key] = deadline
                heapq.heappush(self._heap, (deadline, key))
                if len(self._heap) > 2 * len(self.deadlines) + 1024:
                    self._compact()
        else:
            self.deadlines.pop(key, None)

    def due(self, now_ms: int, limit: int) -> list[bytes]:
        """Up to ``limit`` keys whose deadline is <= now_ms, earliest first."""
        out: list[bytes] = []
        heap = self._heap
        deadlines = self.deadlines
        while heap and len(out) < limit and heap[0][0] <= now_ms:
            deadline, key = heapq.heappop(heap)
            if deadlines.get(key) == deadline:
                out.append(key)
        return out

    def clear(self) -> None:
        self.deadlines.clear()
        self._heap.clear()

    def _compact(self) -> None:
        self._heap = [(d, k) for k, d in self.deadlines.items()]
        heapq.heapify(self._heap)
