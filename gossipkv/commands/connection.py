"""Connection commands (Redis's networking.c, acl.c, server.c): PING, ECHO, HELLO, AUTH, SELECT,
CLIENT, QUIT, RESET.

Authentication follows Redis's default user: without ``requirepass`` the default user has no
password and every connection starts authenticated; with it, only ``AUTH [default] <pass>`` or
``HELLO <proto> AUTH default <pass>`` authenticates. There are no other ACL users.

gossipkv keeps a single database, db 0: ``SELECT 0`` works, ``SELECT 1`` .. ``SELECT 15`` (valid
in a stock Redis) fail with an error saying so, other indexes fail as in Redis.
"""

from __future__ import annotations

import hmac
import time

from gossipkv import REDIS_VERSION
from gossipkv.commands import errors
from gossipkv.commands.replies import OK, PONG, ErrorReply, Reply, Status, Verbatim
from gossipkv.commands.session import Session
from gossipkv.commands.table import command, container
from gossipkv.crdt.numeric import parse_int

INT_MIN = -(2**31)
INT_MAX = 2**31 - 1
REDIS_DATABASES = 16  # what a stock Redis accepts in SELECT; gossipkv serves only db 0

NOAUTH_HELLO = (
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
    "HELLO AUTH <user> <pass> option can be used to authenticate the client and select the "
    "RESP protocol version at the same time"
)
AUTH_WITHOUT_PASSWORD = (
    "ERR AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?"
)
BAD_CLIENT_NAME = "ERR Client names cannot contain spaces, newlines or special characters."
ONLY_DB0 = "ERR DB index is out of range: gossipkv keeps a single database, db 0"
CLIENT_TYPES = (b"normal", b"master", b"replica", b"slave", b"pubsub")


def help_reply(name: str, lines: list[str]) -> list[Status]:
    """Redis's addReplyHelp: a usage line, the subcommands, then HELP itself."""
    head = f"{name} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    tail = ["HELP", "    Prints this help."]
    return [Status(x.encode()) for x in (head, *lines, *tail)]


# -- PING, ECHO, SELECT ---------------------------------------------------------------------------


@command(
    "ping", -1, "fast", group="connection", acl="connection", since="1.0.0",
    summary="Ping the server", tips="request_policy:all_shards response_policy:all_succeeded",
)
def ping(s: Session, argv: list[bytes]) -> Reply:
    n = len(argv)
    if n == 1:
        return PONG
    if n == 2:
        return argv[1]
    raise errors.wrong_arity("ping")


@command(
    "echo", 2, "loading stale fast", group="connection", acl="connection", since="1.0.0",
    summary="Echo the given string",
)
def echo(s: Session, argv: list[bytes]) -> Reply:
    return argv[1]


@command(
    "select", 2, "loading stale fast", group="connection", acl="connection", since="1.0.0",
    summary="Change the selected database for the current connection",
)
def select(s: Session, argv: list[bytes]) -> Reply:
    index = parse_int(argv[1])
    if index is None:
        raise ErrorReply(errors.NOT_INTEGER)
    if not INT_MIN <= index <= INT_MAX:
        raise ErrorReply(
            f"ERR value is out of range, value must between {INT_MIN} and {INT_MAX}"
        )
    if index == 0:
        s.db = 0
        return OK
    if 0 < index < REDIS_DATABASES:
        raise ErrorReply(ONLY_DB0)
    raise ErrorReply(errors.DB_INDEX_OUT_OF_RANGE)


# -- authentication ------------------------------------------------------------------------------


def authenticate(s: Session, user: bytes, password: bytes) -> bool:
    """Check a default-user password; on success the session is authenticated."""
    if user != b"default":
        return False
    required = s.server.requirepass
    if required and not hmac.compare_digest(password, required.encode()):
        return False
    s.authenticated = True
    return True


