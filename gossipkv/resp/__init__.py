"""The client front end: RESP2/RESP3 parsing, reply encoding, and the asyncio protocol."""
