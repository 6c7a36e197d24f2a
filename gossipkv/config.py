"""Node configuration: a TOML file, overridden by command-line flags."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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

    def resolved_name(self) -> str:
        return self.name or f"{self.host}:{self.port}"


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
