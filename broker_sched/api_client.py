"""`broker-sched invoke`: a call to a controller's HTTP API, printed as JSON.

The key goes as HTTP basic auth, as ``wsk`` sends it, read from a ``.wskprops``-style
file rather than the command line, where any user of the machine could read it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

from broker_sched.api_keys import auth_path, read_auth_file, split_auth
from broker_sched.config import ApiSettings
from broker_sched.errors import ConfigError


def client_auth(settings: ApiSettings, auth_file: Path | None) -> str | None:
    """The ``uuid:key`` to send: from ``auth_file``, else the configured auth file."""
    path = auth_file or auth_path(settings)
    auth = read_auth_file(path)
    if auth is None and auth_file is not None:
        raise ConfigError(f"--auth-file: no AUTH=uuid:key line in {path}")
    if auth is not None:
        split_auth(auth)
    return auth


async def invoke(
    api: str,
    action: str,
    payload: str,
    *,
    blocking: bool,
    auth: str | None,
    result_only: bool = False,
) -> int:
    """POST the payload; prints the response body and returns 0 for a 2xx status.

    The body is OpenWhisk's activation (or only its result with ``result_only``); a
    blocking call that outlived the controller's wait prints ``{"activationId": ...}``
    and the hint to fetch it later.
    """
    try:
        json.loads(payload)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"payload is not JSON: {exc}") from exc
    status, body = await post(
        api, action, payload.encode(), blocking=blocking, auth=auth, result_only=result_only
    )
    print(body)
    if status == 202 and blocking:
        print(
            "broker-sched: no result within the controller's wait; the activation runs on: "
            "GET /api/v1/namespaces/_/activations/<activationId> reads it later",
            file=sys.stderr,
        )
    if status == 401:
        print(
            "broker-sched: the API wants a key: set api.auth_file (or --auth-file) to a file "
            "with AUTH=uuid:key; a controller's first start writes one",
            file=sys.stderr,
        )
    return 0 if 200 <= status < 300 else 1


async def post(
    api: str,
    action: str,
    payload: bytes,
    *,
    blocking: bool,
    auth: str | None,
    result_only: bool = False,
) -> tuple[int, str]:
    """One invocation: the status (0 when unreachable) and the body.

    ``action`` without a namespace goes to ``_``, the key's own, as with ``wsk``.
    """
    namespace, _, name = action.rpartition("/")
    url = (
        f"http://{api}/api/v1/namespaces/{quote(namespace or '_')}/actions/{quote(name)}"
        f"?blocking={'true' if blocking else 'false'}&result={'true' if result_only else 'false'}"
    )
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    request = urllib.request.Request(url, data=payload, headers=headers, method="POST")
    return await asyncio.to_thread(_send, request)


def _send(request: urllib.request.Request) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError as exc:
        print(
            f"broker-sched: cannot reach the API at {request.full_url}: {exc.reason}",
            file=sys.stderr,
        )
        return 0, ""
