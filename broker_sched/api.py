"""The controller's HTTP front door, with OpenWhisk's paths and status codes.

    GET    /api/v1/namespaces/{namespace}/actions                  the namespace's actions
    PUT    /api/v1/namespaces/{namespace}/actions/{action}?overwrite=true   action document
    GET    /api/v1/namespaces/{namespace}/actions/{action}
    DELETE /api/v1/namespaces/{namespace}/actions/{action}
    POST /api/v1/namespaces/{namespace}/actions/{action}?blocking=true&result=false
    GET  /api/v1/namespaces/{namespace}/activations?limit=30&docs=false
    GET  /api/v1/namespaces/{namespace}/activations/{activation_id}
    GET  /api/v1/namespaces/{namespace}/activations/{activation_id}/result
    GET  /api/v1/namespaces/{namespace}/activations/{activation_id}/logs
    GET  /api/v1/openapi.json                                             this API, described
    GET  /health
    GET  /metrics                                                         Prometheus text

Every ``/api/v1/namespaces`` call needs the namespace's key as HTTP basic auth
(``uuid:key``, as ``wsk`` sends it; ``_`` in the path stands for the key's namespace):
401 without a valid key, 403 for another namespace. Answers are OpenWhisk's, as its
controller gives them (:func:`~broker_sched.records.openwhisk_activation`): a blocking
call answers 200 with the activation (``?result=true``: its result only), 502 when the
action failed (its own error, a crash, its time limit), 500 for a system error; past
the blocking wait (``api.blocking_wait_s``, OpenWhisk's 60 s, at most the activation's
deadline ``invocation_timeout_s``) it answers 202 with the activation id, as a
non-blocking call does at once, and the activation runs on to its deadline. Every
answer that has an activation carries its id in the ``x-openwhisk-activation-id``
header. Errors map to the codes
clients of such platforms already handle: 400 a body that is not JSON, 404 unknown
action, 413 payload too large, 429 a namespace limit or the scheduler's throttle (with
``Retry-After``), 503 broker unavailable, 504 a sequence with no result in time. The
routes are Starlette's, the HTTP is uvicorn's (:mod:`broker_sched.api_server`); this
module is only what is particular to the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from http import HTTPStatus
from typing import Any, NoReturn

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker_sched.action_store import ActionStore, action_document, action_from_document
from broker_sched.api_keys import Keyring
from broker_sched.api_server import ApiServer, start
from broker_sched.errors import (
    BrokerSchedError,
    BrokerUnavailable,
    InvalidAction,
    InvalidPayload,
    InvocationTimeout,
    NoInvokers,
    PayloadTooLarge,
    Throttled,
    UnknownAction,
)
from broker_sched.limits import NamespaceLimiter
from broker_sched.live import live_routes
from broker_sched.metrics import CONTENT_TYPE, ActivationTimes, controller_families, exposition
from broker_sched.model import Action, ActivationResult, Status, fqn, new_id
from broker_sched.openapi import document
from broker_sched.records import (
    openwhisk_activation,
    openwhisk_response,
    openwhisk_summary,
)
from broker_sched.runtime.base import ContainerCrashed
from broker_sched.runtime.process import ProcessRuntime
from broker_sched.scheduler.controller import Controller
from broker_sched.topology import consumer_group

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
ACTIVATION_ID_HEADER = "x-openwhisk-activation-id"
"""The header OpenWhisk's controller puts the activation id in on every invoke answer."""
FAILED_STATUS = {
    Status.APPLICATION_ERROR: HTTPStatus.BAD_GATEWAY,
    Status.ACTION_ERROR: HTTPStatus.BAD_GATEWAY,
    Status.TIMEOUT: HTTPStatus.BAD_GATEWAY,
    Status.SYSTEM_ERROR: HTTPStatus.INTERNAL_SERVER_ERROR,
}
"""A blocking call's answer when the activation did not succeed, as OpenWhisk's: 502
for the action's own failures (a reported error, a crash, its time limit), 500 for the
platform's."""
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
        self._deleting: set[str] = set()
        """Actions whose delete waits for their queue to drain: not invoked any more."""
        self.store = ActionStore(controller.transport, controller.settings.invoker.record_ttl_s)
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
        ActivationTimes(self.registry).watch(controller)
        routes = [
            Route(NAMESPACES + "/actions", self.list_actions, methods=["GET"]),
            Route(NAMESPACES + "/actions/{action}", self.invoke, methods=["POST"]),
            Route(NAMESPACES + "/actions/{action}", self.put_action, methods=["PUT"]),
            Route(NAMESPACES + "/actions/{action}", self.get_action, methods=["GET"]),
            Route(NAMESPACES + "/actions/{action}", self.delete_action, methods=["DELETE"]),
            Route(NAMESPACES + "/activations", self.activations, methods=["GET"]),
            Route(NAMESPACES + "/activations/{activation_id}", self.activation, methods=["GET"]),
            Route(
                NAMESPACES + "/activations/{activation_id}/result",
                self.activation_result,
                methods=["GET"],
            ),
            Route(
                NAMESPACES + "/activations/{activation_id}/logs",
                self.activation_logs,
                methods=["GET"],
            ),
            Route("/api/v1/openapi.json", self.openapi, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            *live_routes(controller, keyring),
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
        if action in self._deleting:
            raise HTTPException(HTTPStatus.NOT_FOUND, f"{action} is being deleted")
        body = await self._body(request)
        try:
            payload = json.loads(body) if body else {}
        # JSONDecodeError and UnicodeDecodeError are ValueErrors; a nesting deeper than
        # the parser follows is a RecursionError.
        except (ValueError, RecursionError) as exc:
            raise HTTPException(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from None
        blocking = request.query_params.get("blocking", "false") == "true"
        result_only = request.query_params.get("result", "false") == "true"
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
                return self._accepted(activation_id, namespace, token, deadline_s)
            result = await self.controller.invoke(
                action, payload, wait_s=self.settings.blocking_wait_s
            )
        except InvocationTimeout as exc:
            if exc.activation_id and not self.controller.actions[action].sequence:
                return self._accepted(exc.activation_id, namespace, token, deadline_s)
            self._refuse(namespace, token, exc)
        except BrokerSchedError as exc:
            self._refuse(namespace, token, exc)
        self.limiter.finish(namespace, token)
        answer: Any = openwhisk_activation(result, self.controller.actions.get(action))
        if result_only:
            answer = answer["response"]["result"]
        elif isinstance(result.result, list):
            answer = result.result  # OpenWhisk answers an array result as itself
        status = HTTPStatus.OK if result.ok else FAILED_STATUS[result.status]
        return JSONResponse(answer, status, {ACTIVATION_ID_HEADER: result.activation_id})

    def _accepted(
        self, activation_id: str, namespace: str, token: str, deadline_s: float
    ) -> Response:
        """202 with the id: a non-blocking call, or a blocking one past its wait; the
        namespace's concurrency slot is held until the result or the deadline."""
        self._unfinished[activation_id] = (namespace, token, deadline_s)
        return JSONResponse(
            {"activationId": activation_id},
            HTTPStatus.ACCEPTED,
            {ACTIVATION_ID_HEADER: activation_id},
        )

    def _refuse(self, namespace: str, token: str, exc: BrokerSchedError) -> NoReturn:
        self.limiter.finish(namespace, token)
        status = next(
            (code for kind, code in ERROR_STATUS if isinstance(exc, kind)),
            HTTPStatus.INTERNAL_SERVER_ERROR,
        )
        refused = status in (HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE)
        retry = {"Retry-After": "1"} if refused else None
        raise HTTPException(status, str(exc), retry) from None

    async def activations(self, request: Request) -> Response:
        """The namespace's newest activations: OpenWhisk's summaries, or whole
        activations with ``docs=true``."""
        namespace = self._authorize(request)
        try:
            limit = int(request.query_params.get("limit", DEFAULT_LIST_LIMIT))
        except ValueError:
            raise HTTPException(HTTPStatus.BAD_REQUEST, "limit must be a number") from None
        limit = max(0, min(limit, MAX_LIST_LIMIT))
        view = (
            openwhisk_activation
            if request.query_params.get("docs", "false") == "true"
            else openwhisk_summary
        )
        with _unavailable("activation records"):
            records = await self.records.recent(namespace, limit)
        return JSONResponse([view(record, self._action_of(record)) for record in records])

    async def activation(self, request: Request) -> Response:
        record = await self._record(request)
        return JSONResponse(openwhisk_activation(record, self._action_of(record)))

    async def activation_result(self, request: Request) -> Response:
        """The activation's ``response``: ``{"result", "status", "success"}``."""
        return JSONResponse(openwhisk_response(await self._record(request)))

    async def activation_logs(self, request: Request) -> Response:
        """``{"logs": [...]}``: what the run wrote, one line each (a sequence: its steps)."""
        record = await self._record(request)
        return JSONResponse({"logs": openwhisk_activation(record, None)["logs"]})

    async def _record(self, request: Request) -> ActivationResult:
        """This controller's own recent results first, then the shared records."""
        namespace = self._authorize(request)
        activation_id: str = request.path_params["activation_id"]
        result: ActivationResult | None = self.controller.results.get(activation_id)
        if result is None:
            with _unavailable("activation records"):
                result = await self.records.get(namespace, activation_id)
        if result is None or result.namespace != namespace:
            raise HTTPException(HTTPStatus.NOT_FOUND, "no result for that activation (yet)")
        return result

    def _action_of(self, record: ActivationResult) -> Action | None:
        return self.controller.actions.get(fqn(record.namespace, record.action))

    async def put_action(self, request: Request) -> Response:
        """Create or (``?overwrite=true``) update an action from OpenWhisk's document.

        Code is loaded once in a throwaway worker process before it is stored, so code
        that fails to import or has no callable ``main`` is refused here, not at its
        first activation. The settings' actions (no revision: never stored) are fixed: 409.
        """
        namespace = self._authorize(request)
        name: str = request.path_params["action"]
        key = fqn(namespace, name)
        try:
            document = json.loads(await self._body(request) or b"null")
        except (ValueError, RecursionError) as exc:
            raise HTTPException(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from None
        existing = self.controller.actions.get(key)
        if existing is not None and not existing.revision:
            raise HTTPException(
                HTTPStatus.CONFLICT, f"{key} is defined in the settings; it cannot be changed here"
            )
        overwrite = request.query_params.get("overwrite", "false") == "true"
        if existing is not None and not overwrite:
            raise HTTPException(
                HTTPStatus.CONFLICT, f"{key} exists: PUT with ?overwrite=true to update it"
            )
        try:
            action = action_from_document(namespace, name, document)
            missing = [step for step in action.sequence if step not in self.controller.actions]
            if missing:
                raise InvalidAction(f"the sequence's components do not exist: {missing}")
            if action.code:
                await _trial_load(action, self.controller.settings.scheduler.create_timeout_s)
        except InvalidAction as exc:
            status = (
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE
                if "more than the limit" in str(exc)
                else HTTPStatus.BAD_REQUEST
            )
            raise HTTPException(status, str(exc)) from None
        with _unavailable("the action store"):
            stored = await self.store.put(action)
        self.controller.actions[key] = stored
        return JSONResponse(action_document(stored))

    async def get_action(self, request: Request) -> Response:
        return JSONResponse(action_document(self._action(request)))

    async def list_actions(self, request: Request) -> Response:
        """The namespace's actions, without their code, as OpenWhisk lists them."""
        namespace = self._authorize(request)
        listed = []
        for action in sorted(self.controller.actions.values(), key=lambda a: a.name):
            if action.namespace == namespace:
                document = action_document(action)
                document["exec"].pop("code", None)
                listed.append(document)
        return JSONResponse(listed)

    async def delete_action(self, request: Request) -> Response:
        """Delete an API-made action once its queue is drained.

        New invocations through this controller get 404 at once; the action stays
        deployed while what is already queued runs (containers are still made for
        it), for at most ``invocation_timeout_s``, by when every queued activation has
        been answered or passed its deadline. Then the deletion is stored.
        """
        action = self._action(request)
        if not action.revision:
            raise HTTPException(
                HTTPStatus.CONFLICT,
                f"{action.fqn} is defined in the settings; it cannot be deleted here",
            )
        if action.fqn in self._deleting:
            raise HTTPException(HTTPStatus.CONFLICT, f"{action.fqn} is being deleted")
        self._deleting.add(action.fqn)
        try:
            with _unavailable("the action's queue"):
                await self._drained(action)
            with _unavailable("the action store"):
                await self.store.delete(action.namespace, action.name)
            self.controller.actions.pop(action.fqn, None)
        finally:
            self._deleting.discard(action.fqn)
        return JSONResponse(action_document(action))

    async def _drained(self, action: Action) -> None:
        """Wait until the action's queue has nothing pending or in flight, or for
        ``invocation_timeout_s`` (a queue shared by actions, as ``sharding``'s per
        invoker, is not waited for)."""
        queues = self.controller.policy.work_queues([action], [])
        pairs = [(queue, consumer_group(queue)) for queue in queues]
        interval_s = self.controller.settings.scheduler.check_interval_s
        deadline_s = time.monotonic() + self.controller.settings.invocation_timeout_s
        while pairs and time.monotonic() < deadline_s:
            backlogs = await self.controller.transport.backlogs(pairs)
            if all(backlog.total == 0 for backlog in backlogs):
                return
            await asyncio.sleep(interval_s)

    def _action(self, request: Request) -> Action:
        namespace = self._authorize(request)
        key = fqn(namespace, request.path_params["action"])
        action = self.controller.actions.get(key)
        if action is None:
            raise HTTPException(HTTPStatus.NOT_FOUND, str(UnknownAction(key)))
        return action

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


async def _trial_load(action: Action, timeout_s: float) -> None:
    """Load ``action``'s code once in a worker process of its own, then stop it;
    :class:`InvalidAction` with the load error when it fails."""
    runtime = ProcessRuntime(init_timeout_s=timeout_s, stop_timeout_s=1.0)
    try:
        await runtime.create(action)
    except ContainerCrashed as exc:
        raise InvalidAction(f"the action's code does not load: {exc.reason}") from None
    finally:
        await runtime.close()


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
