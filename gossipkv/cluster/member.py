"""A cluster member as membership knows it: identity, addresses, state and incarnation."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any


class State(enum.IntEnum):
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@dataclass
class Member:
    name: str
    region: str
    host: str
    client_port: int
    cluster_port: int
    admin_port: int = 0  # 0: no admin endpoint
    incarnation: int = 0
    state: State = State.ALIVE
    # Monotonic time of the last state change, for reaping dead and left members.
    changed: float = field(default_factory=time.monotonic)

    @property
    def cluster_addr(self) -> tuple[str, int]:
        return (self.host, self.cluster_port)

    def encode(self) -> list[Any]:
        return [
            self.name, self.region, self.host, self.client_port, self.cluster_port,
            self.admin_port, self.incarnation, int(self.state),
        ]

    @classmethod
    def decode(cls, data: list[Any]) -> Member:
        name, region, host, client_port, cluster_port, admin_port, inc, state = data
        return cls(name, region, host, client_port, cluster_port, admin_port, inc, State(state))