@command(
    "auth", -2, "noscript loading stale fast no-auth allow-busy", group="connection",
    acl="connection", since="1.0.0", summary="Authenticate to the server",
)
def auth(s: Session, argv: list[bytes]) -> Reply:
    n = len(argv)
    if n > 3:
        raise ErrorReply(errors.SYNTAX)
    if n == 2:
        if not s.server.requirepass:
            raise ErrorReply(AUTH_WITHOUT_PASSWORD)
        user, password = b"default", argv[1]
    else:
        user, password = argv[1], argv[2]
    if not authenticate(s, user, password):
        raise ErrorReply(errors.WRONGPASS)
    return OK


def valid_client_name(name: bytes) -> bool:
    """Redis allows only printable ASCII without spaces ('!' .. '~') in client names."""
    return all(33 <= c <= 126 for c in name)


@command(
    "hello", -1, "noscript loading stale fast no-auth allow-busy", group="connection",
    acl="connection", since="6.0.0", summary="Handshake with Redis",
)
def hello(s: Session, argv: list[bytes]) -> Reply:
    n = len(argv)
    version = 0
    i = 1
    if n >= 2:
        v = parse_int(argv[1])
        if v is None:
            raise ErrorReply("ERR Protocol version is not an integer or out of range")
        if v < 2 or v > 3:
            raise ErrorReply("NOPROTO unsupported protocol version")
        version = v
        i = 2
    credentials: tuple[bytes, bytes] | None = None
    name: bytes | None = None
    while i < n:
        option = argv[i].lower()
        more = n - 1 - i
        if option == b"auth" and more >= 2:
            credentials = (argv[i + 1], argv[i + 2])
            i += 3
        elif option == b"setname" and more >= 1:
            name = argv[i + 1]
            if not valid_client_name(name):
                raise ErrorReply(BAD_CLIENT_NAME)
            i += 2
        else:
            raise ErrorReply(f"ERR Syntax error in HELLO option '{errors.text(argv[i])}'")
    if credentials is not None and not authenticate(s, *credentials):
        raise ErrorReply(errors.WRONGPASS)
    if not s.authenticated:
        raise ErrorReply(NOAUTH_HELLO)
    if name is not None:
        s.name = name
    if version:
        s.resp = version
    return {
        b"server": b"redis",
        b"version": REDIS_VERSION.encode(),
        b"proto": s.resp,
        b"id": s.id,
        b"mode": b"standalone",
        b"role": b"master",
        b"modules": [],
    }


# -- QUIT, RESET ---------------------------------------------------------------------------------


@command(
    "quit", -1, "noscript loading stale fast no-auth allow-busy", group="connection",
    acl="connection", since="1.0.0", summary="Close the connection",
)
def quit_(s: Session, argv: list[bytes]) -> Reply:
    s.closing = True  # the RESP layer sends this reply, then closes
    return OK


RESET = Status(b"RESET")


@command(
    "reset", 1, "noscript loading stale fast no-auth allow-busy", group="connection",
    acl="connection", since="6.2.0", summary="Reset the connection",
)
def reset(s: Session, argv: list[bytes]) -> Reply:
    """Back to a fresh connection's state, as Redis 7.0 does (it keeps the NO-EVICT flag)."""
    s.resp = 2
    s.db = 0
    s.name = b""
    s.no_touch = False
    s.authenticated = not s.server.requirepass
    return RESET


# -- CLIENT --------------------------------------------------------------------------------------

container(
    "client", group="connection", since="2.4.0",
    summary="A container for client connection commands",
)

_CLIENT_HELP = [
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are:",
    "    * ADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made from the specified address",
    "    * LADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made to specified local address",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Kill connections by type.",
    "    * USER <username>",
    "      Kill connections authenticated by <username>.",
    "    * SKIPME (YES|NO)",
    "      Skip killing current connection (default: yes).",
    "LIST [options ...]",
    "    Return information about client connections. Options:",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Return clients of specified type.",
    "    * ID <client-id> [<client-id> ...]",
    "      Return clients of specified IDs only.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "SETINFO <option> <value>",
    "    Set client meta attr. Options are:",
    "    * LIB-NAME: the client lib name.",
    "    * LIB-VER: the client lib version.",
    "NO-EVICT (ON|OFF)",
    "    Protect current client connection from eviction.",
    "NO-TOUCH (ON|OFF)",
    "    Will not touch LRU/LFU stats when this mode is on.",
]


