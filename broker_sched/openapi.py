"""The API's OpenAPI 3.1 document, served at ``GET /api/v1/openapi.json``.

Written as data beside the routes rather than generated from them: the routes read raw
bodies (a payload is any JSON, its size checked while it streams), so there are no
request models to generate from, and the answers are OpenWhisk's shapes
(:mod:`broker_sched.records`), described here as OpenWhisk's API document describes them.
"""

from __future__ import annotations

from typing import Any

from broker_sched import __version__
from broker_sched.records import OPENWHISK_STATUS

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
_ACTIVATION = {"$ref": "#/components/schemas/Activation"}
_ACTIVATION_ID = {"$ref": "#/components/schemas/ActivationId"}
_ID_HEADER = {
    "x-openwhisk-activation-id": {
        "description": "the activation's id, on every answer that has an activation",
        "schema": {"type": "string"},
    }
}
_ACTIVATION_PATH = "/api/v1/namespaces/{namespace}/activations/{activationId}"
_ACTIVATION_ID_PARAMETER = {
    "name": "activationId",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}


_ACTION = {"$ref": "#/components/schemas/Action"}
_ACTION_NAME = {"name": "action", "in": "path", "required": True, "schema": {"type": "string"}}
_EXEC = {
    "type": "object",
    "description": "python: {kind: python:3, code, main, binary} (binary: a base64 zip with "
    "__main__.py) or {kind: python:3, handler: module:function}; "
    "sequence: {kind: sequence, components: [/namespace/name, ...]}",
    "properties": {
        "kind": {"type": "string"},
        "code": {"type": "string"},
        "main": {"type": "string", "default": "main"},
        "binary": {"type": "boolean", "default": False},
        "handler": {"type": "string"},
        "components": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["kind"],
}
_PARAMETERS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"key": {"type": "string"}, "value": {}},
        "required": ["key", "value"],
    },
    "description": "default parameters, merged under an object payload",
}
_LIMITS = {
    "type": "object",
    "properties": {
        "timeout": {"type": "integer", "minimum": 100, "maximum": 300000, "description": "ms"},
        "memory": {"type": "integer", "minimum": 128, "maximum": 8192, "description": "MB"},
        "concurrency": {"type": "integer", "minimum": 1, "maximum": 500},
        "logs": {"type": "integer", "minimum": 0, "maximum": 10, "description": "MB"},
    },
    "additionalProperties": False,
}
_ACTION_PUT = {
    "type": "object",
    "properties": {"exec": _EXEC, "parameters": _PARAMETERS, "limits": _LIMITS},
    "required": ["exec"],
}


def _with_id(response: dict[str, Any]) -> dict[str, Any]:
    return {**response, "headers": _ID_HEADER}


