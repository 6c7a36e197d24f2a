"""Cluster commands: MEET, FORGET, MEMBERS, WAIT, ANTIENTROPY.

They reach the cluster only through ``Server.cluster`` (gossipkv.commands.control), so this
module never imports cluster/. A node always runs its cluster bus; ``Server.cluster`` is None only
for a Server built without a node, and then MEET and FORGET fail as Redis's CLUSTER commands do
with cluster support disabled, MEMBERS lists this node alone, and WAIT behaves as Redis with no
replicas.

MEMBERS replies with one map per member (a flat field/value array in RESP2), this node first:
name, region, host, client_port, cluster_port, admin_port, state (alive, suspect, dead, left),
incarnation, lag_ops and lag_ms (how far the member is behind this node's writes), and link (the
replication link to it: connecting, snapshot, streaming, down; "self" for this node).

ANTIENTROPY [PEER name] [DRYRUN] runs an exchange now and replies with its summary as a map:
peer, mode, in_sync, levels_walked, leaves_differing, keys_compared, candidates, differences,
repaired_here, repaired_there, round_trips, bytes_sent, bytes_received, ms, error.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gossipkv.commands import errors
from gossipkv.commands.replies import ErrorReply, Reply
from gossipkv.commands.session import Server, Session
from gossipkv.commands.table import command
from gossipkv.crdt.numeric import parse_int

NO_CLUSTER = "ERR This instance has cluster support disabled"
# Timeouts past this many milliseconds wait for ever, as they do in practice in Redis.
WAIT_FOREVER_MS = 100 * 365 * 86_400_000


@command(
    "meet", -2, "admin noscript", group="cluster", since="0.1.0",
    summary="Joins the cluster of the node at host:port (its client port), exchanging snapshots",
)
def meet(s: Session, argv: list[bytes]) -> Reply:
    if len(argv) > 3:
        raise errors.wrong_arity("meet")
    if len(argv) == 3:
        host_b, port_b = argv[1], argv[2]
    else:
        host_b, sep, port_b = argv[1].rpartition(b":")
        if not sep:
            raise ErrorReply(f"ERR Invalid node address specified: {errors.text(argv[1])}")
    host = errors.text(host_b).strip("[]")
    port = parse_int(port_b)
    if port is None:
        raise ErrorReply(f"ERR Invalid port specified: {errors.text(port_b)}")
    if not host or not 0 < port <= 65535:
        raise ErrorReply(f"ERR Invalid node address specified: {host}:{errors.text(port_b)}")
    cluster = s.server.cluster
    if cluster is None:
        raise ErrorReply(NO_CLUSTER)
    return cluster.meet(host, port)


@command(
    "forget", 2, "admin noscript", group="cluster", since="0.1.0",
    summary="Removes a member from the cluster for good, by name",
)
def forget(s: Session, argv: list[bytes]) -> Reply:
    cluster = s.server.cluster
    if cluster is None:
        raise ErrorReply(NO_CLUSTER)
    return cluster.forget(errors.text(argv[1]))


@command(
    "members", 1, "loading stale", group="cluster", since="0.1.0",
    summary="Lists the cluster's members, this node first, with state, region and lag",
)
def members(s: Session, argv: list[bytes]) -> Reply:
    cluster = s.server.cluster
    rows = cluster.members() if cluster is not None else [_lone_row(s.server)]
    return [dict(row) for row in rows]


@command(
    "antientropy", -1, "admin noscript", group="cluster", since="0.1.0",
    summary="Runs a Merkle anti-entropy exchange now with a peer (random when not named) and "
    "replies with its figures; DRYRUN finds and marks differences without repairing them",
)
def antientropy(s: Session, argv: list[bytes]) -> Reply:
    peer: str | None = None
    repair = True
    i = 1
    while i < len(argv):
        opt = argv[i].lower()
        if opt == b"peer" and i + 1 < len(argv):
            peer = errors.text(argv[i + 1])
            i += 2
        elif opt == b"dryrun":
            repair = False
            i += 1
        else:
            raise ErrorReply(errors.SYNTAX)
    cluster = s.server.cluster
    if cluster is None:
        raise ErrorReply(NO_CLUSTER)
    return cluster.antientropy_now(peer, repair)


def _lone_row(srv: Server) -> dict[str, Any]:
    return {
        "name": srv.name, "region": srv.region, "host": srv.host, "client_port": srv.port,
        "cluster_port": 0, "admin_port": 0, "state": "alive", "incarnation": 0,
        "lag_ops": 0, "lag_ms": 0.0, "link": "self",
    }


@command(
    "wait", 3, "noscript", group="generic", since="3.0.0", acl="@slow @connection",
    tips="request_policy:all_shards response_policy:agg_min",
    summary="Wait for the synchronous replication of all the write commands sent in the "
    "context of the current connection",
)
def wait(s: Session, argv: list[bytes]) -> Reply:
    numreplicas = parse_int(argv[1])
    if numreplicas is None:
        raise ErrorReply(errors.NOT_INTEGER)
    timeout = parse_int(argv[2])
    if timeout is None:
        raise ErrorReply("ERR timeout is not an integer or out of range")
    if timeout < 0:
        raise ErrorReply("ERR timeout is negative")
    if timeout > WAIT_FOREVER_MS:
        timeout = 0
    cluster = s.server.cluster
    if cluster is not None:
        return cluster.wait(numreplicas, timeout)
    if numreplicas <= 0:
        return 0
    # No peers can ever acknowledge: Redis without replicas blocks until the timeout.
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Reply] = loop.create_future()
    if timeout:
        timer = loop.call_later(timeout / 1000, _settle, fut)
        fut.add_done_callback(lambda _: timer.cancel())
    return fut


def _settle(fut: asyncio.Future[Reply]) -> None:
    if not fut.done():
        fut.set_result(0)
