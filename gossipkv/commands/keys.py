"""Generic key commands (Redis db.c/expire.c): DEL, EXISTS, TTL, SCAN and friends."""
