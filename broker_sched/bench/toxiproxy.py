"""Network faults between one process and its broker, through Toxiproxy's HTTP API.

Toxiproxy (Shopify's TCP proxy for fault testing; `compose/native/brokers.sh up
toxiproxy` builds and starts it) forwards a listening port to the broker, and a *toxic*
added to the proxy misbehaves on every connection through it until it is removed. A
chaos run points one role (the controller, or one invoker) at a proxy of its own and
the others straight at the broker, so the fault is between that role and its broker
only. The toxics this applies, each in both directions:

    latency     every chunk delayed 1 s (±100 ms)
    timeout     silence: nothing gets through and nothing is closed, until removed
    reset       every connection reset (TCP RST) as soon as data arrives
    slicer      data cut into 1-byte packets 100 µs apart
    bandwidth   1 KB/s
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from broker_sched.errors import BrokerSchedError, ConfigError

DEFAULT_API_PORT = 8474
TOXICS: dict[str, tuple[str, dict[str, int]]] = {
    "latency": ("latency", {"latency": 1000, "jitter": 100}),
    "timeout": ("timeout", {"timeout": 0}),
    "reset": ("reset_peer", {"timeout": 0}),
    "slicer": ("slicer", {"average_size": 1, "size_variation": 0, "delay": 100}),
    "bandwidth": ("bandwidth", {"rate": 1}),
}
"""Fault name → (Toxiproxy toxic type, its attributes)."""
STREAMS = ("upstream", "downstream")


class Toxiproxy:
    """A Toxiproxy server's HTTP API (blocking calls: run them in a thread)."""

    def __init__(self, api: str) -> None:
        self.api = api

    def _call(self, method: str, path: str, body: Any = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://{self.api}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                body_bytes: bytes = response.read()
                return body_bytes
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:200]
            raise BrokerSchedError(f"toxiproxy {method} {path}: {exc.code} {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ConfigError(
                f"toxiproxy: no API at {self.api} ({exc}): start it with "
                "`compose/native/brokers.sh up toxiproxy` (TOXIPROXY_PORT) or pass --toxiproxy"
            ) from exc

    def version(self) -> str:
        """The server's version: the check that it answers."""
        return self._call("GET", "/version").decode(errors="replace").strip()

    def create_proxy(self, name: str, listen: str, upstream: str) -> None:
        self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream})

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")

    def add_toxic(self, proxy: str, fault: str) -> list[str]:
        """Add ``fault`` (a key of `TOXICS`) in both directions; the toxics' names."""
        kind, attributes = TOXICS[fault]
        names = []
        for stream in STREAMS:
            name = f"{fault}-{stream}"
            self._call(
                "POST",
                f"/proxies/{proxy}/toxics",
                {"name": name, "type": kind, "stream": stream, "toxicity": 1.0,
                 "attributes": attributes},
            )  # fmt: skip
            names.append(name)
        return names

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")
