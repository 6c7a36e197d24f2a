"""gossipkv: an active-active, Redis-protocol, CRDT-replicated key-value store."""

__version__ = "0.1.0"
# The Redis version we answer as: clients and tools key features off it.
REDIS_VERSION = "7.0.15"
