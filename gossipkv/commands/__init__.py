"""The command table: one module per data type, each command declared once.

Commands read the keyspace and emit deltas through it; they never touch sockets or peers.
Importing this package registers every command module's commands in ``TABLE``.
"""
