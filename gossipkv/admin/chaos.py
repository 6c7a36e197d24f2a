"""The admin endpoint's ``/chaos``: list, add and clear fault-injection rules.

``GET /chaos`` lists the rules and what they have done, ``POST /chaos`` adds (or replaces, by
peer and action) one rule given as JSON, ``DELETE /chaos`` clears every rule (``?peer=NAME``:
that peer's). On a node started without chaos every verb answers 403: fault injection must
never be switched on by accident in production.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from typing import Any

from aiohttp import web

from gossipkv.cluster.faults import Faults, RuleError, parse_rule

OFF = "chaos is off: start the node with --chaos or [cluster] chaos = true\n"


def add_routes(app: web.Application, faults: Faults | None) -> None:
    async def get(request: web.Request) -> web.Response:
        if faults is None:
            return web.Response(status=403, text=OFF)
        return web.json_response(faults.to_json())

    async def post(request: web.Request) -> web.Response:
        if faults is None:
            return web.Response(status=403, text=OFF)
        try:
            doc = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        try:
            rule = parse_rule(doc)
        except RuleError as e:
            return web.json_response({"error": str(e)}, status=400)
        faults.add(rule)
        return web.json_response(faults.to_json())

    async def delete(request: web.Request) -> web.Response:
        if faults is None:
            return web.Response(status=403, text=OFF)
        removed = faults.clear(request.query.get("peer"))
        return web.json_response({"removed": removed, **faults.to_json()})

    app.router.add_get("/chaos", get)
    app.router.add_post("/chaos", post)
    app.router.add_delete("/chaos", delete)


class ChaosError(Exception):
    """The endpoint refused or could not be reached; the message is one line for the user."""


def request(
    host: str, port: int, method: str, rule: dict[str, Any] | None = None, query: str = "",
    timeout: float = 5.0,
) -> dict[str, Any]:
    """One call to a node's /chaos (``gossipkv chaos`` and the chaos scripts use it)."""
    url = f"http://{host}:{port}/chaos{query}"
    body = json.dumps(rule).encode() if rule is not None else None
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            doc = json.loads(response.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode("utf-8", "replace").strip()
        with contextlib.suppress(ValueError, AttributeError):
            text = json.loads(text)["error"]
        raise ChaosError(f"{url}: {e.code} {text}") from None
    except (OSError, ValueError) as e:
        raise ChaosError(f"cannot reach {url}: {e}") from None
    if not isinstance(doc, dict):
        raise ChaosError(f"{url} did not answer with a JSON object")
    return doc
