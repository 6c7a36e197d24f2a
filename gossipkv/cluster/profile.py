"""Timing profiles for membership, after memberlist's LAN, WAN and local configurations."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Profile:
    name: str
    probe_interval: float  # seconds between probes of one member
    probe_timeout: float  # wait for a direct ack before asking others (ping-req)
    indirect_checks: int  # k members asked to ping-req a silent member
    suspicion_mult: int  # suspicion timeout = mult * log10(n) * probe_interval ...
    suspicion_max_timeout_mult: int  # ... shrinking from max to min with confirmations
    retransmit_mult: int  # each update piggybacks on retransmit_mult * log10(n+1) messages
    gossip_interval: float  # seconds between gossip rounds of queued updates
    gossip_nodes: int  # members gossiped to per round
    push_pull_interval: float  # seconds between full-state TCP exchanges
    tcp_timeout: float  # connect/read timeout of TCP exchanges
    awareness_max_multiplier: int  # Lifeguard: how far a struggling node stretches its timeouts
    dead_reap_after: float  # dead and left members are forgotten after this many seconds
    stall_grace: float  # after an event-loop stall this long, convict no one for a while

    def suspicion_timeout(self, n: int) -> float:
        """memberlist's suspicionTimeout: mult * max(1, log10(n)) * probe interval."""
        scale = max(1.0, math.log10(max(1, n)))
        return self.suspicion_mult * scale * self.probe_interval

    def retransmit_limit(self, n: int) -> int:
        """memberlist's retransmitLimit: mult * ceil(log10(n + 1))."""
        return self.retransmit_mult * math.ceil(math.log10(n + 1))


LAN = Profile(
    name="lan",
    probe_interval=1.0,
    probe_timeout=0.5,
    indirect_checks=3,
    suspicion_mult=4,
    suspicion_max_timeout_mult=6,
    retransmit_mult=4,
    gossip_interval=0.2,
    gossip_nodes=3,
    push_pull_interval=30.0,
    tcp_timeout=10.0,
    awareness_max_multiplier=8,
    dead_reap_after=60.0,
    stall_grace=1.0,
)
WAN = replace(
    LAN,
    name="wan",
    probe_interval=5.0,
    probe_timeout=3.0,
    suspicion_mult=6,
    gossip_interval=0.5,
    gossip_nodes=4,
    push_pull_interval=60.0,
    tcp_timeout=30.0,
    dead_reap_after=120.0,
    stall_grace=5.0,
)
LOCAL = replace(
    LAN,
    name="local",
    probe_interval=0.5,
    probe_timeout=0.2,
    indirect_checks=1,
    suspicion_mult=3,
    retransmit_mult=2,
    gossip_interval=0.1,
    push_pull_interval=15.0,
    tcp_timeout=1.0,
    dead_reap_after=30.0,
    stall_grace=0.5,
)
PROFILES = {p.name: p for p in (LAN, WAN, LOCAL)}
