"""The controller's HTTP front door, with OpenWhisk's paths and status codes.

    POST /api/v1/namespaces/{namespace}/actions/{action}?blocking=true   body: JSON payload
    GET  /api/v1/namespaces/{namespace}/activations?limit=30
    GET  /api/v1/namespaces/{namespace}/activations/{activation_id}
    GET  /api/v1/openapi.json                                             this API, described
    GET  /health
    GET  /metrics                                                         Prometheus text

Every ``/api/v1/namespaces`` call needs the namespace's key as HTTP basic auth
(``uuid:key``, as ``wsk`` sends it; ``_`` in the path stands for the key's namespace):
401 without a valid key, 403 for another namespace. A blocking call answers 200 with the
activation record (or 502 when the action failed), a non-blocking one 202 with the
activation id. Errors map to the codes clients of such platforms already handle: 400 a
body that is not JSON, 404 unknown action, 413 payload too large, 429 a namespace limit
or the scheduler's throttle (with ``Retry-After``), 503 broker unavailable, 504 no
result in time. The routes are Starlette's, the HTTP is uvicorn's
(:mod:`broker_sched.api_server`); this module is only what is particular to the API.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from http import HTTPStatus

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker_sched.api_keys import Keyring
from broker_sched.api_server import ApiServer, start
from broker_sched.errors import (
    BrokerSchedError,
    BrokerUnavailable,
    InvalidPayload,
    InvocationTimeout,
    NoInvokers,
    PayloadTooLarge,
    Throttled,
    UnknownAction,
)
from broker_sched.limits import NamespaceLimiter
from broker_sched.metrics import CONTENT_TYPE, controller_families, exposition
from broker_sched.model import ActivationResult, fqn, new_id
from broker_sched.openapi import document
from broker_sched.scheduler.controller import Controller

ERROR_STATUS: list[tuple[type[BrokerSchedError], HTTPStatus]] = [
    (UnknownAction, HTTPStatus.NOT_FOUND),
    (PayloadTooLarge, HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
    (InvalidPayload, HTTPStatus.BAD_REQUEST),
    (Throttled, HTTPStatus.TOO_MANY_REQUESTS),
    (BrokerUnavailable, HTTPStatus.SERVICE_UNAVAILABLE),
    (NoInvokers, HTTPStatus.SERVICE_UNAVAILABLE),
    (InvocationTimeout, HTTPStatus.GATEWAY_TIMEOUT),
]
NAMESPACES = "/api/v1/namespaces/{namespace}"
DEFAULT_LIST_LIMIT = 30
MAX_LIST_LIMIT = 200


class Api:
    """The routes over one controller; ``keyring=None`` turns authentication off."""

    def __init__(self, controller: Controller, keyring: Keyring | None) -> None:
        self.controller = controller
        self.keyring = keyring
        self.settings = controller.settings.api
        self.max_body_bytes = controller.settings.max_payload_bytes
        self.limiter = NamespaceLimiter(
            per_minute=self.settings.invocations_per_minute,
            concurrent=self.settings.concurrent_invocations,
        )
        self.records = controller.records
        self._unfinished: dict[str, tuple[str, str, float]] = {}
        """Non-blocking activation id -> namespace, limiter token, deadline."""
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = Counter(
            "broker_sched_api_requests",
            "API requests answered, by endpoint and status code.",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "broker_sched_api_request_seconds",
            "Time to answer an API request, by endpoint.",
            ["endpoint"],
            registry=self.registry,
        )
        routes = [
            Route(NAMESPACES + "/actions/{action}", self.invoke, methods=["POST"]),
            Route(NAMESPACES + "/activations", self.activations, methods=["GET"]),
            Route(NAMESPACES + "/activations/{activation_id}", self.activation, methods=["GET"]),
            Route("/api/v1/openapi.json", self.openapi, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]
        self.app: ASGIApp = self._measured(
            Starlette(routes=routes, exception_handlers={HTTPException: _error})
        )
        self._openapi = document()

    async def start(self, host: str, port: int) -> ApiServer:
        """Bind and start accepting; port 0 picks a free port (see ``.port``)."""
        return await start(self.app, host, port, self.settings)

    async def serve(self, host: str, port: int) -> None:
        server = await self.start(host, port)
        await server.serve_forever()

    async def invoke(self, request: Request) -> Response:
        namespace = self._authorize(request)
        action = fqn(namespace, request.path_params["action"])
        if action not in self.controller.actions:
            raise HTTPException(HTTPStatus.NOT_FOUND, str(UnknownAction(action)))
        body = await self._body(request)
        try:
            payload = json.loads(body) if body else {}
        # JSONDecodeError and UnicodeDecodeError are ValueErrors; a nesting deeper than
        # the parser follows is a RecursionError.
        except (ValueError, RecursionError) as exc:
            raise HTTPException(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from None
        blocking = request.query_params.get("blocking", "false") == "true"
        token, now_s = new_id(), time.monotonic()
        self._settle(now_s)
        deadline_s = now_s + self.controller.settings.invocation_timeout_s
        refusal = self.limiter.start(
            namespace, token, now_s, deadline_s, self.controller.controllers()
        )
        if refusal is not None:
            raise HTTPException(
                HTTPStatus.TOO_MANY_REQUESTS,
                refusal.reason,
                {"Retry-After": str(refusal.retry_after_s)},
            )
        try:
            if not blocking:
                activation_id = await self.controller.invoke(action, payload, blocking=False)
                self._unfinished[activation_id] = (namespace, token, deadline_s)
                return JSONResponse({"activationId": activation_id}, HTTPStatus.ACCEPTED)
            result = await self.controller.invoke(action, payload)
        except BrokerSchedError as exc:
            self.limiter.finish(namespace, token)
            status = next(
                (code for kind, code in ERROR_STATUS if isinstance(exc, kind)),
                HTTPStatus.INTERNAL_SERVER_ERROR,
            )
            refused = status in (HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE)
            retry = {"Retry-After": "1"} if refused else None
            raise HTTPException(status, str(exc), retry) from None
        self.limiter.finish(namespace, token)
        status = HTTPStatus.OK if result.ok else HTTPStatus.BAD_GATEWAY
        return JSONResponse(result.model_dump(mode="json"), status)

    async def activations(self, request: Request) -> Response:
        namespace = self._authorize(request)
        try:
            limit = int(request.query_params.get("limit", DEFAULT_LIST_LIMIT))
        except ValueError:
            raise HTTPException(HTTPStatus.BAD_REQUEST, "limit must be a number") from None
        limit = max(0, min(limit, MAX_LIST_LIMIT))
        with _unavailable("activation records"):
            records = await self.records.recent(namespace, limit)
        return JSONResponse([record.model_dump(mode="json") for record in records])

    async def activation(self, request: Request) -> Response:
        """This controller's own recent results first, then the shared records."""
        namespace = self._authorize(request)
        activation_id: str = request.path_params["activation_id"]
        result: ActivationResult | None = self.controller.results.get(activation_id)
        if result is None:
            with _unavailable("activation records"):
                result = await self.records.get(namespace, activation_id)
        if result is None or result.namespace != namespace:
            raise HTTPException(HTTPStatus.NOT_FOUND, "no result for that activation (yet)")
        return JSONResponse(result.model_dump(mode="json"))

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self._openapi)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "controller": self.controller.id})

    async def metrics(self, request: Request) -> Response:
        text = exposition(controller_families(self.controller), self.registry)
        return Response(text, media_type=CONTENT_TYPE)

    def _authorize(self, request: Request) -> str:
        """The namespace the call acts in: the key's, which the path must name (or ``_``)."""
        named: str = request.path_params["namespace"]
        if self.keyring is None:
            return "guest" if named == "_" else named
        owner = self.keyring.namespace_for(request.headers.get("authorization"))
        if owner is None:
            raise HTTPException(
                HTTPStatus.UNAUTHORIZED,
                "an API key is required (HTTP basic auth, uuid:key)",
                {"WWW-Authenticate": 'Basic realm="broker-sched"'},
            )
        if named not in ("_", owner):
            raise HTTPException(HTTPStatus.FORBIDDEN, f"this key is not for namespace {named!r}")
        return owner

    async def _body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it is known to be too large."""
        declared = request.headers.get("content-length")
        if declared is not None and int(declared) > self.max_body_bytes:
            raise _too_large(int(declared), self.max_body_bytes)
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > self.max_body_bytes:
                    raise _too_large(len(body), self.max_body_bytes)
        except ClientDisconnect:
            raise HTTPException(HTTPStatus.BAD_REQUEST, "the client went away") from None
        return bytes(body)

    def _settle(self, now_s: float) -> None:
        """Free the limiter slots of non-blocking activations whose result is in."""
        for activation_id, (namespace, token, deadline_s) in list(self._unfinished.items()):
            if activation_id in self.controller.results or deadline_s <= now_s:
                self.limiter.finish(namespace, token)
                del self._unfinished[activation_id]

    def _measured(self, app: ASGIApp) -> ASGIApp:
        """Count every answer by endpoint and status, and time it."""

        async def measured(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started_s = time.perf_counter()
            code = "500"

            async def sending(message: Message) -> None:
                nonlocal code
                if message["type"] == "http.response.start":
                    code = str(message["status"])
                await send(message)

            try:
                await app(scope, receive, sending)
            finally:
                endpoint = _endpoint_name(scope.get("endpoint"))
                self._requests.labels(endpoint, code).inc()
                self._seconds.labels(endpoint).observe(time.perf_counter() - started_s)

        return measured


@contextlib.contextmanager
def _unavailable(what: str) -> Iterator[None]:
    """A broker error reading ``what`` is a 503, as for an invocation."""
    try:
        yield
    except BrokerSchedError as exc:
        raise HTTPException(HTTPStatus.SERVICE_UNAVAILABLE, f"{what}: {exc}") from None


def _endpoint_name(endpoint: Callable[..., Awaitable[Response]] | None) -> str:
    return getattr(endpoint, "__name__", "none")


def _too_large(size: int, limit: int) -> HTTPException:
    return HTTPException(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        str(PayloadTooLarge(size, limit)),
        {"Connection": "close"},
    )


async def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)
