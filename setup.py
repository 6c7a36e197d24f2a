"""Build: the modules on the path of every request are compiled with mypyc.

The per-request path (RESP parsing and encoding, the command table and commands, the keyspace,
the CRDTs) is plain, fully typed Python; mypyc turns it into a C extension, which runs it about
1.5x faster with the same source and the same behaviour. Everything else (cluster, admin, CLI)
stays interpreted, but for the replication outbox: it is off the hot path, and its tracebacks
stay readable.

``GOSSIPKV_PURE=1`` installs everything as plain Python (no C compiler needed); so does an
install where mypyc cannot be imported, with a warning. Both builds pass the same test suite.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

# Packages whose modules are compiled, and the modules left interpreted inside them: subclasses
# of builtin types, which mypyc cannot compile as native classes, and the packages' own
# ``__init__`` (a compiled one is not found as a package by every import path).
COMPILED = ("crdt", "store", "commands", "resp")
INTERPRETED = {"gossipkv/commands/replies.py"}
# Single modules of other packages that every write runs through: the replication outbox is
# the keyspace's sink.
ALSO_COMPILED = ("gossipkv/cluster/outbox.py",)


def compiled_sources() -> list[str]:
    root = Path(__file__).resolve().parent
    sources = []
    for package in COMPILED:
        for path in sorted((root / "gossipkv" / package).glob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel not in INTERPRETED and path.name != "__init__.py":
                sources.append(rel)
    return sources + list(ALSO_COMPILED)


def ext_modules() -> list[object]:
    if os.environ.get("GOSSIPKV_PURE"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("warning: mypyc is not available; gossipkv installs as plain Python", file=sys.stderr)
        return []
    # One shared library, inside the package (gossipkv/native__mypyc...so), so that it is
    # found wherever the package is: installed, or editable from the source tree.
    modules: list[object] = mypycify(
        compiled_sources(), opt_level="3", debug_level="0", group_name="gossipkv.native"
    )
    return modules


setup(ext_modules=ext_modules())
