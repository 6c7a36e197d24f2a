"""Real server processes for tests: gossipkv started from its CLI, redis-server from Debian."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    return free_ports(1)[0]


_GIVEN: set[int] = set()  # ports handed out by this test process, never handed out twice


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports, none handed out before by this process: a port released
    and asked for again is often handed out again, and the nodes of a cluster are given their
    ports before any of them binds."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if port not in _GIVEN:
                _GIVEN.add(port)
                ports.append(port)
        return ports
    finally:
        for s in socks:
            s.close()


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@dataclass
class ServerProcess:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    args: list[str] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_gossipkv(tmp: Path, *extra: str, port: int | None = None) -> ServerProcess:
    """``python -m gossipkv serve`` on a free port, waiting until it answers PING."""
    port = port or free_port()
    log = tmp / f"gossipkv-{port}.log"
    args = [sys.executable, "-m", "gossipkv", "serve", "--port", str(port), *extra]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    server = ServerProcess(port, proc, log, args)
    try:
        wait_for(lambda: answers_ping(port) or proc.poll() is not None, 15, "gossipkv to listen")
    except TimeoutError:
        server.stop(signal.SIGKILL)
        raise
    if proc.poll() is not None:
        raise RuntimeError(f"gossipkv exited: {server.output()}")
    return server


def redis_server_path() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("redis-server is not installed (make test installs it)")
    return path


def start_redis(tmp: Path, *extra: str) -> ServerProcess:
    """Debian's redis-server on a free port, no persistence, waiting until it answers PING."""
    port = free_port()
    log = tmp / f"redis-{port}.log"
    args = [
        redis_server_path(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(tmp), "--daemonize", "no", *extra,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    server = ServerProcess(port, proc, log, args)
    wait_for(lambda: answers_ping(port) or proc.poll() is not None, 15, "redis-server to listen")
    if proc.poll() is not None:
        raise RuntimeError(f"redis-server exited: {server.output()}")
    return server


def env_without_pythonpath() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env
