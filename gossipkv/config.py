"""Node configuration: a TOML file, overridden by command-line flags.

Tables: [node] (identity, client address), [cluster] (cluster bus, admin endpoint, seeds,
membership profile, replication backlog) and [redis] (CONFIG GET/SET parameters).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gossipkv.cluster.profile import PROFILES


class ConfigError(Exception):
    """A configuration problem, reported to the user as one line."""


@dataclass
class NodeConfig:
    name: str = ""
    region: str = "local"
    host: str = "127.0.0.1"
    port: int = 6379
    requirepass: str = ""
    # Redis-style parameters served by CONFIG GET/SET (strings, as Redis keeps them).
    params: dict[str, str] = field(default_factory=dict)
    # Cluster bus port (UDP gossip and TCP peer links); None: client port + 10000.
    cluster_port: int | None = None
    # aiohttp status endpoint; 0: off.
    admin_port: int = 0
    # Cluster ports of nodes to join at start (host, port); tried until one answers.
    seeds: list[tuple[str, int]] = field(default_factory=list)
    # Membership timing profile: lan, wan or local.
    profile: str = "lan"
    # Address peers and clients are told to reach this node at; empty: host.
    advertise_host: str = ""
    # Replication backlog bounds: a peer further behind than this gets a snapshot.
    backlog_ops: int = 1_000_000
    backlog_bytes: int = 256 * 2**20
    # Fault injection (the admin endpoint's /chaos): for chaos testing only, off by default.
    chaos: bool = False
    # How a known peer past the replication backlog catches up: "auto" (an anti-entropy
    # exchange when few keys can differ, else a snapshot), "anti-entropy" or "snapshot".
    overrun: str = "auto"
    # Seconds between anti-entropy exchanges with a random peer (jittered); 0 turns them off.
    anti_entropy_interval: float = 10.0
    # Seconds a dead member keeps holding back tombstone GC; None: the profile's default.
    gc_horizon: float | None = None
    # Seconds between GC watermark rounds (frontier gossip and a collection pass).
    gc_interval: float = 1.0
    # What the side of a separation longer than the GC horizon that must drop its state does:
    # "auto" rejoins by snapshot in-process, "manual" reports it and waits for a restart.
    rejoin: str = "auto"

    def resolved_name(self) -> str:
        return self.name or f"{self.host}:{self.port}"

    def resolved_cluster_port(self, client_port: int) -> int:
        """The cluster port for a bound client port; 0 lets the OS pick one.

        The default, client port + 10000, is Redis Cluster's bus convention; where that would
        leave the port range (or the client port was picked by the OS) the OS picks instead.
        """
        if self.cluster_port is not None:
            return self.cluster_port
        derived = client_port + CLUSTER_PORT_OFFSET
        return derived if client_port > 0 and derived <= 65535 else 0

    def resolved_gc_horizon(self) -> float:
        if self.gc_horizon is not None:
            return self.gc_horizon
        return GC_HORIZONS.get(self.profile, GC_HORIZONS["lan"])

    def advertised_host(self) -> str:
        if self.advertise_host:
            return self.advertise_host
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host


CLUSTER_PORT_OFFSET = 10000
# Default GC horizon per membership profile, seconds: how long a member may be away and still
# come back by merging its state (past it, it must rejoin by snapshot).
GC_HORIZONS = {"lan": 3600.0, "wan": 6 * 3600.0, "local": 30.0}
PROFILE_NAMES = tuple(PROFILES)


_NODE_KEYS = {"name": str, "region": str, "host": str, "port": int, "requirepass": str}


def load(path: Path | None) -> NodeConfig:
    """Read a config file; any problem raises ConfigError naming the file and the fault."""
    cfg = NodeConfig()
    if path is None:
        return cfg
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    node = raw.get("node", {})
    if not isinstance(node, dict):
        raise ConfigError(f"config file {path}: [node] must be a table")
    _apply(cfg, node, path)
    params = raw.get("redis", {})
    if not isinstance(params, dict):
        raise ConfigError(f"config file {path}: [redis] must be a table")
    for k, v in params.items():
        cfg.params[str(k)] = _redis_value(v)
    cluster = raw.get("cluster", {})
    if not isinstance(cluster, dict):
        raise ConfigError(f"config file {path}: [cluster] must be a table")
    _apply_cluster(cfg, cluster, path)
    return cfg


def _apply(cfg: NodeConfig, table: dict[str, Any], path: Path) -> None:
    for key, value in table.items():
        kind = _NODE_KEYS.get(key)
        if kind is None:
            continue  # sections of later layers (cluster, admin) are read by them
        if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"config file {path}: node.{key} must be an integer")
        if kind is str and not isinstance(value, str):
            raise ConfigError(f"config file {path}: node.{key} must be a string")
        if key == "port" and not 0 <= value <= 65535:
            raise ConfigError(f"config file {path}: node.port {value} is out of range")
        setattr(cfg, key, value)


def _redis_value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def parse_seeds(text: str | list[Any]) -> list[tuple[str, int]]:
    """``host:port,host:port`` (or a list of such strings) as addresses; ValueError naming the
    bad one. IPv6 hosts go in brackets: ``[::1]:16379``."""
    items = text.split(",") if isinstance(text, str) else text
    seeds: list[tuple[str, int]] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"seed {item!r} is not a host:port string")
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"seed {item!r} is not host:port")
        seeds.append((host, int(port)))
    return seeds


def check_port(what: str, port: int, allow_zero: bool = True) -> None:
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise ValueError(f"{what} {port} is out of range")


OVERRUN_MODES = ("auto", "anti-entropy", "snapshot")
REJOIN_MODES = ("auto", "manual")
_CLUSTER_SECONDS = ("anti_entropy_interval", "gc_horizon", "gc_interval")
_CLUSTER_INTS = ("cluster_port", "admin_port", "backlog_ops", "backlog_bytes")


def _apply_cluster(cfg: NodeConfig, table: dict[str, Any], path: Path) -> None:
    for key, value in table.items():
        where = f"config file {path}: cluster.{key}"
        if key in _CLUSTER_INTS:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{where} must be an integer")
            if key.endswith("_port"):
                try:
                    check_port(f"cluster.{key}", value)
                except ValueError as e:
                    raise ConfigError(f"config file {path}: {e}") from None
            elif value < 1:
                raise ConfigError(f"{where} must be at least 1")
            setattr(cfg, key, value)
        elif key == "seeds":
            if not isinstance(value, (str, list)):
                raise ConfigError(f"{where} must be a list of \"host:port\" strings")
            try:
                cfg.seeds = parse_seeds(value)
            except ValueError as e:
                raise ConfigError(f"{where}: {e}") from None
        elif key == "profile":
            if value not in PROFILE_NAMES:
                raise ConfigError(f"{where} must be one of {', '.join(PROFILE_NAMES)}")
            cfg.profile = value
        elif key in _CLUSTER_SECONDS:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"{where} must be a number of seconds")
            if value < 0 or (key != "anti_entropy_interval" and value <= 0):
                raise ConfigError(f"{where} must be positive")
            setattr(cfg, key, float(value))
        elif key == "overrun":
            if value not in OVERRUN_MODES:
                raise ConfigError(f"{where} must be one of {', '.join(OVERRUN_MODES)}")
            cfg.overrun = value
        elif key == "rejoin":
            if value not in REJOIN_MODES:
                raise ConfigError(f"{where} must be one of {', '.join(REJOIN_MODES)}")
            cfg.rejoin = value
        elif key == "chaos":
            if not isinstance(value, bool):
                raise ConfigError(f"{where} must be true or false")
            cfg.chaos = value
        elif key == "advertise_host":
            if not isinstance(value, str):
                raise ConfigError(f"{where} must be a string")
            cfg.advertise_host = value
        else:
            raise ConfigError(f"config file {path}: unknown setting cluster.{key}")
