"""The node answers a real client over a real socket."""

from __future__ import annotations

import redis


def test_set_then_get(gkv_client: redis.Redis) -> None:
    assert gkv_client.set("greeting", "hello") is True
    assert gkv_client.get("greeting") == b"hello"
    assert gkv_client.get("missing") is None
