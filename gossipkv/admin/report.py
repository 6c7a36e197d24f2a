"""``gossipkv status``: fetch a node's /status and print its view of the cluster as a table."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from rich.console import Console
from rich.table import Table

STATE_STYLE = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}


class StatusError(Exception):
    """The endpoint could not be read; the message is the one line the user sees."""


def fetch(host: str, port: int, timeout: float = 5.0) -> dict[str, Any]:
    url = f"http://{host}:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            doc = json.loads(response.read())
    except urllib.error.URLError as e:
        reason = e.reason if isinstance(e.reason, str) else getattr(e.reason, "strerror", None)
        raise StatusError(f"cannot read {url}: {reason or e.reason}") from None
    except (OSError, ValueError) as e:
        raise StatusError(f"cannot read {url}: {e}") from None
    if not isinstance(doc, dict) or "node" not in doc:
        raise StatusError(f"{url} did not answer with a gossipkv status document")
    return doc


def render(doc: dict[str, Any], console: Console) -> None:
    keyspace = doc.get("keyspace", {})
    replication = doc.get("replication", {})
    title = (
        f"gossipkv {doc.get('version', '?')}: the cluster as {doc['node']} "
        f"({doc.get('region', '')}) sees it"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("name")
    table.add_column("region")
    table.add_column("address")
    table.add_column("cluster", justify="right")
    table.add_column("state")
    table.add_column("inc", justify="right")
    table.add_column("lag ops", justify="right")
    table.add_column("lag ms", justify="right")
    table.add_column("link")
    for m in doc.get("members", []):
        style = STATE_STYLE.get(m["state"], "")
        state = f"[{style}]{m['state']}[/]" if style else m["state"]
        table.add_row(
            m["name"], m["region"], f"{m['host']}:{m['client_port']}", str(m["cluster_port"]),
            state, str(m["incarnation"]), f"{m['lag_ops']:,}", f"{m['lag_ms']:.1f}", m["link"],
        )
    console.print(table)
    console.print(
        f"keys {keyspace.get('keys', 0):,} (expires {keyspace.get('expires', 0):,}), "
        f"write seq {replication.get('seq', 0):,}, event-loop lag {doc.get('lag_ms', 0):.1f} ms, "
        f"profile {doc.get('profile', '?')}, up {doc.get('uptime_s', 0):.0f} s",
        highlight=False,
    )
