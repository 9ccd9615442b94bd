"""The API's OpenAPI 3.1 document, served at ``GET /api/v1/openapi.json``.

Written as data beside the routes rather than generated from them: the routes read raw
bodies (a payload is any JSON, its size checked while it streams), so there are no
request models to generate from. The activation record's schema comes from the model
itself, so the one part that changes with the code cannot drift.
"""

from __future__ import annotations

from typing import Any

from broker_sched import __version__
from broker_sched.model import ActivationResult

_ERROR = {"$ref": "#/components/schemas/Error"}


def _response(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"content": {"application/json": {"schema": schema or _ERROR}}}
    return {"description": description, **body}


_NAMESPACE = {
    "name": "namespace",
    "in": "path",
    "required": True,
    "description": "the key's namespace, or `_` for it",
    "schema": {"type": "string"},
}
_AUTH_ERRORS = {
    "401": _response("no valid API key (HTTP basic auth, uuid:key)"),
    "403": _response("the key's namespace is another one"),
}
_RECORD = {"$ref": "#/components/schemas/ActivationResult"}


def document() -> dict[str, Any]:
    record = ActivationResult.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = record.pop("$defs", {})
    return {
        "openapi": "3.1.0",
        "info": {"title": "broker-sched controller API", "version": __version__},
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {
                **definitions,
                "ActivationResult": record,
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
            },
        },
        "security": [{"basic": []}],
        "paths": {
            "/api/v1/namespaces/{namespace}/actions/{action}": {
                "post": {
                    "summary": "Invoke an action",
                    "parameters": [
                        _NAMESPACE,
                        {
                            "name": "action",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "blocking",
                            "in": "query",
                            "description": "wait for the result",
                            "schema": {"type": "boolean", "default": False},
                        },
                    ],
                    "requestBody": {
                        "description": "the payload: any JSON value",
                        "content": {"application/json": {"schema": {}}},
                    },
                    "responses": {
                        "200": _response("blocking: the action succeeded", _RECORD),
                        "202": _response(
                            "non-blocking: accepted",
                            {"type": "object", "properties": {"activationId": {"type": "string"}}},
                        ),
                        "400": _response("the body is not JSON, or not JSON a payload can carry"),
                        **_AUTH_ERRORS,
                        "404": _response("no such action"),
                        "413": _response("the payload is larger than max_payload_bytes"),
                        "429": _response(
                            "a namespace limit or the scheduler's throttle; see Retry-After"
                        ),
                        "502": _response("blocking: the action failed", _RECORD),
                        "503": _response("broker unavailable or no invoker"),
                        "504": _response("blocking: no result in time"),
                    },
                }
            },
            "/api/v1/namespaces/{namespace}/activations": {
                "get": {
                    "summary": "The namespace's recent activations, newest first",
                    "parameters": [
                        _NAMESPACE,
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "default": 30},
                        },
                    ],
                    "responses": {
                        "200": _response("records", {"type": "array", "items": _RECORD}),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/v1/namespaces/{namespace}/activations/{activationId}": {
                "get": {
                    "summary": "One activation's record",
                    "parameters": [
                        _NAMESPACE,
                        {
                            "name": "activationId",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": _response("the record", _RECORD),
                        **_AUTH_ERRORS,
                        "404": _response("no record (yet, or no longer)"),
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "Liveness",
                    "security": [],
                    "responses": {"200": {"description": "up"}},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {"200": {"description": "Prometheus text format"}},
                }
            },
        },
    }
