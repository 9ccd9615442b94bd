"""The controller's HTTP front door, with OpenWhisk's paths and status codes.

    POST /api/v1/namespaces/{namespace}/actions/{action}?blocking=true   body: JSON payload
    GET  /api/v1/namespaces/{namespace}/activations/{activation_id}
    GET  /health
    GET  /metrics                                                         Prometheus text

A blocking call answers 200 with the activation record (or 502 when the action failed),
a non-blocking one 202 with the activation id. Errors map to the codes clients of such
platforms already handle: 404 unknown action, 413 payload too large, 429 throttled,
503 broker unavailable, 504 no result in time. Plain asyncio streams, HTTP/1.1 with
keep-alive: the API is a thin shell over :meth:`Controller.invoke`, not a web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from broker_sched.errors import (
    BrokerSchedError,
    BrokerUnavailable,
    InvocationTimeout,
    NoInvokers,
    PayloadTooLarge,
    Throttled,
    UnknownAction,
)
from broker_sched.metrics import CONTENT_TYPE, controller_families, exposition
from broker_sched.scheduler.controller import Controller

log = logging.getLogger(__name__)

INVOKE = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/actions/(?P<action>[^/]+)$")
ACTIVATION = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/activations/(?P<id>[^/]+)$")
MAX_HEADER_BYTES = 16_384


class Text(str):
    """A response body sent as it is (the metrics), not as JSON."""


ERROR_STATUS: list[tuple[type[BrokerSchedError], HTTPStatus]] = [
    (UnknownAction, HTTPStatus.NOT_FOUND),
    (PayloadTooLarge, HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
    (Throttled, HTTPStatus.TOO_MANY_REQUESTS),
    (BrokerUnavailable, HTTPStatus.SERVICE_UNAVAILABLE),
    (NoInvokers, HTTPStatus.SERVICE_UNAVAILABLE),
    (InvocationTimeout, HTTPStatus.GATEWAY_TIMEOUT),
]


class Api:
    def __init__(self, controller: Controller, max_body_bytes: int) -> None:
        self.controller = controller
        self.max_body_bytes = max_body_bytes

    async def start(self, host: str, port: int) -> asyncio.Server:
        """Bind and start accepting; port 0 picks a free port (see ``server.sockets``)."""
        server = await asyncio.start_server(self._connection, host, port)
        log.info("API listening on http://%s:%d", host, server.sockets[0].getsockname()[1])
        return server

    async def serve(self, host: str, port: int) -> None:
        async with await self.start(host, port) as server:
            await server.serve_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One request and its response; False when the connection should close."""
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEADER_BYTES:
            await _respond(writer, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, {}, False)
            return False
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _ = [*request_line.split(" ", 2), "", ""][:3]
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines if line)
        }
        keep_alive = headers.get("connection", "").lower() != "close"
        length = int(headers.get("content-length", "0") or 0)
        if length > self.max_body_bytes:
            error = PayloadTooLarge(length, self.max_body_bytes)
            await _respond(
                writer, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": str(error)}, False
            )
            return False
        body = await reader.readexactly(length) if length else b""
        status, document = await self._route(method, target, body)
        await _respond(writer, status, document, keep_alive)
        return keep_alive

    async def _route(self, method: str, target: str, body: bytes) -> tuple[HTTPStatus, Any]:
        url = urlsplit(target)
        if url.path == "/health":
            return HTTPStatus.OK, {"status": "ok", "controller": self.controller.id}
        if url.path == "/metrics" and method == "GET":
            return HTTPStatus.OK, Text(exposition(controller_families(self.controller)))
        if (match := INVOKE.match(url.path)) and method == "POST":
            blocking = parse_qs(url.query).get("blocking", ["false"])[0] == "true"
            return await self._invoke(f"{match['ns']}/{match['action']}", body, blocking)
        if (match := ACTIVATION.match(url.path)) and method == "GET":
            result = self.controller.results.get(match["id"])
            if result is None:
                return HTTPStatus.NOT_FOUND, {"error": "no result for that activation (yet)"}
            return HTTPStatus.OK, result.model_dump(mode="json")
        return HTTPStatus.NOT_FOUND, {"error": f"no route for {method} {url.path}"}

    async def _invoke(self, action: str, body: bytes, blocking: bool) -> tuple[HTTPStatus, Any]:
        try:
            payload = json.loads(body) if body else {}
        except json.JSONDecodeError as exc:
            return HTTPStatus.BAD_REQUEST, {"error": f"body is not JSON: {exc}"}
        try:
            if not blocking:
                activation_id = await self.controller.invoke(action, payload, blocking=False)
                return HTTPStatus.ACCEPTED, {"activationId": activation_id}
            result = await self.controller.invoke(action, payload)
        except BrokerSchedError as exc:
            status = next(
                (code for kind, code in ERROR_STATUS if isinstance(exc, kind)),
                HTTPStatus.INTERNAL_SERVER_ERROR,
            )
            return status, {"error": str(exc)}
        status = HTTPStatus.OK if result.ok else HTTPStatus.BAD_GATEWAY
        return status, result.model_dump(mode="json")


async def _respond(
    writer: asyncio.StreamWriter, status: HTTPStatus, document: Any, keep_alive: bool
) -> None:
    if isinstance(document, Text):
        body, content_type = document.encode(), CONTENT_TYPE
    else:
        body, content_type = json.dumps(document).encode(), "application/json"
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + body)
    await writer.drain()