@command(
    "client|help", 2, "loading stale", group="connection", acl="connection", since="5.0.0",
    summary="Show helpful text about the different subcommands",
)
def client_help(s: Session, argv: list[bytes]) -> Reply:
    return help_reply("CLIENT", _CLIENT_HELP)


@command(
    "client|id", 2, "noscript loading stale", group="connection", acl="connection",
    since="5.0.0", summary="Returns the client ID for the current connection",
)
def client_id(s: Session, argv: list[bytes]) -> Reply:
    return s.id


@command(
    "client|getname", 2, "noscript loading stale", group="connection", acl="connection",
    since="2.6.9", summary="Get the current connection name",
)
def client_getname(s: Session, argv: list[bytes]) -> Reply:
    return s.name or None


@command(
    "client|setname", 3, "noscript loading stale", group="connection", acl="connection",
    since="2.6.9", summary="Set the current connection name",
)
def client_setname(s: Session, argv: list[bytes]) -> Reply:
    if not valid_client_name(argv[2]):
        raise ErrorReply(BAD_CLIENT_NAME)
    s.name = argv[2]
    return OK


@command(
    "client|setinfo", 4, "noscript loading stale", group="connection", acl="connection",
    since="7.2.0", summary="Set client or connection specific info",
)
def client_setinfo(s: Session, argv: list[bytes]) -> Reply:
    """Redis 7.2's CLIENT SETINFO, which redis-py and other clients send on connect."""
    attr = argv[2].lower()
    if attr not in (b"lib-name", b"lib-ver"):
        raise ErrorReply(f"ERR Unrecognized option '{errors.text(argv[2])}'")
    if not valid_client_name(argv[3]):
        raise ErrorReply(
            f"ERR {errors.text(argv[2])} cannot contain spaces, newlines or special characters."
        )
    if attr == b"lib-name":
        s.lib_name = argv[3]
    else:
        s.lib_ver = argv[3]
    return OK


def _on_off(arg: bytes) -> bool:
    word = arg.lower()
    if word == b"on":
        return True
    if word == b"off":
        return False
    raise ErrorReply(errors.SYNTAX)


@command(
    "client|no-evict", 3, "admin noscript loading stale", group="connection",
    acl="connection", since="7.0.0", summary="Set client eviction mode for the current connection",
)
def client_no_evict(s: Session, argv: list[bytes]) -> Reply:
    s.no_evict = _on_off(argv[2])
    return OK


@command(
    "client|no-touch", 3, "noscript loading stale", group="connection", acl="connection",
    since="7.2.0",
    summary="Controls whether commands sent by the client will alter the LRU/LFU of the keys "
    "they access.",
)
def client_no_touch(s: Session, argv: list[bytes]) -> Reply:
    """Accepted for compatibility: gossipkv keeps no LRU/LFU data, so there is nothing to touch."""
    s.no_touch = _on_off(argv[2])
    return OK


def client_line(c: Session, now: float) -> str:
    """One CLIENT LIST line in Redis 7's field order (plus 7.2's lib-name and lib-ver)."""
    buffers = c.transport_info() if c.transport_info is not None else {}
    qbuf = buffers.get("qbuf", 0)
    omem = buffers.get("omem", 0)
    flags = (
        ("b" if c.blocked else "") + ("e" if c.no_evict else "") + ("T" if c.no_touch else "")
        or "N"
    )
    return (
        f"id={c.id} addr={c.addr} laddr={c.laddr} fd={buffers.get('fd', -1)} "
        f"name={errors.text(c.name)} age={int(now - c.created)} "
        f"idle={int(now - c.last_interaction)} flags={flags} db={c.db} sub=0 psub=0 ssub=0 "
        f"multi=-1 qbuf={qbuf} qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 "
        f"omem={omem} tot-mem={qbuf + omem} events={'rw' if omem else 'r'} cmd={c.last_cmd} "
        f"user=default redir=-1 resp={c.resp} lib-name={errors.text(c.lib_name)} "
        f"lib-ver={errors.text(c.lib_ver)}"
    )


