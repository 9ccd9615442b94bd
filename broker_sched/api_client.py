"""`broker-sched invoke`: a call to a controller's HTTP API, printed as JSON."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.request
from urllib.parse import quote

from broker_sched.errors import ConfigError


async def invoke(api: str, action: str, payload: str, *, blocking: bool) -> int:
    """POST the payload; prints the response body and returns 0 for a 2xx status."""
    try:
        json.loads(payload)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"payload is not JSON: {exc}") from exc
    namespace, _, name = action.rpartition("/")
    url = (
        f"http://{api}/api/v1/namespaces/{quote(namespace or 'guest')}/actions/{quote(name)}"
        f"?blocking={'true' if blocking else 'false'}"
    )
    request = urllib.request.Request(
        url, data=payload.encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    status, body = await asyncio.to_thread(_send, request)
    print(body)
    return 0 if 200 <= status < 300 else 1


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
