"""Rejoining after the GC horizon without a restart (cluster/rejoin.py).

A node whose state the cluster refuses drops it, after its backlog reached the peers, and
reloads by snapshot in-process; in a split past the horizon exactly one side does so. The
clusters are real ``gossipkv serve`` processes with a two-second horizon.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

import gossipkv.commands.all  # noqa: F401  (registers every command)
from gossipkv.admin.chaos import request as chaos
from gossipkv.admin.report import fetch
from gossipkv.cluster.rejoin import LOADING, beats
from gossipkv.commands.replies import ErrorReply
from gossipkv.commands.session import Server, Session
from gossipkv.crdt.hlc import HLC
from gossipkv.store.entry import Entry
from gossipkv.store.keyspace import Keyspace
from tests.cluster_procs import ClusterNode, start_cluster, stop_all, wait_converged
from tests.servers import wait_for

FAST_GC = ["--chaos", "--gc-horizon", "2", "--anti-entropy-interval", "0.5"]


def gc(node: ClusterNode) -> dict[str, Any]:
    doc: dict[str, Any] = fetch("127.0.0.1", node.admin_port)["gc"]
    return doc


def repl_info(node: ClusterNode) -> dict[str, Any]:
    with node.client() as cl:
        info: dict[str, Any] = cl.info("replication")
    return info


def rejoins(node: ClusterNode) -> int:
    return int(repl_info(node)["gc_rejoins"])


def wait_expelled(node: ClusterNode, names: list[str]) -> None:
    wait_for(
        lambda: set(names) <= set(gc(node)["expelled"]), 30, f"{node.name} to expel {names}"
    )


def heal(cut: ClusterNode, other: ClusterNode) -> None:
    """Clear the cut and MEET again (the dead member may have been reaped meanwhile)."""
    chaos("127.0.0.1", cut.admin_port, "DELETE")
    with cut.client() as cl:
        assert cl.execute_command("MEET", "127.0.0.1", other.port) == b"OK"  # type: ignore[no-untyped-call]


def values(node: ClusterNode, keys: list[str]) -> list[bytes | None]:
    with node.client() as cl:
        return list(cl.mget(keys))


def test_an_isolated_member_rejoins_by_itself(tmp_path: Path) -> None:
    nodes = start_cluster(tmp_path, 3, admin=True, extra=FAST_GC)
    try:
        a, b, c = nodes
        doomed = [f"doomed{i}" for i in range(10)]
        with a.client() as cl:
            cl.mset({k: "v" for k in [*doomed, "kept"]})
            assert cl.execute_command("WAIT", 2, 10000) == 2  # type: ignore[no-untyped-call]
        chaos("127.0.0.1", c.admin_port, "POST", {"peer": "*", "action": "cut"})
        with a.client() as cl:
            assert cl.delete(*doomed) == len(doomed)
            assert cl.execute_command("WAIT", 1, 10000) == 1  # type: ignore[no-untyped-call]
        away = [f"away{i}" for i in range(10)]
        with c.client() as cl:
            cl.mset({k: "c" for k in away})  # acknowledged while cut off: in c's backlog
        wait_expelled(a, [c.name])
        wait_expelled(b, [c.name])
        wait_for(
            lambda: all(fetch("127.0.0.1", n.admin_port)["keyspace"]["tombstones"] == 0
                        for n in (a, b)),
            20, "the tombstones to be collected",
        )
        assert values(c, doomed[:1]) == [b"v"]  # c never heard of the delete
        heal(c, a)
        wait_for(lambda: rejoins(c) == 1, 30, "c to rejoin")
        wait_converged(nodes)
        for n in nodes:
            assert values(n, doomed) == [None] * len(doomed), n.name
            assert values(n, away) == [b"c"] * len(away), n.name
            assert values(n, ["kept"]) == [b"v"]
        assert rejoins(a) == rejoins(b) == 0
        info = repl_info(c)
        assert info["gc_rejoin_required"] == 0 and info["gc_rejoining"] == 0
        # The cluster readmitted c's new run: nobody refuses anybody any more.
        wait_for(lambda: all(gc(n)["expelled"] == [] for n in nodes), 20, "readmission")
        with a.client() as cl:
            cl.set("after", "1")
            assert cl.execute_command("WAIT", 2, 10000) == 2  # type: ignore[no-untyped-call]
        assert values(c, ["after"]) == [b"1"]
        assert "event=gc_rejoined" in c.output()
    finally:
        stop_all(nodes)


def test_a_two_node_split_past_the_horizon_rejoins_exactly_one_side(tmp_path: Path) -> None:
    nodes = start_cluster(tmp_path, 2, admin=True, extra=FAST_GC)
    try:
        a, b = nodes
        # Equal sides: the one holding the greater smallest name rejoins.
        keeper, rejoiner = (a, b) if a.name < b.name else (b, a)
        shared = [f"shared{i}" for i in range(10)]
        with a.client() as cl:
            cl.mset({k: "v" for k in shared})
            assert cl.execute_command("WAIT", 1, 10000) == 1  # type: ignore[no-untyped-call]
        chaos("127.0.0.1", a.admin_port, "POST", {"peer": "*", "action": "cut"})
        kept = [f"kept{i}" for i in range(20)]
        with keeper.client() as cl:
            cl.mset({k: "k" for k in kept})
            assert cl.delete(*shared[:5]) == 5
        mine = [f"mine{i}" for i in range(10)]
        with rejoiner.client() as cl:
            cl.mset({k: "r" for k in mine})
        wait_expelled(a, [b.name])
        wait_expelled(b, [a.name])
        heal(a, b)
        wait_for(lambda: rejoins(rejoiner) == 1, 30, f"{rejoiner.name} to rejoin")
        wait_converged(nodes)
        assert rejoins(keeper) == 0
        for n in nodes:
            assert values(n, kept) == [b"k"] * len(kept), n.name
            assert values(n, shared) == [None] * 5 + [b"v"] * 5, n.name
            assert values(n, mine) == [b"r"] * len(mine), n.name
        wait_for(lambda: all(gc(n)["expelled"] == [] for n in nodes), 20, "readmission")
        assert rejoins(keeper) == 0 and rejoins(rejoiner) == 1
        assert "event=gc_rejoined" not in keeper.output()
    finally:
        stop_all(nodes)


def test_the_side_that_kept_running_keeps_its_state(tmp_path: Path) -> None:
    """A node stopped past the horizon expelled nobody: it rejoins, even holding the name
    that would keep its state in a split, and its peer never drops its own."""
    nodes = start_cluster(tmp_path, 2, admin=True, extra=FAST_GC)
    try:
        stopped, running = sorted(nodes, key=lambda n: n.name)
        stopped.proc.send_signal(signal.SIGSTOP)
        try:
            wait_expelled(running, [stopped.name])
            meanwhile = [f"meanwhile{i}" for i in range(10)]
            with running.client() as cl:
                cl.mset({k: "m" for k in meanwhile})
        finally:
            stopped.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: rejoins(stopped) == 1, 30, f"{stopped.name} to rejoin")
        wait_converged(nodes)
        for n in nodes:
            assert values(n, meanwhile) == [b"m"] * len(meanwhile), n.name
        assert rejoins(running) == 0
    finally:
        stop_all(nodes)


# -- the pieces, in-process --------------------------------------------------------------------


def test_the_larger_side_keeps_its_state_and_a_tie_goes_by_smallest_name() -> None:
    assert beats({"a", "b"}, {"c"}) and not beats({"c"}, {"a", "b"})
    assert beats({"eu-1"}, {"us-2"}) and not beats({"us-2"}, {"eu-1"})
    assert beats({"b", "z"}, {"c", "d"}) and not beats({"c", "d"}, {"b", "z"})


def test_drop_all_forgets_everything_and_counts_under_a_new_actor() -> None:
    ks = Keyspace("n1", HLC())
    for i in range(5000):
        ks.merge(b"k%d" % i, Entry(ks.clock.now(), "n1", b"v"))
    ks.remove(b"k0", ks.live[b"k0"])
    actor = ks.actor
    old = ks.drop_all()
    assert len(ks) == 0 and not ks.tombstones and ks.merkle.root() == 0
    assert ks.actor != actor and ks.actor.startswith("n1#")
    slices = 0
    while not old.done:
        assert old.free(1000) <= 1000
        slices += 1
    assert slices > 5  # freed a slice at a time
    ks.merge(b"k1", Entry(ks.clock.now(), "n2", b"w"))
    assert ks.lookup(b"k1") is not None and len(ks) == 1


def test_commands_answer_loading_while_the_keyspace_reloads() -> None:
    server = Server(Keyspace("n1", HLC()))
    s = Session(server)
    server.loading = LOADING
    reply = s.execute([b"GET", b"k"])
    assert isinstance(reply, ErrorReply) and str(reply).startswith("LOADING ")
    assert isinstance(s.execute([b"SET", b"k", b"v"]), ErrorReply)
    info = s.execute([b"INFO", b"persistence"])
    assert b"loading:1" in info  # type: ignore[operator]
    # A client library's handshake still works: a subcommand counts by its own flags.
    assert s.execute([b"CLIENT", b"SETINFO", b"LIB-NAME", b"redis-py"]) is not None
    assert not isinstance(s.execute([b"CLIENT", b"SETINFO", b"LIB-VER", b"8"]), ErrorReply)
    assert not isinstance(s.execute([b"CONFIG", b"GET", b"timeout"]), ErrorReply)
    assert isinstance(s.execute([b"PING"]), ErrorReply)  # as Redis answers while loading
    server.loading = ""
    assert s.execute([b"SET", b"k", b"v"]) is not None
    assert s.execute([b"GET", b"k"]) == b"v"


@pytest.mark.parametrize("mode", ["auto", "manual"])
def test_rejoin_mode_shows_in_info(tmp_path: Path, mode: str) -> None:
    nodes = start_cluster(tmp_path, 1, admin=True, extra=["--rejoin", mode])
    try:
        info = repl_info(nodes[0])
        assert info["gc_rejoin_mode"] == mode and info["gc_rejoins"] == 0
    finally:
        stop_all(nodes)
