"""Lifeguard's local health multiplier, after memberlist's awareness.go.

A node that misses nacks or has to refute accusations is probably the slow one, not its peers;
it stretches its own probe timeouts instead of accusing others of its own trouble.
"""

from __future__ import annotations


class Awareness:
    def __init__(self, max_multiplier: int) -> None:
        self.max = max(1, max_multiplier)
        self.score = 0  # 0 = healthy; never reaches max

    def apply(self, delta: int) -> None:
        self.score = min(self.max - 1, max(0, self.score + delta))

    def scale(self, timeout: float) -> float:
        return timeout * (self.score + 1)
