"""The admin endpoint and ``gossipkv status``: real nodes, real HTTP, the real CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gossipkv import __version__
from tests.cluster_procs import ClusterNode, start_cluster, stop_all
from tests.servers import ROOT, free_port


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ClusterNode]]:
    nodes = start_cluster(tmp_path_factory.mktemp("admin"), 2, admin=True)
    yield nodes
    stop_all(nodes)


def status_of(node: ClusterNode) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.admin_port}/status", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("application/json")
        doc: dict[str, Any] = json.loads(r.read())
    return doc


def gossipkv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gossipkv", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )


def test_status_document(pair: list[ClusterNode]) -> None:
    a, b = pair
    with a.client() as c:
        c.set("admin:key", "v", px=600_000)
        c.set("admin:other", "v")
    doc = status_of(a)
    assert (doc["node"], doc["region"], doc["version"]) == (a.name, a.region, __version__)
    assert (doc["client_port"], doc["cluster_port"], doc["admin_port"]) == (
        a.port, a.cluster_port, a.admin_port,
    )
    assert doc["keyspace"]["keys"] >= 2 and doc["keyspace"]["expires"] >= 1
    assert doc["replication"]["seq"] >= 2
    assert [p["name"] for p in doc["replication"]["peers"]] == [b.name]
    names = [m["name"] for m in doc["members"]]
    assert names == [a.name, b.name]  # this node first
    peer = doc["members"][1]
    assert peer["state"] == "alive" and peer["admin_port"] == b.admin_port
    assert {"lag_ops", "lag_ms", "incarnation", "link"} <= set(peer)
    assert isinstance(doc["lag_ms"], float)


def test_status_command_prints_a_table(pair: list[ClusterNode]) -> None:
    a, b = pair
    result = gossipkv("status", "--admin-port", str(b.admin_port))
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines()
            if line.count("│") > 2}
    assert set(rows) == {a.name, b.name}
    assert "alive" in rows[a.name] and f"127.0.0.1:{a.port}" in rows[a.name]
    assert "self" in rows[b.name]


def test_status_command_json(pair: list[ClusterNode]) -> None:
    a, _ = pair
    result = gossipkv("status", "--host", "127.0.0.1", "--admin-port", str(a.admin_port), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["node"] == a.name


def test_status_of_a_port_nobody_serves_is_one_line_and_exit_2() -> None:
    port = free_port()
    result = gossipkv("status", "--admin-port", str(port), "--timeout", "2")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and f"cannot read http://127.0.0.1:{port}/status" in lines[0], lines


def test_taken_admin_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        result = gossipkv(
            "serve", "--port", str(free_port()), "--cluster-port", str(free_port()),
            "--admin-port", str(taken),
        )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"gossipkv: cannot listen on 127.0.0.1:{taken} (admin port): address already in use"
    ]
