"""The event loop's own lag, so a node that was frozen does not blame its peers for its silence.

After a stall (GC pause, SIGSTOP, a long synchronous call), timers fire late and all at once: a
probe sent before the stall sees its timeout expire before the ack waiting in the socket buffer
is read. Membership asks this monitor whether a stall overlapped a probe before suspecting
anyone, and holds convictions for a while after one.
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger("gossipkv.cluster.membership")


class LagMonitor:
    def __init__(self, grace: float, interval: float = 0.1) -> None:
        self.grace = grace  # a lag longer than this is a stall
        self.interval = interval
        self.lag = 0.0  # seconds the latest tick came late
        self.stall_start = float("-inf")  # the latest stall, as monotonic times
        self.stall_end = float("-inf")
        self._last_tick = time.monotonic()
        self._ticking = False  # only a running monitor can tell a stall is unfolding

    def record(self, lag: float, now: float | None = None) -> None:
        """Account for a tick that came ``lag`` seconds late at ``now``."""
        now = time.monotonic() if now is None else now
        self.lag = max(0.0, lag)
        self._last_tick = now
        if lag > self.grace:
            self.stall_start = now - lag
            self.stall_end = now
            log.warning("event=loop_stall lag_ms=%.0f", lag * 1000)

    def unfolding(self, now: float) -> float:
        """Lag of the tick still due: large when the loop just woke and the monitor has not."""
        return now - self._last_tick - self.interval if self._ticking else 0.0

    def stalled_since(self, since: float, now: float | None = None) -> bool:
        """Whether a stall ended after ``since`` or is being recovered from right now."""
        now = time.monotonic() if now is None else now
        return self.stall_end > since or self.unfolding(now) > self.grace

    def quiet(self, window: float, now: float | None = None) -> bool:
        """Whether we are within ``window`` seconds after a stall: convict no one yet."""
        now = time.monotonic() if now is None else now
        return now - self.stall_end < window or self.unfolding(now) > self.grace

    async def run(self) -> None:
        self._last_tick = time.monotonic()
        self._ticking = True
        try:
            while True:
                await asyncio.sleep(self.interval)
                now = time.monotonic()
                self.record(now - self._last_tick - self.interval, now)
        finally:
            self._ticking = False
