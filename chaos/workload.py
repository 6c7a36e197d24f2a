"""The chaos workload: clients on every node writing counters, sets and strings, recording the
outcome of every operation so that the checker can compute what every replica must hold.

Outcomes: ``ok`` (the reply came: the write happened on that node), ``uncertain`` (no reply:
a connection error or timeout during a fault; the write may or may not have happened), ``error``
(an error reply: it did not happen). The key families are designed so that the truth is
determinable from acknowledged operations alone:

- ``chaos:ctr:K``: INCRBY with positive amounts from every node. Must hold the sum of the
  acknowledged amounts, plus at most the sum of the uncertain ones.
- ``chaos:set:K``: SADD of members unique to one client (``c<id>:<n>``), each SREM'd only by
  that client after its add was acknowledged (so the remove observed the add), and SADD of shared
  members (``shared:<n>``) from every node, never removed. After a connection error a client
  removes none of its earlier members: its node may be a new, empty process whose SREM would
  observe nothing (observed-remove) and rightly remove nothing. An acknowledged add never
  followed by a remove must be present everywhere; an acknowledged remove's member must be
  absent.
- ``chaos:str:K``: SET of values unique to one write, each followed by ``DEBUG STAMP`` (the
  register's value, HLC and node), which yields the write's (HLC, node) stamp when the register
  still holds its value, or shows that a later-stamped write already replaced it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

OK = "ok"
UNCERTAIN = "uncertain"
ERROR = "error"


@dataclass
class Op:
    """One operation a client issued and what became of it."""

    node: str
    client: int
    kind: str  # incr, sadd, srem, set
    key: str
    arg: str | int  # amount, member or value
    outcome: str = UNCERTAIN
    stamp: tuple[int, str] | None = None  # set: the write's (HLC, node), when learnt
    superseded: bool = False  # set: a later-stamped write had replaced it on its node


@dataclass
class Target:
    """Where a client connects: a node's name and client port (which may change on restart)."""

    name: str
    port: int
    # Clients of a node about to be killed count a write only once WAIT saw it on a peer.
    wait_replicas: int = 0


@dataclass
class Workload:
    targets: Sequence[Target]
    clients_per_node: int = 2
    ops_per_second: float = 150.0  # per client
    counters: int = 4
    sets: int = 4
    strings: int = 4
    shared_members: int = 16
    seed: int = 1
    socket_timeout: float = 1.0
    ops: list[Op] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _broken: set[int] = field(default_factory=set)  # clients that lost a connection

    def start(self) -> None:
        cid = 0
        for target in self.targets:
            for _ in range(self.clients_per_node):
                t = threading.Thread(
                    target=self._client, args=(target, cid), name=f"client-{cid}", daemon=True
                )
                self._threads.append(t)
                cid += 1
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def count(self, outcome: str) -> int:
        with self._lock:
            return sum(1 for op in self.ops if op.outcome == outcome)

    def _record(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)

    def _connect(self, target: Target) -> redis.Redis:
        # No retries: a command redis-py re-sent after a timeout could be applied twice.
        return redis.Redis(
            port=target.port, socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_timeout, retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )

    def _client(self, target: Target, cid: int) -> None:
        rng = random.Random(self.seed * 1000 + cid)
        interval = 1.0 / self.ops_per_second
        own: list[tuple[str, str]] = []  # (key, member) added by this client, acknowledged
        n = 0
        client = self._connect(target)
        port = target.port
        try:
            while not self._stop.wait(interval):
                if target.port != port:  # the node came back on another port
                    client.close()
                    client = self._connect(target)
                    port = target.port
                n += 1
                r = rng.random()
                if r < 0.4:
                    key = f"chaos:ctr:{rng.randrange(self.counters)}"
                    op = Op(target.name, cid, "incr", key, rng.randint(1, 5))
                    self._run(client, target, op, "INCRBY", key, op.arg)
                elif r < 0.7:
                    self._set_op(client, target, op_rng=rng, cid=cid, n=n, own=own)
                else:
                    key = f"chaos:str:{rng.randrange(self.strings)}"
                    op = Op(target.name, cid, "set", key, f"c{cid}:{n}")
                    if self._run(client, target, op, "SET", key, op.arg):
                        self._learn_stamp(client, op)
        finally:
            client.close()

    def _set_op(
        self, client: redis.Redis, target: Target, op_rng: random.Random, cid: int, n: int,
        own: list[tuple[str, str]],
    ) -> None:
        if cid in self._broken:
            self._broken.discard(cid)
            own.clear()
        r = op_rng.random()
        if own and r < 0.3:
            key, member = own.pop(op_rng.randrange(len(own)))
            self._run(client, target, Op(target.name, cid, "srem", key, member), "SREM", key,
                      member)
            return
        key = f"chaos:set:{op_rng.randrange(self.sets)}"
        shared = r < 0.45  # members every node adds and nobody removes
        member = f"shared:{op_rng.randrange(self.shared_members)}" if shared else f"c{cid}:{n}"
        op = Op(target.name, cid, "sadd", key, member)
        if self._run(client, target, op, "SADD", key, member) and not member.startswith("shared"):
            own.append((key, member))

    def _run(self, client: redis.Redis, target: Target, op: Op, *argv: Any) -> bool:
        """Issue one write and record its outcome; True when acknowledged."""
        try:
            client.execute_command(*argv)  # type: ignore[no-untyped-call]
            if target.wait_replicas:
                got = client.execute_command(  # type: ignore[no-untyped-call]
                    "WAIT", target.wait_replicas, 2000
                )
                if int(got) < target.wait_replicas:
                    raise redis.TimeoutError("not replicated")
            op.outcome = OK
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            op.outcome = UNCERTAIN
            self._broken.add(op.client)
            time.sleep(0.05)  # pacing: a down node is not hammered with reconnects
        except redis.ResponseError:
            op.outcome = ERROR
        self._record(op)
        return op.outcome == OK

    def _learn_stamp(self, client: redis.Redis, op: Op) -> None:
        try:
            reply = client.execute_command("DEBUG", "STAMP", op.key)  # type: ignore[no-untyped-call]
        except (redis.RedisError, OSError):
            return  # stamp unknown: the checker treats the write as a possible winner
        if reply is None:
            return
        value, ts, node = reply
        if value == op.arg:
            op.stamp = (int(ts), str(node))
        else:
            op.superseded = True
