"""Imports every command module so that each registers its commands in the table."""

from gossipkv.commands import cluster, connection, keys, server, strings  # noqa: F401
