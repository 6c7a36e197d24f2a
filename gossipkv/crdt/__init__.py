"""Pure CRDT data: no I/O, no asyncio, nothing from the layers above."""
