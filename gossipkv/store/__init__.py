"""The keyspace: key -> entry, its one merge path, key-level tombstones and the expiry index."""
