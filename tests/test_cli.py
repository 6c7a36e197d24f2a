"""The command line as a user meets it: real processes, real signals, real ports.

The contract for user errors is one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import gossipkv
from tests.servers import ROOT, ServerProcess, free_port, free_ports, start_gossipkv, wait_for


def gossipkv_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gossipkv ARGS`` to completion; a hang fails the test at ``timeout``."""
    return subprocess.run(
        [sys.executable, "-m", "gossipkv", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("gossipkv: ")
    for fragment in fragments:
        assert fragment in line
    return line


def listening(port: int) -> bool:
    """Whether something accepts connections on the port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def port_is_free(port: int) -> bool:
    """Whether a new server could listen on the port now (as a restarted node would)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


# Nodes started here let the OS pick their cluster port: the default, client port + 10000, may
# be taken on a busy test machine, and the cluster port is not what these tests are about.
ANY_CLUSTER_PORT = ("--cluster-port", "0")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_gossipkv(tmp_path, *ANY_CLUSTER_PORT)
    yield server
    server.stop(signal.SIGKILL)


def test_version() -> None:
    result = gossipkv_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"gossipkv {gossipkv.__version__}\n"


def test_help_lists_serve() -> None:
    result = gossipkv_cli("--help")
    assert result.returncode == 0
    assert "serve" in result.stdout


def test_taken_port_is_one_line_and_exit_2() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = gossipkv_cli("serve", "--port", str(port))
    assert_one_line_error(result, f"127.0.0.1:{port}", "address already in use")


def test_one_port_for_two_roles_is_one_line_and_exit_2() -> None:
    port, other = free_ports(2)
    result = gossipkv_cli("serve", "--port", str(port), "--cluster-port", str(port))
    assert_one_line_error(result, f"127.0.0.1:{port} (cluster port)", "it is the client port")
    result = gossipkv_cli(
        "serve", "--port", str(port), "--cluster-port", str(other), "--admin-port", str(other)
    )
    assert_one_line_error(result, f"127.0.0.1:{other} (admin port)", "it is the cluster port")


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    result = gossipkv_cli("serve", "--config", str(missing))
    assert_one_line_error(result, str(missing), "not found")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[node\nport = 1\n", "not valid TOML"),
        ("[node]\nport = 'six'\n", "node.port must be an integer"),
        ("[node]\nport = true\n", "node.port must be an integer"),
        ("[node]\nport = 70000\n", "out of range"),
        ("[node]\nname = 7\n", "node.name must be a string"),
        ("node = 3\n", "[node] must be a table"),
        ("[cluster]\nrejoin = 'sometimes'\n", "cluster.rejoin must be one of auto, manual"),
        ("[node]\n[redis]\n[cluster]\nrejoin = 'manual'\n", ""),  # valid: proves the cases
        # above fail for their fault alone
    ],
    ids=["invalid-toml", "port-string", "port-bool", "port-range", "name-int", "node-scalar",
         "rejoin-mode", "valid"],
)
def test_bad_config_file(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "gossipkv with a rather long directory name to make the line long.toml"
    path.write_text(text)
    if not fragment:
        # A valid file gets as far as listening; a taken port stops it there, with exit 2.
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            result = gossipkv_cli("serve", "--config", str(path), "--port", str(port))
        assert_one_line_error(result, "address already in use")
        return
    assert_one_line_error(gossipkv_cli("serve", "--config", str(path)), str(path), fragment)


def test_out_of_range_port_flag() -> None:
    assert_one_line_error(gossipkv_cli("serve", "--port", "65536"), "out of range")


def test_unknown_rejoin_mode_flag() -> None:
    assert_one_line_error(
        gossipkv_cli("serve", "--rejoin", "later"), "unknown rejoin mode 'later'", "auto, manual"
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_node_cleanly(node: ServerProcess, sig: signal.Signals) -> None:
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as client:
        client.sendall(b"SET before-stop 1\r\n")
        assert client.recv(16) == b"+OK\r\n"  # a connected client, mid-session
        node.proc.send_signal(sig)
        assert node.proc.wait(timeout=15) == 0
        try:
            closed = client.recv(16) == b""
        except ConnectionResetError:
            closed = True
        assert closed, "the node left a client connection open"
    assert "Traceback" not in node.output()
    assert not listening(node.port)
    wait_for(lambda: port_is_free(node.port), 10, "the port to be free")


def test_shutdown_stops_the_node_like_sigterm(node: ServerProcess) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["redis-cli", "-p", str(node.port), *args],
            capture_output=True, text=True, timeout=30, check=False,
        )

    # Redis's own replies to the forms that do not stop it (checked against redis-server 7.0).
    assert cli("SHUTDOWN", "ABORT").stdout.strip() == "ERR No shutdown in progress."
    assert cli("SHUTDOWN", "BOGUS").stdout.strip() == "ERR syntax error"
    assert cli("SHUTDOWN", "SAVE", "NOSAVE").stdout.strip() == "ERR syntax error"
    assert cli("SHUTDOWN", "ABORT", "NOW").stdout.strip() == "ERR syntax error"
    # No dataset on disk to save: refused, and the node keeps running.
    assert cli("SHUTDOWN", "SAVE").stdout.strip() == "ERR Errors trying to SHUTDOWN. Check logs."
    assert cli("PING").stdout.strip() == "PONG"
    done = cli("SHUTDOWN", "NOSAVE")
    assert (done.returncode, done.stdout.strip()) == (0, ""), done  # no reply, as redis-server
    assert node.proc.wait(timeout=15) == 0
    assert "Traceback" not in node.output()
    wait_for(lambda: port_is_free(node.port), 10, "the port to be free")


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    file_port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(
        f'[node]\nname = "from-file"\nregion = "file-region"\nport = {file_port}\n'
    )
    server = start_gossipkv(
        tmp_path, "--config", str(config), "--name", "from-flag", *ANY_CLUSTER_PORT
    )
    try:
        assert server.port != file_port
        assert not listening(file_port)
        client = redis.Redis(port=server.port, protocol=2, socket_timeout=10)
        info = client.info("server")
        client.close()
        assert info["gossipkv_node"] == "from-flag"
        assert info["gossipkv_region"] == "file-region"  # no flag given: the file's value
        ready = [line for line in server.output().splitlines() if " ready on " in line]
        assert len(ready) == 1, server.output()
        assert f"node from-flag ready on 127.0.0.1:{server.port}" in ready[0]
    finally:
        assert server.stop() == 0


def test_config_file_values_apply_without_flags(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(
        f'[node]\nname = "from-file"\nport = {port}\n[cluster]\ncluster_port = 0\n'
    )
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gossipkv", "serve", "--config", str(config)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    server = ServerProcess(port, proc, log)
    try:
        wait_for(
            lambda: " ready on " in server.output() or proc.poll() is not None, 15,
            "the ready line",
        )
        assert proc.poll() is None, server.output()
        assert f"node from-file ready on 127.0.0.1:{port}" in server.output()
        assert listening(port)
    finally:
        assert server.stop() == 0
