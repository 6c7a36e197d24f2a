"""The compiled request path and its fallback to source (gossipkv/__init__.py, setup.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import gossipkv

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gossipkv"


def _module_file(module: str, **env: str) -> tuple[str, str]:
    """Where a fresh interpreter imports ``module`` from, and what it printed on stderr."""
    run_env = {k: v for k, v in os.environ.items() if k != "GOSSIPKV_PURE"} | env
    done = subprocess.run(
        [sys.executable, "-c", f"import {module} as m; print(m.__file__)"],
        capture_output=True, text=True, check=True, cwd=ROOT, env=run_env, timeout=60,
    )
    return done.stdout.strip(), done.stderr


def test_pure_mode_imports_every_module_from_source() -> None:
    for module in ("gossipkv.crdt.orset", "gossipkv.store.keyspace", "gossipkv.resp.protocol"):
        path, _ = _module_file(module, GOSSIPKV_PURE="1")
        assert path.endswith(".py"), path


def test_an_installed_compiled_build_is_used_when_fresh() -> None:
    if not list(PACKAGE.glob("*/*.so")):
        pytest.skip("installed as plain Python (GOSSIPKV_PURE=1 or no compiler at install)")
    if gossipkv.stale_compiled(PACKAGE):
        pytest.skip("sources edited since the last build: `make` compiles them again")
    path, err = _module_file("gossipkv.crdt.orset")
    assert path.endswith(".so"), path
    assert err == ""


def test_a_source_newer_than_its_compiled_module_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "crdt").mkdir(parents=True)
    lib = package / "crdt" / "orset.cpython-311-x86_64-linux-gnu.so"
    source = package / "crdt" / "orset.py"
    fresh = package / "crdt" / "rga.py"
    fresh_lib = package / "crdt" / "rga.cpython-311-x86_64-linux-gnu.so"
    for f in (lib, source, fresh, fresh_lib):
        f.write_bytes(b"")
    os.utime(lib, (1000, 1000))
    os.utime(source, (2000, 2000))  # edited after the build
    os.utime(fresh, (1000, 1000))
    os.utime(fresh_lib, (2000, 2000))
    assert gossipkv.stale_compiled(package) == ["pkg/crdt/orset.py"]
