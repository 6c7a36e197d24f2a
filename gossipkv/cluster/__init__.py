"""The cluster: SWIM membership, peer links, replication, join, anti-entropy, fault injection."""
