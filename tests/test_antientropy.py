"""Merkle anti-entropy and read repair on real clusters of ``gossipkv serve`` processes.

Replication is made to miss writes with the chaos endpoint (a ``drop`` rule loses delta frames
for good: the receiver skips them), so only anti-entropy can bring them back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gossipkv.admin.chaos import request as chaos
from gossipkv.admin.report import fetch
from tests.cluster_procs import ClusterNode, start_cluster, stop_all
from tests.servers import ROOT, wait_for

NO_PERIODIC = ["--chaos", "--anti-entropy-interval", "0"]


def names(prefix: str, n: int) -> list[str]:
    """Keys whose neighbours differ in many bits, so that no test leans on how entry hashes
    of near-identical keys mix (tests/test_merkle.py covers that)."""
    return [f"{prefix}{i}-{i * 2654435761 % 2**32:08x}" for i in range(n)]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[list[ClusterNode]]:
    nodes = start_cluster(tmp_path, 2, admin=True, extra=NO_PERIODIC)
    yield nodes
    stop_all(nodes)


def lose_writes(
    writer: ClusterNode, missing: ClusterNode, keys: Sequence[str], peers: int = 1,
    check: bool = True,
) -> None:
    """Write ``keys`` on ``writer`` while every delta frame to ``missing`` is lost (``check``:
    and make sure they are missing there; periodic exchanges may already repair them)."""
    rule = {"peer": missing.name, "action": "drop", "direction": "out", "rate": 1.0}
    chaos("127.0.0.1", writer.admin_port, "POST", rule)
    try:
        with writer.client() as c:
            pipe = c.pipeline(transaction=False)
            for k in keys:
                pipe.set(k, f"v-{k}")
            pipe.execute()
            # The peer acknowledges the lost operations (it skips them): then they are gone.
            acked = c.execute_command("WAIT", peers, 10000)  # type: ignore[no-untyped-call]
            assert acked == peers
    finally:
        chaos("127.0.0.1", writer.admin_port, "DELETE")
    if check:
        with missing.client() as c:
            assert c.exists(*keys) == 0, "the writes were expected to be lost in flight"


def antientropy(node: ClusterNode, *args: str) -> dict[str, Any]:
    with node.client(protocol=3, decode_responses=True) as c:
        reply = c.execute_command("ANTIENTROPY", *args)  # type: ignore[no-untyped-call]
    assert isinstance(reply, dict), reply
    return reply


def info(node: ClusterNode) -> dict[str, Any]:
    with node.client() as c:
        return dict(c.info("replication"))


def test_forced_sync_repairs_missed_writes_both_ways(pair: list[ClusterNode]) -> None:
    a, b = pair
    lose_writes(a, b, names("a", 20))
    lose_writes(b, a, names("b", 5))
    assert a.digest() != b.digest()
    summary = antientropy(b, "PEER", a.name)
    assert summary["peer"] == a.name
    assert summary["mode"] == "repair"
    assert summary["differences"] == 25
    assert summary["repaired_here"] == 20
    assert summary["repaired_there"] == 5
    assert summary["in_sync"] == 1
    assert summary["error"] == ""
    assert a.digest() == b.digest()
    assert a.dbsize() == b.dbsize() == 25
    # Now in sync: one round trip, well under 2 KiB.
    again = antientropy(a)
    assert again["in_sync"] == 1 and again["differences"] == 0
    assert again["round_trips"] == 1
    assert again["bytes_sent"] + again["bytes_received"] <= 2048
    fields = info(a)
    assert fields["ae_last_in_sync"] == 1
    assert fields["ae_exchanges"] == 1


def test_deletes_and_collections_are_repaired(pair: list[ClusterNode]) -> None:
    a, b = pair
    with a.client() as c:
        c.set("gone", "x")
        c.sadd("s", "1", "2")
        c.execute_command("WAIT", 1, 10000)  # type: ignore[no-untyped-call]
    rule = {"peer": b.name, "action": "drop", "direction": "out", "rate": 1.0}
    chaos("127.0.0.1", a.admin_port, "POST", rule)
    try:
        with a.client() as c:
            c.delete("gone")
            c.sadd("s", "3")
            c.srem("s", "1")
            assert c.execute_command("WAIT", 1, 10000) == 1  # type: ignore[no-untyped-call]
    finally:
        chaos("127.0.0.1", a.admin_port, "DELETE")
    with b.client() as c:
        assert c.get("gone") == b"x"
    summary = antientropy(a, "PEER", b.name)
    assert summary["differences"] == 2
    with b.client() as c:
        assert c.get("gone") is None
        assert c.smembers("s") == {b"2", b"3"}
    assert a.digest() == b.digest()


def test_gossipkv_sync_reports_the_differences(pair: list[ClusterNode]) -> None:
    a, b = pair
    lose_writes(a, b, names("k", 7))
    out = subprocess.run(
        [sys.executable, "-m", "gossipkv", "sync", "--port", str(b.port), "--peer", a.name,
         "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["differences"] == 7
    assert summary["keys_compared"] >= 7
    assert a.digest() == b.digest()
    table = subprocess.run(
        [sys.executable, "-m", "gossipkv", "sync", "--port", str(b.port)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert table.returncode == 0, table.stderr
    assert "keys compared" in table.stdout and "differences" in table.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "gossipkv", "sync", "--port", str(b.port), "--peer", "nobody"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert bad.returncode == 2
    assert "no live member named 'nobody'" in bad.stderr


def test_read_repair_of_a_differing_key(pair: list[ClusterNode]) -> None:
    a, b = pair
    keys = names("r", 30)
    lose_writes(a, b, keys)
    summary = antientropy(b, "PEER", a.name, "DRYRUN")
    assert summary["mode"] == "dryrun"
    assert summary["differences"] == 30
    assert a.digest() != b.digest()  # a dry run repairs nothing
    assert int(info(b)["ae_suspect_leaves"]) > 0
    with b.client() as c:
        key = keys[3]
        c.get(key)  # answered at once from local memory; the repair follows
        wait_for(lambda: c.get(key) == f"v-{key}".encode(), 10, "the read repair of a key")
    assert int(info(b)["ae_read_repairs"]) >= 1
    # An exchange repairs the rest and clears the suspect leaves.
    antientropy(b, "PEER", a.name)
    assert a.digest() == b.digest()
    assert int(info(b)["ae_suspect_leaves"]) == 0


def test_errors(pair: list[ClusterNode]) -> None:
    a, _ = pair
    with a.client() as c:
        with pytest.raises(Exception, match="syntax error"):
            c.execute_command("ANTIENTROPY", "BOGUS")  # type: ignore[no-untyped-call]
        with pytest.raises(Exception, match="no live member named 'x'"):
            c.execute_command("ANTIENTROPY", "PEER", "x")  # type: ignore[no-untyped-call]
        with pytest.raises(Exception, match="cannot exchange with this node itself"):
            c.execute_command("ANTIENTROPY", "PEER", a.name)  # type: ignore[no-untyped-call]


def test_periodic_exchanges_converge_three_nodes(tmp_path: Path) -> None:
    nodes = start_cluster(
        tmp_path, 3, admin=True, extra=["--chaos", "--anti-entropy-interval", "0.3"]
    )
    try:
        a, b, c = nodes
        lose_writes(a, b, names("x", 50), peers=2, check=False)
        lose_writes(c, a, names("y", 50), peers=2, check=False)
        try:
            wait_for(
                lambda: len({n.digest() for n in nodes}) == 1, 20, "anti-entropy to converge"
            )
        except TimeoutError:
            seen = {n.name: (n.dbsize(), n.digest(), info(n).get("ae_last_in_sync")) for n in nodes}
            raise AssertionError(f"not converged: {seen}") from None
        assert all(n.dbsize() == 100 for n in nodes)
        # Each of the 100 missing copies was repaired by exactly one exchange.
        assert sum(int(info(n)["ae_total_differences"]) for n in nodes) == 100
    finally:
        stop_all(nodes)


def peer_row(node: ClusterNode, peer: str) -> dict[str, Any]:
    rows = fetch("127.0.0.1", node.admin_port)["replication"]["peers"]
    return next(r for r in rows if r["name"] == peer)


def test_a_peer_past_the_backlog_is_healed_by_an_exchange_not_a_snapshot(
    tmp_path: Path,
) -> None:
    config = tmp_path / "small-backlog.toml"
    config.write_text('[cluster]\nbacklog_ops = 50\noverrun = "anti-entropy"\n')
    nodes = start_cluster(tmp_path, 2, admin=True, extra=[*NO_PERIODIC, "--config", str(config)])
    a, b = nodes
    try:
        snapshots = peer_row(a, b.name)["snapshots_sent"]
        chaos("127.0.0.1", a.admin_port, "POST", {"peer": b.name, "action": "cut"})
        keys = names("o", 300)  # six times the backlog
        try:
            wait_for(lambda: peer_row(a, b.name)["state"] != "streaming", 10, "the link cut")
            with a.client() as c:
                pipe = c.pipeline(transaction=False)
                for k in keys:
                    pipe.set(k, f"v-{k}")
                pipe.execute()
        finally:
            chaos("127.0.0.1", a.admin_port, "DELETE")
        # Periodic exchanges are off: only the exchange the overrun asks for can heal b.
        wait_for(lambda: b.dbsize() == len(keys), 30, "b healed after the overrun")
        assert a.digest() == b.digest()
        row = peer_row(a, b.name)
        assert row["overruns"] >= 1
        assert row["snapshots_sent"] == snapshots
    finally:
        stop_all(nodes)