def _schemas() -> dict[str, Any]:
    """OpenWhisk's activation, its response and its summary, as its controller answers."""
    statuses = sorted({text for _, text in OPENWHISK_STATUS.values()})
    response = {
        "type": "object",
        "properties": {
            "result": {"description": "the action's result, or {error} when it failed"},
            "status": {"type": "string", "enum": statuses},
            "success": {"type": "boolean"},
        },
        "required": ["result", "status", "success"],
    }
    common = {
        "activationId": {"type": "string"},
        "namespace": {"type": "string"},
        "name": {"type": "string"},
        "subject": {"type": "string"},
        "version": {"type": "string"},
        "publish": {"type": "boolean"},
        "start": {"type": "integer", "description": "ms since the epoch"},
        "end": {"type": "integer", "description": "ms since the epoch"},
        "duration": {"type": "integer", "description": "ms"},
        "annotations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"key": {"type": "string"}, "value": {}},
                "required": ["key", "value"],
            },
            "description": "path, kind, limits, waitTime, initTime (cold starts), timeout",
        },
    }
    logs = {
        "type": "array",
        "items": {"type": "string"},
        "description": "`<ISO time> stdout|stderr: <text>` lines (a sequence: its steps' ids)",
    }
    return {
        "ActivationResponse": response,
        "Activation": {
            "type": "object",
            "properties": {
                **common,
                "response": {"$ref": "#/components/schemas/ActivationResponse"},
                "logs": logs,
            },
            "required": [*common, "response", "logs"],
        },
        "ActivationSummary": {
            "type": "object",
            "properties": {
                **common,
                "statusCode": {"type": "integer", "description": "0 success ... 3 system error"},
            },
            "required": [*common, "statusCode"],
        },
        "ActivationId": {
            "type": "object",
            "properties": {"activationId": {"type": "string"}},
            "required": ["activationId"],
        },
        "Action": {
            "type": "object",
            "properties": {
                "namespace": {"type": "string"},
                "name": {"type": "string"},
                "version": {"type": "string"},
                "publish": {"type": "boolean"},
                "exec": _EXEC,
                "parameters": _PARAMETERS,
                "limits": _LIMITS,
                "annotations": common["annotations"],
                "revision": {"type": "string", "description": "the stored version's id"},
            },
            "required": ["namespace", "name", "exec", "parameters", "limits"],
        },
        "ActivationLogs": {
            "type": "object",
            "properties": {"logs": logs},
            "required": ["logs"],
        },
    }


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "broker-sched controller API", "version": __version__},
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {
                **_schemas(),
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
            },
        },
        "security": [{"basic": []}],
        "paths": {
            "/api/v1/namespaces/{namespace}/actions": {
                "get": {
                    "summary": "The namespace's actions, without their code",
                    "parameters": [_NAMESPACE],
                    "responses": {
                        "200": _response("actions", {"type": "array", "items": _ACTION}),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/v1/namespaces/{namespace}/actions/{action}": {
                "put": {
                    "summary": "Create or update an action (OpenWhisk's action document)",
                    "parameters": [
                        _NAMESPACE,
                        _ACTION_NAME,
                        {
                            "name": "overwrite",
                            "in": "query",
                            "description": "update an existing action",
                            "schema": {"type": "boolean", "default": False},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ACTION_PUT}},
                    },
                    "responses": {
                        "200": _response("the stored action", _ACTION),
                        "400": _response(
                            "the document is wrong, or its code does not compile or load"
                        ),
                        **_AUTH_ERRORS,
                        "409": _response(
                            "the action exists (no overwrite), or is defined in the settings"
                        ),
                        "413": _response("the code is larger than the limit"),
                        "503": _response("the action store is unavailable"),
                    },
                },
                "get": {
                    "summary": "One action, with its code",
                    "parameters": [_NAMESPACE, _ACTION_NAME],
                    "responses": {
                        "200": _response("the action", _ACTION),
                        **_AUTH_ERRORS,
                        "404": _response("no such action"),
                    },
                },
                "delete": {
                    "summary": "Delete an action made through the API",
                    "parameters": [_NAMESPACE, _ACTION_NAME],
                    "responses": {
                        "200": _response("the deleted action", _ACTION),
                        **_AUTH_ERRORS,
                        "404": _response("no such action"),
                        "409": _response("the action is defined in the settings"),
                        "503": _response("the action store is unavailable"),
                    },
                },
                "post": {
                    "summary": "Invoke an action",
                    "parameters": [
                        _NAMESPACE,
                        _ACTION_NAME,
                        {
                            "name": "blocking",
                            "in": "query",
                            "description": "wait for the result, at most invocation_timeout_s",
                            "schema": {"type": "boolean", "default": False},
                        },
                        {
                            "name": "result",
                            "in": "query",
                            "description": "blocking: answer with the result only",
                            "schema": {"type": "boolean", "default": False},
                        },
                    ],
                    "requestBody": {
                        "description": "the payload: any JSON value",
                        "content": {"application/json": {"schema": {}}},
                    },
                    "responses": {
                        "200": _with_id(
                            _response(
                                "blocking: the action succeeded; its activation, or with "
                                "result=true its result (an array result is answered as itself)",
                                {},
                            )
                        ),
                        "202": _with_id(
                            _response(
                                "non-blocking, or blocking past the wait: accepted, its id",
                                _ACTIVATION_ID,
                            )
                        ),
                        "400": _response("the body is not JSON, or not JSON a payload can carry"),
                        **_AUTH_ERRORS,
                        "404": _response("no such action"),
                        "413": _response("the payload is larger than max_payload_bytes"),
                        "429": _response(
                            "a namespace limit or the scheduler's throttle; see Retry-After"
                        ),
                        "500": _with_id(
                            _response("blocking: a system error ran the activation", {})
                        ),
                        "502": _with_id(
                            _response(
                                "blocking: the action failed (its own error, a crash, its time "
                                "limit); its activation, or with result=true its result",
                                {},
                            )
                        ),
                        "503": _response("broker unavailable or no invoker"),
                        "504": _response("blocking: a sequence with no result in time"),
                    },
                },
            },
            "/api/v1/namespaces/{namespace}/activations": {
                "get": {
                    "summary": "The namespace's recent activations, newest first",
                    "parameters": [
                        _NAMESPACE,
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "default": 30, "maximum": 200},
                        },
                        {
                            "name": "docs",
                            "in": "query",
                            "description": "whole activations instead of summaries",
                            "schema": {"type": "boolean", "default": False},
                        },
                    ],
                    "responses": {
                        "200": _response(
                            "summaries, or whole activations with docs=true",
                            {
                                "type": "array",
                                "items": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/ActivationSummary"},
                                        _ACTIVATION,
                                    ]
                                },
                            },
                        ),
                        **_AUTH_ERRORS,
                    },
                }
            },
            _ACTIVATION_PATH: {
                "get": {
                    "summary": "One activation",
                    "parameters": [_NAMESPACE, _ACTIVATION_ID_PARAMETER],
                    "responses": {
                        "200": _response("the activation", _ACTIVATION),
                        **_AUTH_ERRORS,
                        "404": _response("no record (yet, or no longer)"),
                    },
                }
            },
            _ACTIVATION_PATH + "/result": {
                "get": {
                    "summary": "One activation's response: result, status, success",
                    "parameters": [_NAMESPACE, _ACTIVATION_ID_PARAMETER],
                    "responses": {
                        "200": _response(
                            "the response", {"$ref": "#/components/schemas/ActivationResponse"}
                        ),
                        **_AUTH_ERRORS,
                        "404": _response("no record (yet, or no longer)"),
                    },
                }
            },
            _ACTIVATION_PATH + "/logs": {
                "get": {
                    "summary": "What one activation's run wrote to stdout and stderr",
                    "parameters": [_NAMESPACE, _ACTIVATION_ID_PARAMETER],
                    "responses": {
                        "200": _response(
                            "the logs", {"$ref": "#/components/schemas/ActivationLogs"}
                        ),
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
