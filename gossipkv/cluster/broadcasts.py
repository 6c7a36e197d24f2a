"""The piggyback queue of membership updates, after memberlist's TransmitLimitedQueue (queue.go).

Each update rides on at most ``retransmit_limit(n)`` outgoing messages: enough, with λ·log n, for
epidemic spread to reach every member with high probability, and no more, so the queue drains.
Updates sent fewer times go first, and among those the newest, because fresh news is what the
cluster is least likely to know already. An update about a member replaces any older one about it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack


@dataclass
class _Queued:
    name: str
    msg: list[Any]
    size: int  # packed bytes, for the packet budget
    id: int  # larger = newer
    transmits: int = 0
    on_done: Callable[[], None] | None = None

    def order(self) -> tuple[int, int]:
        return (self.transmits, -self.id)


class BroadcastQueue:
    def __init__(self, transmit_limit: Callable[[], int], max_queued: int = 4096) -> None:
        self._transmit_limit = transmit_limit
        self._max_queued = max_queued
        self._by_name: dict[str, _Queued] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._by_name)

    def queue(
        self, name: str, msg: list[Any], on_done: Callable[[], None] | None = None
    ) -> None:
        """Queue ``msg`` about member ``name``; ``on_done`` runs once it will not be sent again."""
        old = self._by_name.pop(name, None)
        if old is not None and old.on_done is not None:
            old.on_done()
        size = len(msgpack.packb(msg, use_bin_type=True))
        self._by_name[name] = _Queued(name, msg, size, next(self._ids), on_done=on_done)
        if len(self._by_name) > self._max_queued:
            self._prune()

    def take(
        self,
        budget: int,
        overhead: int = 1,
        skip: Callable[[str, list[Any]], bool] | None = None,
        spend: bool = True,
    ) -> list[list[Any]]:
        """Updates fitting in ``budget`` bytes, each counted as transmitted once more.

        ``skip(name, msg)`` leaves out updates that would be no news to this recipient; with
        ``spend`` false nothing is counted, for a recipient unlikely to pass the news on.
        """
        if not self._by_name:
            return []
        limit = max(1, self._transmit_limit())
        out: list[list[Any]] = []
        used = 0
        for item in sorted(self._by_name.values(), key=_Queued.order):
            if used + item.size + overhead > budget:
                continue
            if skip is not None and skip(item.name, item.msg):
                continue
            used += item.size + overhead
            out.append(item.msg)
            if not spend:
                continue
            item.transmits += 1
            if item.transmits >= limit:
                del self._by_name[item.name]
                if item.on_done is not None:
                    item.on_done()
        return out

    def drop(self, name: str) -> None:
        item = self._by_name.pop(name, None)
        if item is not None and item.on_done is not None:
            item.on_done()

    def pending(self) -> list[tuple[str, int]]:
        """(member name, transmits so far) in send order."""
        return [(i.name, i.transmits) for i in sorted(self._by_name.values(), key=_Queued.order)]

    def _prune(self) -> None:
        """Drop the most transmitted, oldest updates: they have had their chance to spread."""
        ordered = sorted(self._by_name.values(), key=_Queued.order)
        for item in ordered[self._max_queued :]:
            self.drop(item.name)
