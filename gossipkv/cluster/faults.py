"""Fault injection for chaos testing: per-peer rules that cut, drop or delay cluster traffic.

Off unless the node runs with ``--chaos`` (or ``[cluster] chaos = true``); the admin endpoint's
``/chaos`` edits the rules. A rule names a member (or ``*`` for every peer), an action and a
direction, as seen from this node:

- ``cut``: every packet to/from the peer is dropped, and every stream with it is refused and
  closed, both ways (a TCP stream needs both directions): a partition.
- ``drop``: each UDP packet is dropped with probability ``rate``; each replication delta frame
  too, and the receiver then skips the frame's operations as if it had merged them, so the data
  is lost to streaming and only anti-entropy brings it back.
- ``delay``: packets and replication frames are held ``delay_ms`` +/- ``jitter_ms``.

The bus asks ``allow`` (cut) for every packet and stream, and ``packet``/``frame`` (drop and
delay) for every packet and replication frame. Packets name their peer by cluster address,
mapped to a member name through membership; inbound streams by the sender name in their hello.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

Addr = tuple[str, int]

ACTIONS = ("cut", "drop", "delay")
DIRECTIONS = ("in", "out", "both")
ANY = "*"


class RuleError(ValueError):
    """A rule document the endpoint cannot accept; the message is the one line it answers."""


@dataclass(frozen=True)
class Rule:
    peer: str
    action: str
    direction: str = "both"
    rate: float = 1.0
    delay_ms: int = 0
    jitter_ms: int = 0

    def covers(self, direction: str) -> bool:
        return self.direction == "both" or self.direction == direction

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_rule(doc: Any) -> Rule:
    """A rule from its JSON document; RuleError names the first fault."""
    if not isinstance(doc, dict):
        raise RuleError("a rule is a JSON object")
    unknown = set(doc) - {"peer", "action", "direction", "rate", "delay_ms", "jitter_ms"}
    if unknown:
        raise RuleError(f"unknown field {sorted(unknown)[0]!r}")
    peer = doc.get("peer")
    if not isinstance(peer, str) or not peer:
        raise RuleError("peer must be a member name or *")
    action = doc.get("action")
    if action not in ACTIONS:
        raise RuleError(f"action must be one of {', '.join(ACTIONS)}")
    direction = doc.get("direction", "both")
    if direction not in DIRECTIONS:
        raise RuleError(f"direction must be one of {', '.join(DIRECTIONS)}")
    rate = doc.get("rate", 1.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise RuleError("rate must be a number from 0.0 to 1.0")
    ints: dict[str, int] = {}
    for key in ("delay_ms", "jitter_ms"):
        v = doc.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 600_000:
            raise RuleError(f"{key} must be an integer from 0 to 600000")
        ints[key] = v
    if action == "delay" and ints["jitter_ms"] > ints["delay_ms"]:
        raise RuleError("jitter_ms must not exceed delay_ms")
    return Rule(peer, action, direction, float(rate), ints["delay_ms"], ints["jitter_ms"])


class Faults:
    """The rules in force on this node, and what they have done so far."""

    def __init__(
        self, name_of: Callable[[Addr], str | None], rng: random.Random | None = None
    ) -> None:
        self.name_of = name_of  # a peer's cluster address -> its member name, if known
        self.rng = rng or random.Random()
        self.rules: dict[tuple[str, str], Rule] = {}  # by (peer, action): one of each
        self.listeners: list[Callable[[], None]] = []  # told after every change
        self.counters = {
            "packets_dropped": 0,
            "packets_delayed": 0,
            "frames_dropped": 0,
            "frames_delayed": 0,
            "streams_refused": 0,
        }

    @property
    def active(self) -> bool:
        return bool(self.rules)

    # -- editing --------------------------------------------------------------------------------

    def add(self, rule: Rule) -> None:
        self.rules[(rule.peer, rule.action)] = rule
        self._changed()

    def clear(self, peer: str | None = None) -> int:
        """Remove every rule, or those naming ``peer``; returns how many went."""
        gone = [k for k in self.rules if peer is None or k[0] == peer]
        for k in gone:
            del self.rules[k]
        if gone:
            self._changed()
        return len(gone)

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "rules": [r.to_json() for r in self.rules.values()],
            "counters": dict(self.counters),
        }

    def _changed(self) -> None:
        for f in list(self.listeners):
            f()

    # -- verdicts -------------------------------------------------------------------------------

    def _rule(self, name: str | None, action: str, direction: str) -> Rule | None:
        rules = self.rules
        r = rules.get((name, action)) if name is not None else None
        if r is None:
            r = rules.get((ANY, action))
        return r if r is not None and r.covers(direction) else None

    def is_cut(self, name: str | None, direction: str = "both") -> bool:
        """Is traffic with this member cut? Streams ask with "both": any cut breaks them."""
        if not self.rules:
            return False
        if direction == "both":
            return self._rule(name, "cut", "in") is not None or (
                self._rule(name, "cut", "out") is not None
            )
        return self._rule(name, "cut", direction) is not None

    def allow(self, kind: str, addr: Addr, direction: str) -> bool:
        """The bus's filter for packets and outbound streams (by the peer's cluster address)."""
        if not self.rules:
            return True
        return not self.is_cut(self.name_of(addr), direction)

    def allow_stream(self, name: str | None) -> bool:
        """An inbound stream from the member its hello names (None: unknown sender)."""
        if self.is_cut(name):
            self.counters["streams_refused"] += 1
            return False
        return True

    def _fate(self, name: str | None, direction: str, what: str) -> float | None:
        """None: drop it; else the seconds to hold it (0: pass at once)."""
        drop = self._rule(name, "drop", direction)
        if drop is not None and self.rng.random() < drop.rate:
            self.counters[f"{what}_dropped"] += 1
            return None
        delay = self._rule(name, "delay", direction)
        if delay is None or delay.delay_ms <= 0:
            return 0.0
        self.counters[f"{what}_delayed"] += 1
        ms = delay.delay_ms + self.rng.uniform(-delay.jitter_ms, delay.jitter_ms)
        return max(ms, 0.0) / 1000

    def packet(self, addr: Addr, direction: str) -> float | None:
        """Drop and delay for one UDP packet (cut is ``allow``'s)."""
        if not self.rules:
            return 0.0
        return self._fate(self.name_of(addr), direction, "packets")

    def frame(self, name: str, direction: str) -> float | None:
        """Drop and delay for one replication delta frame to or from member ``name``."""
        if not self.rules:
            return 0.0
        return self._fate(name, direction, "frames")


def stream_sender(hello: list[Any]) -> str | None:
    """The member an inbound stream comes from: streams' hellos name their sender at [1],
    directly (replication, anti-entropy) or as the first row of a member-state list
    (membership's push-pull)."""
    if len(hello) < 2:
        return None
    who = hello[1]
    if isinstance(who, str):
        return who
    if isinstance(who, list) and who and isinstance(who[0], list) and who[0]:
        first = who[0][0]
        return first if isinstance(first, str) else None
    return None
