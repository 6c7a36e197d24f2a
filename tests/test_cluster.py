"""The cluster as users run it: real ``gossipkv serve`` processes, redis-py clients, signals.

Every wait is on a condition with a deadline; a deadline derived from a membership profile is
that profile's own worst case, so these tests fail on broken behaviour, not on a slow machine.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from gossipkv.cluster.profile import PROFILES, Profile
from tests.cluster_procs import (
    ClusterNode,
    formed,
    new_node,
    start_cluster,
    stop_all,
    wait_converged,
    wait_formed,
    write_concurrently,
)
from tests.servers import ROOT, ServerProcess, answers_ping, free_port, free_ports, wait_for

COUNTERS = [f"counter:{i}" for i in range(4)]
SHARED = [f"shared:{i}" for i in range(16)]


def dead_within(profile: Profile, n: int) -> float:
    """The profile's worst case to convict a silent member: probed within a round of all
    members, the failed probe's interval, the longest (unconfirmed) suspicion, and a few
    gossip rounds to spread the verdict."""
    rounds = profile.probe_interval * (n + 1)
    suspicion = profile.suspicion_max_timeout_mult * profile.suspicion_timeout(n)
    return rounds + suspicion + 5 * profile.gossip_interval



def load(node: ClusterNode, prefix: str, count: int) -> dict[str, str]:
    """``count`` keys written through one pipeline; returns what was acknowledged."""
    data = {f"{prefix}:{i}": f"{prefix}-value-{i}" for i in range(count)}
    with node.client() as c:
        pipe = c.pipeline(transaction=False)
        for k, v in data.items():
            pipe.set(k, v)
        assert all(pipe.execute())
    return data


def holds(node: ClusterNode, data: dict[str, str]) -> bool:
    keys = list(data)
    with node.client(decode_responses=True) as c:
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            if c.mget(chunk) != [data[k] for k in chunk]:
                return False
    return True


# -- three nodes, concurrent writes to the same keys ----------------------------------------------


def mixed_writer(node: ClusterNode, seed: int, ops: int, sums: Counter[str]) -> None:
    """SET, INCR, DEL and EXPIRE on shared keys, INCRBY on counters; sums what was acked."""
    rng = random.Random(seed)
    with node.client() as c:
        for _ in range(ops):
            if rng.random() < 0.3:
                key = rng.choice(COUNTERS)
                by = rng.randint(1, 9)
                c.incrby(key, by)
                sums[key] += by  # counted only once the node acknowledged it
                continue
            key = rng.choice(SHARED)
            op = rng.randrange(6)
            try:
                if op == 0:
                    c.set(key, f"{node.name}-{rng.randrange(1000)}")
                elif op == 1:
                    c.incr(key)
                elif op == 2:
                    c.delete(key)
                elif op == 3:
                    c.expire(key, 1000)
                elif op == 4:
                    c.pexpire(key, rng.randint(1, 30))  # expires, and is reaped, mid-run
                else:
                    c.persist(key)
            except redis.ResponseError as e:
                assert "not an integer" in str(e)  # INCR of a value that is not a number


def test_concurrent_writes_on_three_nodes_converge(trio: list[ClusterNode]) -> None:
    sums: list[Counter[str]] = [Counter() for _ in trio]
    write_concurrently(trio, lambda node, seed: mixed_writer(node, seed, 1500, sums[seed]))
    for node in trio:
        with node.client() as c:
            # Every peer acknowledges every write this node made (WAIT, as with Redis replicas).
            assert c.execute_command("WAIT", 2, 20000) == 2  # type: ignore[no-untyped-call]
    wait_converged(trio)
    expected = sum(sums, Counter())
    assert set(expected) == set(COUNTERS)
    for node in trio:
        assert node.dbsize() >= len(COUNTERS)
        with node.client(decode_responses=True) as c:
            assert c.mget(COUNTERS) == [str(expected[k]) for k in COUNTERS], node.name


# -- MEET while both sides take writes -------------------------------------------------------------


class Writer(threading.Thread):
    """Writes ``prefix:live:N`` = N, one acknowledged write after another, until stopped."""

    def __init__(self, node: ClusterNode, prefix: str) -> None:
        super().__init__()
        self.node = node
        self.prefix = prefix
        self.acked: dict[str, str] = {}
        self.stopping = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            with self.node.client() as c:
                n = 0
                while not self.stopping.is_set():
                    key, value = f"{self.prefix}:live:{n}", str(n)
                    assert c.set(key, value)
                    self.acked[key] = value
                    n += 1
        except BaseException as e:  # surfaced by the test after join()
            self.failure = e


def test_meet_while_both_sides_take_writes(tmp_path: Path) -> None:
    a = new_node(tmp_path, 0)
    b = new_node(tmp_path, 1)
    nodes = [a, b]
    try:
        a.start()
        b.start()
        before = {**load(a, "a", 3000), **load(b, "b", 3000)}
        writers = [Writer(a, "a"), Writer(b, "b")]
        for w in writers:
            w.start()
        wait_for(lambda: all(len(w.acked) >= 200 for w in writers), 30, "writes before MEET")
        with b.client() as c:
            reply = c.execute_command("MEET", "127.0.0.1", str(a.port))  # type: ignore[no-untyped-call]
        assert reply == b"OK"
        marks = [len(w.acked) for w in writers]
        wait_for(
            lambda: all(len(w.acked) >= m + 500 for w, m in zip(writers, marks, strict=True)),
            30, "writes after MEET",
        )
        for w in writers:
            w.stopping.set()
            w.join()
            assert w.failure is None, w.failure
        wanted = {**before, **writers[0].acked, **writers[1].acked}
        wait_formed(nodes)
        wait_for(lambda: all(holds(n, wanted) for n in nodes), 30, "both to hold every write")
        wait_converged(nodes)
        assert a.dbsize() == b.dbsize() == len(wanted)
    finally:
        stop_all(nodes)


# -- failure detection and catching up -------------------------------------------------------------


def test_killed_node_is_declared_dead_and_catches_up_after_restart_and_meet(
    trio: list[ClusterNode],
) -> None:
    victim, survivors = trio[2], trio[:2]
    data = {**load(trio[0], "x", 500), **load(trio[1], "y", 500), **load(victim, "z", 500)}
    wait_for(lambda: all(holds(n, data) for n in trio), 30, "the first writes everywhere")
    victim.stop(signal.SIGKILL)
    profile = PROFILES["local"]
    wait_for(
        lambda: all(s.state_of(victim.name) == "dead" for s in survivors),
        dead_within(profile, len(trio)), f"survivors to declare {victim.name} dead",
    )
    data.update(load(survivors[0], "while-dead", 500))
    # Restart it empty, on the same ports, without seeds: MEET alone brings it back.
    victim.extra = _without_seeds(victim.extra)
    victim.start()
    assert victim.dbsize() == 0
    with victim.client() as c:
        reply = c.execute_command("MEET", f"127.0.0.1:{survivors[1].port}")  # type: ignore[no-untyped-call]
    assert reply == b"OK"
    wait_formed(trio)
    wait_for(lambda: holds(victim, data), 30, f"{victim.name} to catch up")
    wait_converged(trio)


def _without_seeds(args: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a == "--seeds":
            skip = True
        else:
            out.append(a)
    return out


def test_stalled_node_is_not_declared_dead_under_lan_profile(tmp_path: Path) -> None:
    nodes = start_cluster(tmp_path, 3, profile="lan")
    frozen = nodes[2]
    states: Counter[str] = Counter()

    def observe() -> bool:
        """Record every view of every member; true once all see all alive."""
        everyone_alive = True
        for node in nodes:
            for name, row in node.members().items():
                if name != node.name:
                    states[row["state"]] += 1
                    everyone_alive &= row["state"] == "alive"
        return everyone_alive

    try:
        load(frozen, "before", 100)
        frozen.proc.send_signal(signal.SIGSTOP)
        try:
            stalled_until = time.monotonic() + 2.0
            while time.monotonic() < stalled_until:
                for node in nodes[:2]:
                    states[node.state_of(frozen.name) or "missing"] += 1
                time.sleep(0.05)
            load(nodes[0], "during", 100)
        finally:
            frozen.proc.send_signal(signal.SIGCONT)
        load(frozen, "after", 100)
        wait_for(observe, 30, "every node to see every other alive again")
        assert states["dead"] == 0 and states["missing"] == 0, states
        assert states["alive"] > 0
        wait_formed(nodes)
        wait_converged(nodes)
        assert nodes[0].dbsize() == 300
    finally:
        stop_all(nodes)


# -- commands on one node --------------------------------------------------------------------------


def call(port: int, *args: str | int) -> object:
    return call_as(port, None, *args)


def call_as(port: int, password: str | None, *args: str | int) -> object:
    with redis.Redis(port=port, password=password, socket_timeout=10) as c:
        try:
            return c.execute_command(*args)  # type: ignore[no-untyped-call]
        except redis.ResponseError as e:
            return f"ERROR: {e}"


@pytest.mark.parametrize(
    "args",
    [("WAIT", "x", "0"), ("WAIT", "1", "x"), ("WAIT", "1", "-1"), ("WAIT", "1", "1.5"),
     ("WAIT", "1"), ("WAIT", "1", "2", "3"), ("WAIT", "99999999999999999999", "0"),
     ("WAIT", "1", "99999999999999999999"), ("WAIT", "0", "0"), ("WAIT", "-1", "0")],
)
def test_wait_answers_as_redis_does(
    gkv: ServerProcess, redis_ref: ServerProcess, args: tuple[str, ...]
) -> None:
    assert call(gkv.port, *args) == call(redis_ref.port, *args)


def test_wait_without_peers_returns_zero_at_its_timeout(gkv: ServerProcess) -> None:
    assert call(gkv.port, "WAIT", "1", "20") == 0


def test_members_of_a_lone_node_is_the_node_itself(gkv: ServerProcess) -> None:
    with redis.Redis(port=gkv.port, protocol=3, decode_responses=True) as c:
        rows = c.execute_command("MEMBERS")  # type: ignore[no-untyped-call]
    assert len(rows) == 1
    me = rows[0]
    assert me["client_port"] == gkv.port
    assert me["state"] == "alive" and me["link"] == "self"
    assert set(me) == {
        "name", "region", "host", "client_port", "cluster_port", "admin_port", "state",
        "incarnation", "lag_ops", "lag_ms", "link",
    }
    with redis.Redis(port=gkv.port, protocol=2) as c:
        flat = c.execute_command("MEMBERS")  # type: ignore[no-untyped-call]
    assert flat[0][:2] == [b"name", me["name"].encode()]  # RESP2: field/value pairs


def test_info_replication_lists_the_role_and_peers(gkv: ServerProcess) -> None:
    with redis.Redis(port=gkv.port) as c:
        info = c.info("replication")
    assert info["role"] == "active-active"
    assert info["connected_peers"] == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("MEET", "nocolon"), "ERROR: Invalid node address specified: nocolon"),
        (("MEET", "127.0.0.1", "port"), "ERROR: Invalid port specified: port"),
        (("MEET", "127.0.0.1:0"), "ERROR: Invalid node address specified: 127.0.0.1:0"),
        (("MEET", "127.0.0.1", "70000"), "ERROR: Invalid node address specified: 127.0.0.1:70000"),
        (("MEET", "a", "1", "2"), "ERROR: wrong number of arguments for 'meet' command"),
        (("FORGET", "nobody"), "ERROR: Unknown node nobody"),
    ],
)
def test_meet_and_forget_argument_errors(
    gkv: ServerProcess, args: tuple[str, ...], expected: str
) -> None:
    assert call(gkv.port, *args) == expected


def test_meet_failures_are_one_clear_error(gkv: ServerProcess, redis_ref: ServerProcess) -> None:
    me = call(gkv.port, "MEET", "127.0.0.1", str(gkv.port))
    assert me == f"ERROR: MEET 127.0.0.1:{gkv.port} is this node"
    nobody = free_port()
    refused = str(call(gkv.port, "MEET", f"127.0.0.1:{nobody}"))
    assert refused.startswith(f"ERROR: MEET 127.0.0.1:{nobody}: cannot connect"), refused
    not_ours = str(call(gkv.port, "MEET", "127.0.0.1", str(redis_ref.port)))
    assert "is it a gossipkv node?" in not_ours, not_ours
    myself = str(call(gkv.port, "FORGET", _name(gkv.port)))
    assert myself == "ERROR: I tried hard but I can't forget myself..."
    assert len(_members(gkv.port)) == 1  # none of this changed the membership


def _members(port: int) -> list[dict[str, object]]:
    with redis.Redis(port=port, protocol=3, decode_responses=True) as c:
        rows: list[dict[str, object]] = c.execute_command("MEMBERS")  # type: ignore[no-untyped-call]
    return rows


def _name(port: int) -> str:
    return str(_members(port)[0]["name"])


def test_forget_removes_a_member_and_its_link(tmp_path: Path) -> None:
    nodes = start_cluster(tmp_path, 2)
    a, b = nodes
    try:
        b.stop()  # it leaves; a keeps it as "left" until reaped, or until forgotten
        wait_for(lambda: a.state_of(b.name) == "left", 10, f"{a.name} to see {b.name} leave")
        assert call(a.port, "FORGET", b.name) == b"OK"
        assert b.name not in a.members()
        assert call(a.port, "FORGET", b.name) == f"ERROR: Unknown node {b.name}"
    finally:
        stop_all(nodes)


# -- CLI: ports, signals, make run -----------------------------------------------------------------


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gossipkv", "serve", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM], ids=["tcp", "udp"])
def test_taken_cluster_port_is_one_line_and_exit_2(kind: socket.SocketKind) -> None:
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        taken = holder.getsockname()[1]
        result = serve("--port", str(free_port()), "--cluster-port", str(taken))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines == [f"gossipkv: cannot listen on 127.0.0.1:{taken} (cluster port): "
                     "address already in use"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--seeds", "nohost"), "seed 'nohost' is not host:port"),
        (("--seeds", "h:99999"), "is not host:port"),
        (("--profile", "fast"), "unknown profile 'fast'"),
        (("--cluster-port", "70000"), "cluster port 70000 is out of range"),
    ],
)
def test_bad_cluster_flags_are_one_line_and_exit_2(args: tuple[str, ...], fragment: str) -> None:
    result = serve(*args)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and fragment in result.stderr, result.stderr


def test_config_file_cluster_table(tmp_path: Path) -> None:
    port, cluster_port = free_ports(2)
    path = tmp_path / "node.toml"
    path.write_text(
        f'[node]\nname = "conf-1"\nregion = "eu"\nport = {port}\n'
        f'[cluster]\ncluster_port = {cluster_port}\nprofile = "local"\nseeds = []\n'
        f"backlog_ops = 1000\n"
    )
    node = ServerProcess(port, subprocess.Popen(
        [sys.executable, "-m", "gossipkv", "serve", "-c", str(path)], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ), tmp_path / "unused.log")
    try:
        wait_for(lambda: answers_ping(port) or node.proc.poll() is not None, 20, "the node")
        me = _members(port)[0]
        assert (me["name"], me["region"], me["cluster_port"]) == ("conf-1", "eu", cluster_port)
    finally:
        assert node.stop() == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[cluster]\nprofile = "fast"\n')
    result = serve("-c", str(bad))
    assert result.returncode == 2 and "cluster.profile must be one of" in result.stderr
    bad.write_text('[cluster]\noverrun = "sometimes"\n')
    result = serve("-c", str(bad))
    assert result.returncode == 2
    assert "cluster.overrun must be one of auto, anti-entropy, snapshot" in result.stderr


def _local_cluster_base() -> int:
    """A base port whose three client, cluster and admin ports are all free."""
    for _ in range(200):
        base = free_port()
        ports = [base + i + off for i in range(3) for off in (0, 2000, 10000)]
        if base + 10002 <= 65535 and all(_free(p) for p in ports):
            return base
    raise RuntimeError("no free port range for three local nodes")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_local_cluster_forms_one_cluster_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    base = _local_cluster_base()
    log = tmp_path / "local-cluster.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gossipkv", "local-cluster", "--base-port", str(base)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    ports = [base, base + 1, base + 2]
    try:
        def one_cluster() -> bool:
            try:
                return all(
                    [r["state"] for r in _members(p)] == ["alive"] * 3 for p in ports
                )
            except redis.ConnectionError:
                return False

        wait_for(one_cluster, 30, "three local nodes to form one cluster")
        regions = {str(_members(p)[0]["region"]) for p in ports}
        assert regions == {"eu", "us", "ap"}
        assert call(base, "SET", "made-by", "make run") is True
        wait_for(lambda: call(base + 2, "GET", "made-by") == b"make run", 10, "replication")
        text = log.read_text()
        for p in ports:
            assert f"redis-cli -h 127.0.0.1 -p {p}" in text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, log.read_text()
        assert not any(answers_ping(p) for p in ports)
    finally:
        if proc.poll() is None:
            proc.terminate()  # stops its three nodes too
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_meet_links_two_lone_nodes_and_wait_counts_the_peer(tmp_path: Path) -> None:
    a = new_node(tmp_path, 0).start()
    b = new_node(tmp_path, 1).start()
    try:
        assert not formed([a, b])  # two lone nodes are not a cluster
        assert call(a.port, "MEET", f"127.0.0.1:{b.port}") == b"OK"
        wait_formed([a, b])
        load(a, "k", 10)
        with b.client() as c:
            wait_for(lambda: c.get("k:9") == b"k-value-9", 10, "the write on a to reach b")
        with a.client() as c:
            assert c.execute_command("WAIT", 1, 10000) == 1  # type: ignore[no-untyped-call]
            info = c.info("replication")
        assert info["connected_peers"] == 1
        assert info["peer0"]["name"] == b.name
        assert info["peer0"]["state"] == "streaming"
    finally:
        stop_all([a, b])


def test_meet_sends_this_nodes_password(tmp_path: Path) -> None:
    secret = tmp_path / "secret.toml"
    secret.write_text('[node]\nrequirepass = "s3cret"\n')
    other = tmp_path / "other.toml"
    other.write_text('[node]\nrequirepass = "different"\n')
    a = new_node(tmp_path, 0, extra=["-c", str(secret)])
    b = new_node(tmp_path, 1, extra=["-c", str(secret)])
    c = new_node(tmp_path, 2, extra=["-c", str(other)])
    nodes = [a, b, c]
    try:
        for n in nodes:
            n.start()
        with redis.Redis(port=b.port, password="s3cret") as client:
            assert client.execute_command("MEET", f"127.0.0.1:{a.port}") == b"OK"  # type: ignore[no-untyped-call]
            client.set("guarded", "yes")
        with redis.Redis(port=a.port, password="s3cret") as client:
            wait_for(lambda: client.get("guarded") == b"yes", 10, "the write on b to reach a")
        refused = call_as(c.port, "different", "MEET", f"127.0.0.1:{a.port}")
        assert "wants a password this node does not know" in str(refused), refused
    finally:
        stop_all(nodes)
