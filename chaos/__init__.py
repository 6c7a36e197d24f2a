"""Chaos scenarios for gossipkv: faults injected into real clusters, and a checker proving that
no acknowledged write is lost (``make chaos``, or ``python -m chaos [scenario ...]``)."""
