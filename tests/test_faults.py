"""Fault injection: the /chaos endpoint, and what its rules do to real nodes' traffic.

Nodes are real processes started from the CLI with ``--chaos`` (or without, for the 403).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gossipkv.admin.chaos import OFF, ChaosError, request
from gossipkv.cluster.faults import Faults, Rule, RuleError, parse_rule, stream_sender
from gossipkv.config import ConfigError, load
from tests.cluster_procs import ClusterNode, formed, start_cluster, stop_all
from tests.servers import ROOT, free_port, start_gossipkv, wait_for


def chaos(node: ClusterNode, method: str, rule: dict[str, Any] | None = None,
          query: str = "") -> dict[str, Any]:
    return request("127.0.0.1", node.admin_port, method, rule, query)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ClusterNode]]:
    nodes = start_cluster(tmp_path_factory.mktemp("faults"), 2, admin=True, extra=["--chaos"])
    yield nodes
    stop_all(nodes)


@pytest.fixture
def clean(pair: list[ClusterNode]) -> Iterator[list[ClusterNode]]:
    """The pair, formed, with no rules before and after the test."""
    wait_for(lambda: formed(pair), 30, "the pair to be formed")
    yield pair
    for node in pair:
        chaos(node, "DELETE")


# -- rules, without a cluster ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ([], "a rule is a JSON object"),
        ({"action": "cut"}, "peer must be a member name or *"),
        ({"peer": "b", "action": "smash"}, "action must be one of cut, drop, delay"),
        ({"peer": "b", "action": "cut", "direction": "up"}, "direction must be one of"),
        ({"peer": "b", "action": "drop", "rate": 1.5}, "rate must be a number"),
        ({"peer": "b", "action": "delay", "delay_ms": -1}, "delay_ms must be an integer"),
        ({"peer": "b", "action": "delay", "delay_ms": 5, "jitter_ms": 9}, "jitter_ms must not"),
        ({"peer": "b", "action": "cut", "speed": 1}, "unknown field 'speed'"),
    ],
)
def test_bad_rules_are_refused_with_a_reason(doc: Any, error: str) -> None:
    with pytest.raises(RuleError, match=error):
        parse_rule(doc)


def test_rules_by_peer_and_wildcard() -> None:
    names = {("10.0.0.2", 1): "b", ("10.0.0.3", 1): "c"}
    faults = Faults(names.get)
    assert faults.allow("ping", ("10.0.0.2", 1), "out")
    faults.add(Rule("b", "cut", "in"))
    assert not faults.allow("ping", ("10.0.0.2", 1), "in")
    assert faults.allow("ping", ("10.0.0.2", 1), "out")  # a one-way cut
    assert faults.is_cut("b")  # but streams are cut both ways
    assert faults.allow("ping", ("10.0.0.3", 1), "in")
    faults.add(Rule("*", "drop", "both", rate=1.0))
    assert faults.packet(("10.0.0.3", 1), "out") is None
    assert faults.frame("c", "in") is None
    assert faults.counters["packets_dropped"] == 1 and faults.counters["frames_dropped"] == 1
    faults.add(Rule("*", "drop", "both", rate=0.0))  # same peer and action: replaced
    assert faults.packet(("10.0.0.3", 1), "out") == 0.0
    assert len(faults.rules) == 2
    assert faults.clear("b") == 1 and faults.clear() == 1 and not faults.active


def test_stream_hellos_name_their_sender() -> None:
    assert stream_sender(["repl", "eu-1", "run"]) == "eu-1"
    assert stream_sender(["pushpull", [["us-2", "us", "127.0.0.1"], ["eu-1"]]]) == "us-2"
    assert stream_sender(["pushpull", []]) is None
    assert stream_sender(["x"]) is None


def test_chaos_is_a_boolean_cluster_setting(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[cluster]\nchaos = true\n")
    assert load(path).chaos and not load(None).chaos
    path.write_text('[cluster]\nchaos = "yes"\n')
    with pytest.raises(ConfigError, match=r"cluster\.chaos must be true or false"):
        load(path)


# -- the endpoint ------------------------------------------------------------------------------


def test_chaos_is_forbidden_unless_enabled(tmp_path: Path) -> None:
    admin = free_port()
    server = start_gossipkv(tmp_path, "--admin-port", str(admin))
    try:
        for method in ("GET", "POST", "DELETE"):
            req = urllib.request.Request(
                f"http://127.0.0.1:{admin}/chaos", method=method,
                data=b'{"peer": "*", "action": "cut"}' if method == "POST" else None,
            )
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=5)
            assert e.value.code == 403
            assert e.value.read().decode() == OFF
    finally:
        server.stop()


def test_rules_are_listed_replaced_and_cleared(clean: list[ClusterNode]) -> None:
    a, b = clean
    assert chaos(a, "GET") == {
        "enabled": True, "rules": [],
        "counters": {
            "packets_dropped": 0, "packets_delayed": 0, "frames_dropped": 0,
            "frames_delayed": 0, "streams_refused": 0,
        },
    }
    chaos(a, "POST", {"peer": b.name, "action": "delay", "delay_ms": 5})
    chaos(a, "POST", {"peer": b.name, "action": "delay", "delay_ms": 7, "jitter_ms": 2})
    doc = chaos(a, "POST", {"peer": "*", "action": "drop", "rate": 0.0})
    assert doc["rules"] == [
        {"peer": b.name, "action": "delay", "direction": "both", "rate": 1.0, "delay_ms": 7,
         "jitter_ms": 2},
        {"peer": "*", "action": "drop", "direction": "both", "rate": 0.0, "delay_ms": 0,
         "jitter_ms": 0},
    ]
    with pytest.raises(ChaosError, match="400 action must be one of"):
        chaos(a, "POST", {"peer": "*", "action": "smash"})
    assert chaos(a, "DELETE", query=f"?peer={b.name}")["removed"] == 1
    assert [r["peer"] for r in chaos(a, "GET")["rules"]] == ["*"]
    assert chaos(a, "DELETE")["removed"] == 1
    assert chaos(a, "GET")["rules"] == []


def test_cli_adds_and_clears_rules(clean: list[ClusterNode]) -> None:
    a, b = clean
    admin = f"127.0.0.1:{a.admin_port}"

    def cli(*args: str) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "gossipkv", "chaos", *args, "--admin", admin],
            capture_output=True, text=True, cwd=ROOT, timeout=30, check=True,
        )
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc

    doc = cli("drop", "--peer", b.name, "--rate", "0.25", "--direction", "in")
    assert doc["rules"][0] | {} == {
        "peer": b.name, "action": "drop", "direction": "in", "rate": 0.25, "delay_ms": 0,
        "jitter_ms": 0,
    }
    assert cli("clear")["removed"] == 1


# -- what the rules do -------------------------------------------------------------------------


def test_dropped_replication_frames_are_lost_to_streaming(clean: list[ClusterNode]) -> None:
    a, b = clean
    with a.client() as ca, b.client() as cb:
        chaos(a, "POST", {"peer": b.name, "action": "drop", "direction": "out", "rate": 1.0})
        ca.set("lost", "1")
        # b acknowledges the frame it was told was lost: WAIT counts it, yet b never merged it.
        assert ca.execute_command("WAIT", 1, 10_000) == 1  # type: ignore[no-untyped-call]
        assert cb.get("lost") is None
        chaos(b, "POST", {"peer": a.name, "action": "drop", "direction": "in", "rate": 1.0})
        chaos(a, "DELETE")
        ca.set("lost-in", "1")  # now dropped on arrival
        assert ca.execute_command("WAIT", 1, 10_000) == 1  # type: ignore[no-untyped-call]
        assert cb.get("lost-in") is None
        chaos(b, "DELETE")
        ca.set("kept", "1")
        assert ca.execute_command("WAIT", 1, 10_000) == 1  # type: ignore[no-untyped-call]
        assert cb.get("kept") == b"1"
        assert cb.get("lost") is None and cb.get("lost-in") is None  # streaming never resends
    assert chaos(a, "GET")["counters"]["frames_dropped"] >= 1
    assert chaos(b, "GET")["counters"]["frames_dropped"] >= 1


def test_delayed_frames_arrive_later(clean: list[ClusterNode]) -> None:
    a, b = clean
    with a.client() as ca, b.client() as cb:
        chaos(a, "POST", {"peer": b.name, "action": "delay", "direction": "out",
                          "delay_ms": 4000})
        ca.set("late", "1")
        # Held for four seconds at least: a WAIT of 0.1 s cannot see b's acknowledgement.
        assert ca.execute_command("WAIT", 1, 100) == 0  # type: ignore[no-untyped-call]
        assert ca.execute_command("WAIT", 1, 20_000) == 1  # type: ignore[no-untyped-call]
        assert cb.get("late") == b"1"
    assert chaos(a, "GET")["counters"]["frames_delayed"] >= 1


def test_cut_makes_the_peer_fail_and_heals(tmp_path: Path) -> None:
    a, b = start_cluster(tmp_path, 2, admin=True, extra=["--chaos"])
    try:
        chaos(a, "POST", {"peer": b.name, "action": "cut"})
        wait_for(lambda: a.state_of(b.name) == "dead", 30, "a to declare b dead")
        wait_for(lambda: b.state_of(a.name) in ("suspect", "dead"), 30, "b to suspect a")
        assert a.members()[b.name]["link"] != "streaming"
        with a.client() as ca, b.client() as cb:
            ca.set("during", "a")
            # Nothing crosses a cut: the write made during it reaches b only after the heal.
            assert ca.execute_command("WAIT", 1, 200) == 0  # type: ignore[no-untyped-call]
            assert cb.get("during") is None
            chaos(a, "DELETE")
            wait_for(lambda: formed([a, b]), 30, "the pair to form again")
            wait_for(lambda: cb.get("during") == b"a", 30, "the write to reach b")
        assert chaos(a, "GET")["counters"]["streams_refused"] >= 1
    except (redis.RedisError, ChaosError):
        print(a.output(), b.output())
        raise
    finally:
        stop_all([a, b])
