"""A suspicion timer that shrinks as independent peers confirm it, after memberlist's suspicion.go.

Lifeguard's dogpile: a lone accuser waits the longest timeout, giving a slow but alive member
time to refute; each further independent accuser brings the conviction closer to the minimum.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable


def remaining_time(n: int, k: int, elapsed: float, min_s: float, max_s: float) -> float:
    """Seconds still to wait after ``n`` of ``k`` wanted confirmations; may be negative."""
    if k < 1:
        return min_s - elapsed
    frac = math.log(n + 1.0) / math.log(k + 1.0)
    timeout = max(min_s, max_s - frac * (max_s - min_s))
    return timeout - elapsed


class Suspicion:
    """Calls ``on_timeout(confirmations)`` once the (shrinking) timeout has run out."""

    def __init__(
        self,
        accuser: str,
        k: int,
        min_s: float,
        max_s: float,
        on_timeout: Callable[[int], None],
    ) -> None:
        self.k = k
        self.min = min_s
        self.max = max_s
        self.n = 0
        # The first accuser may hear its own suspicion gossiped back: it never counts twice.
        self.confirmations = {accuser}
        self._on_timeout = on_timeout
        self._loop = asyncio.get_running_loop()
        self.start = time.monotonic()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(
            min_s if k < 1 else max_s, self._fire
        )

    def confirm(self, accuser: str) -> bool:
        """Count an independent accuser; True when that was news worth re-gossiping."""
        if self.n >= self.k or accuser in self.confirmations:
            return False
        self.confirmations.add(accuser)
        self.n += 1
        if self._timer is not None:
            self._timer.cancel()
            left = remaining_time(self.n, self.k, time.monotonic() - self.start, self.min, self.max)
            self._timer = self._loop.call_later(max(0.0, left), self._fire)
        return True

    def postpone(self, delay: float) -> None:
        """Fire again after ``delay`` seconds: the owner was in no state to convict."""
        self.cancel()
        self._timer = self._loop.call_later(delay, self._fire)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        self._on_timeout(self.n)
