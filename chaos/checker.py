"""The checker: from the recorded operations and DESIGN.md's rules, what every replica must hold,
verified on every node once the cluster has converged (equal DEBUG DIGEST everywhere).

- counters: the sum of acknowledged increments <= value <= that + the uncertain increments;
- sets: every acknowledged add never removed is present, every acknowledged remove's member
  (added and removed by the same client, so the remove observed the add) is absent, and nothing
  is present that no client ever tried to add;
- strings (last writer wins by (HLC, node)): the final stamp is at least every learnt stamp,
  and the final value is the write with the greatest learnt stamp, or a write whose stamp is
  unknown (uncertain, or acknowledged without a stamp); never a write seen replaced.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaos.workload import OK, UNCERTAIN, Op


@dataclass
class Check:
    name: str
    keys: int = 0
    items: int = 0  # what was verified: counters, members or registers, summed over nodes
    violations: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    checks: list[Check]
    digests_equal: bool

    @property
    def ok(self) -> bool:
        return self.digests_equal and not any(c.violations for c in self.checks)

    def violations(self) -> list[str]:
        return [v for c in self.checks for v in c.violations]


Reader = Callable[..., Any]  # execute_command on one node


def check(ops: Sequence[Op], nodes: dict[str, Reader], digests_equal: bool) -> Verdict:
    """Verify every node (name -> its execute_command) against the operations."""
    checks = [
        _counters(ops, nodes),
        _sets(ops, nodes),
        _strings(ops, nodes),
    ]
    return Verdict(checks, digests_equal)


def _counters(ops: Sequence[Op], nodes: dict[str, Reader]) -> Check:
    low: dict[str, int] = defaultdict(int)
    extra: dict[str, int] = defaultdict(int)
    for op in ops:
        if op.kind != "incr":
            continue
        if op.outcome == OK:
            low[op.key] += int(op.arg)
        elif op.outcome == UNCERTAIN:
            extra[op.key] += int(op.arg)
    c = Check("counters (INCRBY)", keys=len(low.keys() | extra.keys()))
    for node, run in nodes.items():
        for key in sorted(low.keys() | extra.keys()):
            raw = run("GET", key)
            got = int(raw) if raw is not None else 0
            c.items += 1
            lo, hi = low[key], low[key] + extra[key]
            if not lo <= got <= hi:
                c.violations.append(f"{node}: {key} = {got}, expected {lo}..{hi}")
    return c


def _sets(ops: Sequence[Op], nodes: dict[str, Reader]) -> Check:
    tried: dict[str, set[str]] = defaultdict(set)  # any add attempted
    added: dict[str, set[str]] = defaultdict(set)  # an add acknowledged
    remove_tried: dict[str, set[str]] = defaultdict(set)
    removed: dict[str, set[str]] = defaultdict(set)  # a remove acknowledged
    for op in ops:
        member = str(op.arg)
        if op.kind == "sadd":
            tried[op.key].add(member)
            if op.outcome == OK:
                added[op.key].add(member)
        elif op.kind == "srem":
            remove_tried[op.key].add(member)
            if op.outcome == OK:
                removed[op.key].add(member)
    c = Check("sets (SADD/SREM)", keys=len(tried))
    for node, run in nodes.items():
        for key in sorted(tried):
            got = set(run("SMEMBERS", key) or ())
            must = added[key] - remove_tried[key]
            must_not = (removed[key]) | (got - tried[key])
            c.items += len(must) + len(removed[key])
            missing = must - got
            extra = got & must_not
            if missing:
                c.violations.append(
                    f"{node}: {key} lost {len(missing)} acknowledged adds, e.g. "
                    f"{sorted(missing)[:3]}"
                )
            if extra:
                c.violations.append(
                    f"{node}: {key} holds {len(extra)} removed or never-added members, e.g. "
                    f"{sorted(extra)[:3]}"
                )
    return c


def _strings(ops: Sequence[Op], nodes: dict[str, Reader]) -> Check:
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind == "set":
            by_key[op.key].append(op)
    c = Check("strings (SET, LWW)", keys=len(by_key))
    for node, run in nodes.items():
        for key, writes in sorted(by_key.items()):
            c.items += 1
            stamped = [w for w in writes if w.outcome == OK and w.stamp is not None]
            unknown = {
                str(w.arg) for w in writes
                if not w.superseded and (
                    w.outcome == UNCERTAIN or (w.outcome == OK and w.stamp is None)
                )
            }
            reply = run("DEBUG", "STAMP", key)
            if reply is None:
                if stamped:
                    c.violations.append(f"{node}: {key} missing")
                continue
            value, ts, who = str(reply[0]), int(reply[1]), str(reply[2])
            if not stamped:
                if value not in unknown:
                    c.violations.append(f"{node}: {key} = {value!r}, no such write could win")
                continue
            best = max(stamped, key=lambda w: w.stamp or (0, ""))
            assert best.stamp is not None
            if (ts, who) < best.stamp:
                c.violations.append(
                    f"{node}: {key} stamp {(ts, who)} older than acknowledged {best.stamp}"
                )
            elif value != best.arg and value not in unknown:
                c.violations.append(
                    f"{node}: {key} = {value!r}, expected {best.arg!r} (stamp {best.stamp})"
                )
            elif value == best.arg and (ts, who) != best.stamp:
                c.violations.append(f"{node}: {key} = {value!r} with a foreign stamp {(ts, who)}")
    return c
