"""gossipkv: an active-active, Redis-protocol, CRDT-replicated key-value store.

The request path is compiled with mypyc when installed (setup.py). Compiled modules call each
other directly, so they are used all together or not at all: with ``GOSSIPKV_PURE=1``, or, in a
source tree, when any compiled module is older than its source (edited since the last
``make``), every module is imported from its source instead, and the second case says so on
stderr. An installed package (no setup.py beside it) is taken as built.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, ModuleSpec, SourceFileLoader
from pathlib import Path
from types import ModuleType

__version__ = "0.1.0"
# The Redis version we answer as: clients and tools key features off it.
REDIS_VERSION = "7.0.15"


def stale_compiled(root: Path) -> list[str]:
    """Sources under ``root`` edited after their compiled module was built."""
    stale = []
    for lib in root.glob("*/*.so"):
        source = lib.with_name(lib.name.split(".", 1)[0] + ".py")
        if source.exists() and source.stat().st_mtime > lib.stat().st_mtime:
            stale.append(str(source.relative_to(root.parent)))
    return sorted(stale)


class SourceFinder:
    """Finds gossipkv's modules as source files only, passing over compiled ones."""

    @staticmethod
    def find_spec(
        fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if not fullname.startswith(__name__ + ".") or path is None:
            return None
        for entry in path:
            spec = FileFinder(entry, (SourceFileLoader, SOURCE_SUFFIXES)).find_spec(fullname)
            if spec is not None:
                return spec
        return None


def _choose_build() -> None:
    if os.environ.get("GOSSIPKV_PURE"):
        sys.meta_path.insert(0, SourceFinder)
        return
    package = Path(__file__).resolve().parent
    if not (package.parent / "setup.py").exists():
        return  # installed: its files' times say nothing about edits
    stale = stale_compiled(package)
    if stale:
        print(
            f"gossipkv: running from source: {stale[0]} is newer than its compiled module "
            "(`make` compiles it again)",
            file=sys.stderr,
        )
        sys.meta_path.insert(0, SourceFinder)


_choose_build()
