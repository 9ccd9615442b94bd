"""OpenWhisk's action document read into an action, and answered back: pure logic."""

from __future__ import annotations

import base64
import io
import zipfile
from typing import Any

import pytest

from broker_sched.action_store import action_document, action_from_document
from broker_sched.errors import InvalidAction
from broker_sched.model import Action


def zipped(names: list[str]) -> str:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as files:
        for name in names:
            files.writestr(name, "")
    return base64.b64encode(archive.getvalue()).decode()


def test_a_python_document_becomes_an_action_and_back() -> None:
    document = {
        "exec": {"kind": "python:3.11", "code": "def go(a): return a", "main": "go"},
        "parameters": [{"key": "x", "value": 1}],
        "limits": {"timeout": 1500, "memory": 512, "concurrency": 4, "logs": 1},
        "annotations": [{"key": "ignored", "value": True}],
    }
    action = action_from_document("team", "act", document)
    assert (action.namespace, action.name, action.main, action.code) == (
        "team",
        "act",
        "go",
        "def go(a): return a",
    )
    assert (action.timeout_s, action.memory_mb, action.concurrency) == (1.5, 512, 4)
    assert action.parameters == {"x": 1}
    answered = action_document(action)
    assert answered["exec"] == {
        "kind": "python:3",
        "code": action.code,
        "main": "go",
        "binary": False,
    }
    assert answered["parameters"] == [{"key": "x", "value": 1}]
    assert answered["limits"]["timeout"] == 1500


def test_a_handler_reference_and_a_sequence() -> None:
    handler = action_from_document("guest", "h", {"exec": {"kind": "python:3", "handler": "m:f"}})
    assert (handler.handler, handler.code) == ("m:f", "")
    sequence = action_from_document(
        "guest", "s", {"exec": {"kind": "sequence", "components": ["/guest/a", "other/b", "c"]}}
    )
    assert sequence.sequence == ("guest/a", "other/b", "guest/c")
    assert action_document(sequence)["exec"]["components"] == ["/guest/a", "/other/b", "/guest/c"]


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ([], "must be a JSON object"),
        ({"exec": {"kind": "python:3", "code": "x", "handler": "m:f"}}, "one of code"),
        ({"exec": {"kind": "python:3", "handler": "nocolon"}}, "module:function"),
        ({"exec": {"kind": "python:3", "code": "", "main": "main"}}, "non-empty"),
        ({"exec": {"kind": "python:3", "code": "x = 1", "main": "not-a-name"}}, "exec.main"),
        ({"exec": {"kind": "python:3", "code": "x", "binary": "yes"}}, "exec.binary"),
        ({"exec": {"kind": "python:3", "code": zipped(["a.py"]), "binary": True}}, "__main__.py"),
        (
            {
                "exec": {
                    "kind": "python:3",
                    "code": zipped(["__main__.py", "../x.py"]),
                    "binary": True,
                }
            },
            "outside it",
        ),
        ({"exec": {"kind": "sequence", "components": []}}, "non-empty list"),
        ({"exec": {"kind": "sequence", "components": ["/a/b/c"]}}, "packages"),
        (
            {"exec": {"kind": "python:3", "code": "x = 1"}, "parameters": [{"value": 1}]},
            "{key, value}",
        ),
        (
            {"exec": {"kind": "python:3", "code": "x = 1"}, "limits": {"timeout": True}},
            "limits.timeout",
        ),
        (
            {"exec": {"kind": "python:3", "code": "x = 1"}, "limits": {"concurrency": 0}},
            "from 1 to 500",
        ),
    ],
)
def test_a_bad_document_says_what_is_wrong(document: Any, error: str) -> None:
    with pytest.raises(InvalidAction, match=error):
        action_from_document("guest", "bad", document)


def test_default_parameters_go_under_an_object_payload_only() -> None:
    action = Action(name="p", parameters={"a": 1, "b": 2})
    assert action.with_parameters({"b": 3}) == {"a": 1, "b": 3}
    assert action.with_parameters(None) == {"a": 1, "b": 2}
    assert action.with_parameters([1]) == [1]
    assert Action(name="q").with_parameters("x") == "x"