def _client_type(arg: bytes) -> bytes:
    word = arg.lower()
    if word not in CLIENT_TYPES:
        raise ErrorReply(f"ERR Unknown client type '{errors.text(arg)}'")
    return b"replica" if word == b"slave" else word


def _has_type(c: Session, kind: bytes) -> bool:
    # Every connection is a normal client: there are no Redis replicas, and pub/sub
    # subscribers are not told apart here yet.
    return kind == b"normal"


@command(
    "client|list", -2, "admin noscript loading stale", group="connection", acl="connection",
    since="2.4.0", summary="Get the list of client connections", tips="nondeterministic_output",
)
def client_list(s: Session, argv: list[bytes]) -> Reply:
    clients = list(s.server.clients.values())
    n = len(argv)
    if n == 4 and argv[2].lower() == b"type":
        kind = _client_type(argv[3])
        clients = [c for c in clients if _has_type(c, kind)]
    elif n >= 4 and argv[2].lower() == b"id":
        ids: list[int] = []
        for arg in argv[3:]:
            cid = parse_int(arg)
            if cid is None:
                raise ErrorReply("ERR Invalid client ID")
            ids.append(cid)
        by_id = s.server.clients
        clients = [by_id[i] for i in ids if i in by_id]
    elif n != 2:
        raise ErrorReply(errors.SYNTAX)
    now = time.time()
    return Verbatim("".join(client_line(c, now) + "\n" for c in clients).encode(
        "utf-8", "surrogateescape"
    ))


@command(
    "client|info", 2, "noscript loading stale", group="connection", acl="connection",
    since="6.2.0", summary="Returns information about the current client connection.",
    tips="nondeterministic_output",
)
def client_info(s: Session, argv: list[bytes]) -> Reply:
    return Verbatim((client_line(s, time.time()) + "\n").encode("utf-8", "surrogateescape"))


@command(
    "client|kill", -3, "admin noscript loading stale", group="connection", acl="connection",
    since="2.4.0", summary="Kill the connection of a client",
)
def client_kill(s: Session, argv: list[bytes]) -> Reply:
    """CLIENT KILL addr (old form: OK or an error) or by filters (the number killed)."""
    addr: str | None = None
    laddr: str | None = None
    kind: bytes | None = None
    client_id: int | None = None
    skipme = True
    old_form = len(argv) == 3
    if old_form:
        addr = errors.text(argv[2])
        skipme = False  # with the old form a client may kill itself
    else:
        for i in range(2, len(argv), 2):
            if i + 1 == len(argv):
                raise ErrorReply(errors.SYNTAX)
            option, value = argv[i].lower(), argv[i + 1]
            if option == b"id":
                cid = parse_int(value)
                if cid is None or cid < 1:
                    raise ErrorReply("ERR client-id should be greater than 0")
                client_id = cid
            elif option == b"type":
                kind = _client_type(value)
            elif option == b"addr":
                addr = errors.text(value)
            elif option == b"laddr":
                laddr = errors.text(value)
            elif option == b"user":
                if value != b"default":
                    raise ErrorReply(f"ERR No such user '{errors.text(value)}'")
            elif option == b"skipme":
                word = value.lower()
                if word not in (b"yes", b"no"):
                    raise ErrorReply(errors.SYNTAX)
                skipme = word == b"yes"
            else:
                raise ErrorReply(errors.SYNTAX)
    killed = 0
    for c in list(s.server.clients.values()):
        if (
            (addr is not None and c.addr != addr)
            or (laddr is not None and c.laddr != laddr)
            or (client_id is not None and c.id != client_id)
            or (kind is not None and not _has_type(c, kind))
        ):
            continue
        if c is s:
            if skipme:
                continue
            s.closing = True  # after this reply, like Redis's CLIENT_CLOSE_AFTER_REPLY
        else:
            c.close()
        killed += 1
    if old_form:
        if not killed:
            raise ErrorReply("ERR No such client")
        return OK
    return killed
