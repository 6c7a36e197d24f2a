"""The chaos scenarios in short form (``make chaos`` runs them in full), and the checker itself:
it must flag every kind of lost or resurrected write, or its PASS would prove nothing."""

from __future__ import annotations

from typing import Any

import pytest

import gossipkv.commands.all  # noqa: F401  (registers every command)
from chaos.checker import check
from chaos.scenarios import run_scenario
from chaos.workload import OK, UNCERTAIN, Op
from gossipkv.commands.table import TABLE


def test_partition_under_load_loses_no_acknowledged_write() -> None:
    result = run_scenario("partition", short=True, converge_within=30)
    assert result.verdict.violations() == []
    assert result.converged and result.ok
    assert result.acknowledged > 100
    assert "not within" not in str(result.figures["A sees B and C failed"])


@pytest.mark.skipif(
    "antientropy" not in TABLE.commands,
    reason="lost replication frames are healed by anti-entropy only, not built yet",
)
def test_loss_and_delay_between_regions_heal() -> None:
    result = run_scenario("lossy", short=True, converge_within=30)
    assert result.verdict.violations() == []
    assert result.ok


# -- the checker on made-up histories ----------------------------------------------------------


class Replica:
    """What one node answers the checker's reads with."""

    def __init__(self, strings: dict[str, Any], sets: dict[str, set[str]],
                 stamps: dict[str, Any]) -> None:
        self.strings, self.sets, self.stamps = strings, sets, stamps

    def __call__(self, *argv: Any) -> Any:
        if argv[0] == "GET":
            return self.strings.get(argv[1])
        if argv[0] == "SMEMBERS":
            return self.sets.get(argv[1], set())
        assert argv[:2] == ("DEBUG", "STAMP")
        return self.stamps.get(argv[2])


HISTORY = [
    Op("a", 0, "incr", "ctr", 3, OK),
    Op("b", 1, "incr", "ctr", 4, OK),
    Op("b", 1, "incr", "ctr", 5, UNCERTAIN),
    Op("a", 0, "sadd", "s", "c0:1", OK),
    Op("a", 0, "sadd", "s", "c0:2", OK),
    Op("a", 0, "srem", "s", "c0:2", OK),
    Op("b", 1, "sadd", "s", "shared:1", OK),
    Op("a", 0, "sadd", "s", "shared:1", UNCERTAIN),
    Op("a", 0, "sadd", "s", "c0:3", UNCERTAIN),
    Op("a", 0, "set", "str", "c0:9", OK, stamp=(100, "a")),
    Op("b", 1, "set", "str", "c1:9", OK, stamp=(105, "b")),
    Op("b", 1, "set", "str", "c1:8", OK, superseded=True),
]
GOOD = {
    "strings": {"ctr": "12"},
    "sets": {"s": {"c0:1", "shared:1", "c0:3"}},
    "stamps": {"str": ["c1:9", 105, "b"]},
}


def verdict(**changes: Any) -> list[str]:
    replica = Replica(**(GOOD | changes))
    return check(HISTORY, {"n1": replica}, digests_equal=True).violations()


def test_checker_accepts_a_correct_replica() -> None:
    assert verdict() == []
    assert verdict(strings={"ctr": "7"}) == []  # the uncertain increment did not happen


@pytest.mark.parametrize(
    ("changes", "found"),
    [
        ({"strings": {"ctr": "6"}}, "ctr = 6, expected 7..12"),
        ({"strings": {"ctr": "13"}}, "ctr = 13, expected 7..12"),
        ({"sets": {"s": {"shared:1", "c0:3"}}}, "lost 1 acknowledged adds"),
        ({"sets": {"s": {"c0:1", "c0:2", "shared:1"}}}, "holds 1 removed or never-added"),
        ({"sets": {"s": {"c0:1", "shared:1", "ghost"}}}, "holds 1 removed or never-added"),
        ({"stamps": {"str": ["c0:9", 100, "a"]}}, "older than acknowledged"),
        ({"stamps": {"str": ["c1:8", 106, "b"]}}, "expected 'c1:9'"),
        ({"stamps": {}}, "str missing"),
    ],
)
def test_checker_flags_lost_and_resurrected_writes(changes: dict[str, Any], found: str) -> None:
    problems = verdict(**changes)
    assert len(problems) == 1 and found in problems[0], problems


def test_unequal_digests_fail_the_verdict() -> None:
    replica = Replica(**GOOD)
    assert not check(HISTORY, {"n1": replica}, digests_equal=False).ok
