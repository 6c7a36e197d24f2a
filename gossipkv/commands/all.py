"""Imports every command module so that each registers its commands in the table."""

from gossipkv.commands import (  # noqa: F401
    cluster,
    connection,
    hashes,
    keys,
    lists,
    server,
    sets,
    strings,
    zsets,
)
