"""DEBUG DIGEST: a hash of the visible dataset, equal on every replica holding the same data.

The hashing is Redis's own (debug.c): SHA1-based "mix" and "xor" steps, one digest per key of its
name, type and value, XORed together so that key order does not matter, and forty zeros for an
empty dataset. A dataset without TTLs therefore digests exactly as redis-server does, which lets
the differential tests compare digests with Redis. Where Redis mixes in only *that* a key has an
expiry, we also mix in the absolute deadline: replicas must agree on deadlines as well, and
deadlines are absolute, so equal data still gives equal digests on every node.

Digests are 160-bit ints here: XOR of ints is one operation, and SHA1 reads their 20-byte form.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

from gossipkv.store.entry import Entry

DIGEST_BYTES: Final = 20
EMPTY: Final = "0" * (2 * DIGEST_BYTES)

# Redis's object type codes (server.h OBJ_*), mixed in as 4 big-endian bytes.
TYPE_STRING: Final = 0
TYPE_LIST: Final = 1
TYPE_SET: Final = 2
TYPE_ZSET: Final = 3
TYPE_HASH: Final = 4
TYPE_STREAM: Final = 6

_EXPIRE_MARK: Final = b"!!expire!!"
_DB0: Final = (0).to_bytes(4, "big")
_STRING: Final = TYPE_STRING.to_bytes(4, "big")


def _sha1(data: bytes) -> int:
    return int.from_bytes(hashlib.sha1(data).digest(), "big")


def xor_digest(digest: int, data: bytes) -> int:
    """Redis's xorDigest: fold SHA1(data) into the digest; order-independent."""
    return digest ^ _sha1(data)


def mix_digest(digest: int, data: bytes) -> int:
    """Redis's mixDigest: fold SHA1(data) in, then re-hash, so the order of mixes matters."""
    return _sha1((digest ^ _sha1(data)).to_bytes(DIGEST_BYTES, "big"))


def hex_digest(digest: int) -> str:
    return digest.to_bytes(DIGEST_BYTES, "big").hex()


_TYPE_CODES: Final = {"list": TYPE_LIST, "set": TYPE_SET, "zset": TYPE_ZSET, "hash": TYPE_HASH}


def _mix_object(d: int, entry: Entry, deadline: int) -> int:
    """Redis's xorObjectDigest: type, visible value, then the expiry."""
    coll = entry.visible_coll()
    if coll is None:
        d = mix_digest(d, _STRING)
        d = mix_digest(d, entry.read())
    else:
        start = d.to_bytes(DIGEST_BYTES, "big")
        mix = getattr(coll, "mix_digest", None)
        if mix is not None:  # ordered elements (lists): mixed in one after the other
            d = int.from_bytes(mix(start), "big")
        else:
            # The other kinds XOR their element digests after the type; value_digest is
            # that from a zero start, so the elements' part is what differs from mix(0, type).
            typed = mix_digest(0, _TYPE_CODES[coll.KIND].to_bytes(4, "big"))
            elements = int.from_bytes(coll.value_digest(), "big") ^ typed
            d = mix_digest(d, _TYPE_CODES[coll.KIND].to_bytes(4, "big")) ^ elements
    if deadline:
        d = xor_digest(d, _EXPIRE_MARK)
        d = mix_digest(d, b"%d" % deadline)
    return d


def value_digest(entry: Entry, deadline: int) -> int:
    """One key's value without its name (DEBUG DIGEST-VALUE)."""
    return _mix_object(0, entry, deadline)


def key_digest(key: bytes, entry: Entry, deadline: int) -> int:
    """One key's contribution to the dataset digest: its name, then its value."""
    return _mix_object(mix_digest(0, key), entry, deadline)


def dataset_digest(keys: Iterable[tuple[bytes, Entry]], now_ms: int) -> str:
    """The digest of every key visible at ``now_ms`` (expired keys not yet reaped are skipped,
    since replicas reap at different moments). Forty zeros when nothing is visible."""
    final = 0
    any_key = False
    for key, entry in keys:
        if not entry.alive():
            continue
        deadline = entry.deadline()
        if deadline and deadline <= now_ms:
            continue
        any_key = True
        final ^= _sha1(key_digest(key, entry, deadline).to_bytes(DIGEST_BYTES, "big"))
    if not any_key:
        return EMPTY
    # Redis mixes the db number in before the keys; db 0 is the only database.
    return hex_digest(mix_digest(0, _DB0) ^ final)
