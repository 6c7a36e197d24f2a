"""Tombstone GC driven by the cluster's watermark, on real clusters of ``gossipkv serve``.

A tombstone goes once every member has merged the writes it covers; a member that is away
holds it back until it has been away longer than the GC horizon; a member back after the
horizon is refused (anti-entropy, snapshots) until it restarts empty (``rejoin = "manual"``;
tests/test_rejoin.py has it rejoin by itself), so it cannot bring deleted keys back.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gossipkv.admin.chaos import request as chaos
from gossipkv.admin.report import fetch
from tests.cluster_procs import (
    ClusterNode,
    start_cluster,
    stop_all,
    wait_converged,
    write_concurrently,
)
from tests.servers import wait_for

KEYS = [f"k{i}" for i in range(20)]


def status(node: ClusterNode) -> dict[str, Any]:
    return fetch("127.0.0.1", node.admin_port)


def tombstones(node: ClusterNode) -> int:
    return int(status(node)["keyspace"]["tombstones"])


def set_then_delete(writer: ClusterNode, deleter: ClusterNode, peers: int) -> None:
    with writer.client() as c:
        c.mset({k: "v" for k in KEYS})
        assert c.execute_command("WAIT", peers, 10000) == peers  # type: ignore[no-untyped-call]
    with deleter.client() as c:
        assert c.delete(*KEYS) == len(KEYS)
        assert c.execute_command("WAIT", peers, 10000) == peers  # type: ignore[no-untyped-call]


def wait_passes(nodes: Sequence[ClusterNode], more: int) -> None:
    """Wait until every node has run ``more`` further collection passes."""
    start = {n.name: status(n)["gc"]["passes"] for n in nodes}
    wait_for(
        lambda: all(status(n)["gc"]["passes"] >= start[n.name] + more for n in nodes), 20,
        "collection passes",
    )


def test_tombstones_collected_once_every_member_merged_them(tmp_path: Path) -> None:
    nodes = start_cluster(tmp_path, 3, admin=True)
    try:
        a, b, _ = nodes
        set_then_delete(a, b, 2)
        wait_for(lambda: all(tombstones(n) == 0 for n in nodes), 20, "tombstones to go")
        for n in nodes:
            doc = status(n)["gc"]
            assert set(doc["stable"]) == {m.name for m in nodes}
            assert doc["expelled"] == []
        assert len({n.digest() for n in nodes}) == 1
    finally:
        stop_all(nodes)


def test_a_member_away_holds_tombstones_until_the_horizon(tmp_path: Path) -> None:
    nodes = start_cluster(tmp_path, 3, admin=True, extra=["--gc-horizon", "2"])
    try:
        a, b, c = nodes
        c.stop(signal.SIGKILL)
        set_then_delete(a, b, 1)
        wait_passes([a, b], 3)
        assert tombstones(a) == tombstones(b) == len(KEYS)  # c never merged the deletes
        wait_for(
            lambda: c.name in status(a)["gc"]["expelled"], 30, "the horizon to expel c"
        )
        wait_for(lambda: tombstones(a) == tombstones(b) == 0, 20, "tombstones to go")
        with a.client() as cl:
            assert cl.info("replication")["gc_expelled_members"] == c.name
    finally:
        stop_all(nodes)


def test_lost_deletes_hold_tombstones_until_anti_entropy_heals_the_gap(tmp_path: Path) -> None:
    nodes = start_cluster(
        tmp_path, 2, admin=True, extra=["--chaos", "--anti-entropy-interval", "0"]
    )
    try:
        a, b = nodes
        with a.client() as cl:
            cl.mset({k: "v" for k in KEYS})
            assert cl.execute_command("WAIT", 1, 10000) == 1  # type: ignore[no-untyped-call]
        rule = {"peer": b.name, "action": "drop", "direction": "out", "rate": 1.0}
        chaos("127.0.0.1", a.admin_port, "POST", rule)
        try:
            with a.client() as cl:
                assert cl.delete(*KEYS) == len(KEYS)
                assert cl.execute_command("WAIT", 1, 10000) == 1  # type: ignore[no-untyped-call]
        finally:
            chaos("127.0.0.1", a.admin_port, "DELETE")
        with a.client() as cl:
            cl.set("after", "1")  # acknowledged past the gap: the cursor alone would pass it
            assert cl.execute_command("WAIT", 1, 10000) == 1  # type: ignore[no-untyped-call]
        wait_passes([a], 3)
        assert tombstones(a) == len(KEYS)  # b still shows the keys: they must stay deleted
        with a.client(protocol=3, decode_responses=True) as cl:
            summary = cl.execute_command("ANTIENTROPY", "PEER", b.name)  # type: ignore[no-untyped-call]
        assert summary["differences"] == len(KEYS) and summary["in_sync"] == 1
        wait_for(lambda: tombstones(a) == tombstones(b) == 0, 20, "tombstones to go")
        assert b.dbsize() == 1
    finally:
        stop_all(nodes)


def test_a_delete_not_yet_merged_everywhere_holds_its_tombstone(tmp_path: Path) -> None:
    nodes = start_cluster(tmp_path, 3, admin=True, extra=["--gc-horizon", "60"])
    try:
        a, b, c = nodes
        with a.client() as cl:
            cl.mset({k: "v" for k in KEYS})
            assert cl.execute_command("WAIT", 2, 10000) == 2  # type: ignore[no-untyped-call]
        # Every node samples its clock once more, now past the writes' stamps.
        before = {n.name: status(n)["gc"]["frontier"] for n in nodes}
        wait_for(
            lambda: all(status(n)["gc"]["frontier"] > before[n.name] for n in nodes), 10,
            "a watermark round on every node",
        )
        c.proc.send_signal(signal.SIGSTOP)  # c holds the keys and misses the deletes
        try:
            with b.client() as cl:
                assert cl.delete(*KEYS) == len(KEYS)
            wait_passes([a, b], 3)
            assert tombstones(a) == tombstones(b) == len(KEYS)
        finally:
            c.proc.send_signal(signal.SIGCONT)
    finally:
        stop_all(nodes)


def test_a_member_back_after_the_horizon_does_not_resurrect(tmp_path: Path) -> None:
    nodes = start_cluster(
        tmp_path, 3, admin=True, extra=["--chaos", "--gc-horizon", "2", "--anti-entropy-interval",
                                        "0.5", "--rejoin", "manual"],
    )
    try:
        a, b, c = nodes
        with a.client() as cl:
            cl.set("doomed", "v")
            assert cl.execute_command("WAIT", 2, 10000) == 2  # type: ignore[no-untyped-call]
        chaos("127.0.0.1", c.admin_port, "POST", {"peer": "*", "action": "cut"})
        with a.client() as cl:
            assert cl.delete("doomed") == 1
        wait_for(
            lambda: c.name in status(a)["gc"]["expelled"]
            and c.name in status(b)["gc"]["expelled"]
            and tombstones(a) == tombstones(b) == 0,
            30, "c to be expelled and the tombstone collected",
        )
        with c.client() as cl:
            assert cl.get("doomed") == b"v"  # c never heard of the delete
        chaos("127.0.0.1", c.admin_port, "DELETE")
        with c.client() as cl:
            assert cl.execute_command("MEET", "127.0.0.1", a.port) == b"OK"  # type: ignore[no-untyped-call]
        wait_for(lambda: a.state_of(c.name) == "alive", 20, "a to see c again")
        with a.client() as cl, pytest.raises(Exception, match="must rejoin by snapshot"):
            cl.execute_command("ANTIENTROPY", "PEER", c.name)  # type: ignore[no-untyped-call]
        with c.client() as cl:
            # c may have expelled a as well (a partition looks the same from both sides); a
            # refusal from a or b tells c that it is the one that was away.
            with pytest.raises(Exception, match=r"refuses the state|must rejoin by snapshot"):
                cl.execute_command("ANTIENTROPY", "PEER", a.name)  # type: ignore[no-untyped-call]
            wait_for(
                lambda: cl.info("replication")["gc_rejoin_required"] == 1, 20,
                "c to learn that it must rejoin",
            )
            with pytest.raises(Exception, match="refuses the state"):
                cl.execute_command("ANTIENTROPY", "PEER", a.name)  # type: ignore[no-untyped-call]
        wait_passes([a, b], 2)
        for n in (a, b):
            with n.client() as cl:
                assert cl.get("doomed") is None
        # Restarted empty, c rejoins by snapshot and is readmitted.
        c.stop()
        c.start()
        wait_for(lambda: c.name not in status(a)["gc"]["expelled"], 20, "a to readmit c")
        wait_for(lambda: len({n.digest() for n in nodes}) == 1, 20, "convergence")
        for n in nodes:
            with n.client() as cl:
                assert cl.get("doomed") is None
    finally:
        stop_all(nodes)


def gc_info(node: ClusterNode) -> dict[str, Any]:
    with node.client() as c:
        return c.info("gc")  # type: ignore[no-any-return]


def test_queue_traffic_collects_list_tombstones(tmp_path: Path) -> None:
    """RPUSH/LPOP on every node at once: each popped element's tombstone goes once its removal
    is causally stable, the lists stay equal everywhere, and a drained list key is forgotten."""
    nodes = start_cluster(tmp_path, 3, admin=True)
    try:
        before = {n.name: gc_info(n) for n in nodes}
        rounds = 300

        def queue(node: ClusterNode, seed: int) -> None:
            with node.client() as c:
                for i in range(rounds):
                    c.rpush("q", f"{seed}-{i}")
                    c.lpop("q")  # maybe another node's element (at-least-once across nodes)
                assert c.execute_command("WAIT", 2, 10000) == 2  # type: ignore[no-untyped-call]

        write_concurrently(nodes, queue)
        wait_converged(nodes)
        lengths = set()
        for n in nodes:
            with n.client() as c:
                lengths.add(c.llen("q"))
        assert len(lengths) == 1
        removed = 3 * rounds - lengths.pop()  # elements pushed and popped, once each
        wait_for(
            lambda: all(
                gc_info(n)["elements_collected"] - before[n.name]["elements_collected"]
                >= removed
                for n in nodes
            ),
            30, "every popped element's tombstone to be collected",
        )
        wait_converged(nodes)  # collecting changed no digest apart
        with nodes[0].client() as c:
            c.lpop("q", 10 * rounds)
            assert c.execute_command("WAIT", 2, 10000) == 2  # type: ignore[no-untyped-call]
        wait_for(
            lambda: all(
                gc_info(n)["tombstones"] == 0
                and gc_info(n)["tombstones_collected"]
                > before[n.name]["tombstones_collected"]
                for n in nodes
            ),
            30, "the drained list key to be forgotten",
        )
        wait_converged(nodes)
    finally:
        stop_all(nodes)


def test_list_tombstones_wait_for_every_member(tmp_path: Path) -> None:
    """A member that has not merged the pops (stopped) holds the causal frontier back: no
    list tombstone goes until it has, then they all go."""
    nodes = start_cluster(tmp_path, 3, admin=True, extra=["--gc-horizon", "60"])
    try:
        a, b, c = nodes
        with a.client() as cl:
            cl.rpush("q", *[f"v{i}" for i in range(20)])
            assert cl.execute_command("WAIT", 2, 10000) == 2  # type: ignore[no-untyped-call]
        c.proc.send_signal(signal.SIGSTOP)
        try:
            before = {n.name: gc_info(n)["elements_collected"] for n in (a, b)}
            with b.client() as cl:
                assert len(cl.lpop("q", 10)) == 10  # type: ignore[arg-type]
                assert cl.execute_command("WAIT", 1, 10000) == 1  # type: ignore[no-untyped-call]
            wait_passes([a, b], 3)
            for n in (a, b):
                assert gc_info(n)["elements_collected"] == before[n.name]
        finally:
            c.proc.send_signal(signal.SIGCONT)
        wait_for(
            lambda: all(gc_info(n)["elements_collected"] >= before[n.name] + 10 for n in (a, b)),
            30, "the pops' tombstones to go once c has merged them",
        )
        wait_converged(nodes)
    finally:
        stop_all(nodes)


def test_counter_keys_deleted_or_expired_leave_no_tombstones(tmp_path: Path) -> None:
    """INCR on every node at once, then DEL or expiry (the rate-limiter pattern): every key's
    tombstone, counters included, is collected on every node, and a key used again counts
    from zero everywhere."""
    nodes = start_cluster(tmp_path, 3, admin=True)
    try:
        keys = [f"ctr{i}" for i in range(60)]
        before = {n.name: gc_info(n)["tombstones_collected"] for n in nodes}

        def count(node: ClusterNode, seed: int) -> None:
            with node.client() as c:
                for k in keys:
                    c.incrby(k, seed + 1)
                assert c.execute_command("WAIT", 2, 10000) == 2  # type: ignore[no-untyped-call]

        write_concurrently(nodes, count)
        wait_converged(nodes)
        for n in nodes:
            with n.client() as c:
                assert c.mget(keys) == [b"6"] * len(keys)
        a, b, _ = nodes
        with a.client() as c:
            assert c.delete(*keys[::2]) == len(keys) // 2
            assert c.execute_command("WAIT", 2, 10000) == 2  # type: ignore[no-untyped-call]
        with b.client() as c:
            for k in keys[1::2]:
                c.pexpire(k, 100)
            assert c.execute_command("WAIT", 2, 10000) == 2  # type: ignore[no-untyped-call]
        wait_for(
            lambda: all(
                tombstones(n) == 0
                and gc_info(n)["tombstones_collected"] - before[n.name] >= len(keys)
                for n in nodes
            ),
            30, "every counter key's tombstone to be collected",
        )
        for n in nodes:
            with n.client() as c:
                assert c.dbsize() == 0
        with nodes[2].client() as c:
            assert c.incr(keys[0]) == 1
            assert c.incrby(keys[1], 5) == 5
            assert c.execute_command("WAIT", 2, 10000) == 2  # type: ignore[no-untyped-call]
        wait_converged(nodes)
        for n in nodes:
            with n.client() as c:
                assert c.mget(keys[:2]) == [b"1", b"5"]
    finally:
        stop_all(nodes)
