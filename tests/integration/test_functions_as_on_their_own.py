"""Real functions return through broker-sched what they return when called directly.

The functions (``tests/functions/seeded_graph.py``) seed Python's ``random`` and build
graphs with igraph, whose C core keeps its random number generator per thread, as a
public serverless benchmark suite's graph functions do. Run anywhere but the thread
that seeded it, the graph differs; the process runtime runs a handler of concurrency 1
in its container's main thread, so the results match on every transport, from
concurrent callers.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker_sched.config import Settings
from broker_sched.errors import NoCapacity
from broker_sched.model import Action, Status
from broker_sched.stack import Stack

pytestmark = pytest.mark.slow

FUNCTIONS = str(Path(__file__).parent.parent / "functions")
CALLERS = 8
CALLS_PER_FUNCTION = 4
NO_CAPACITY_RETRIES = 20
"""A 429 "no capacity" is an answer to retry, as a client does, while containers that
import igraph start on a loaded machine; the results, not the admission, are tested."""
RESULT_WAIT_S = 120.0
"""Generous: cold starts import igraph, on a loaded machine."""


async def test_seeded_graph_functions_match_their_direct_calls(
    transport_name: str,
    broker_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([FUNCTIONS, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(FUNCTIONS)
    import seeded_graph

    functions: dict[str, Callable[[dict[str, Any]], Any]] = {
        "bfs": seeded_graph.bfs,
        "pagerank": seeded_graph.pagerank,
        "mst": seeded_graph.mst,
    }
    actions = [
        Action(name=name, handler=f"seeded_graph:{name}", max_containers=3, timeout_s=60)
        for name in functions
    ]
    uid = secrets.token_hex(4)
    settings = broker_settings(
        transport_name,
        queue_template=f"g{uid}-{{namespace}}-{{action}}",
        invoker={"keep_alive_s": 30.0, "pause_grace_s": 10.0},
    )
    calls = [
        (name, {"seed": seed, "size": 150})
        for name in functions
        for seed in range(CALLS_PER_FUNCTION)
    ]
    expected = [functions[name](payload) for name, payload in calls]
    slots = asyncio.Semaphore(CALLERS)
    async with Stack(settings, actions={a.fqn: a for a in actions}) as stack:
        controller = stack.controller
        assert controller is not None

        async def call(name: str, payload: dict[str, Any]) -> Any:
            async with slots:
                for _ in range(NO_CAPACITY_RETRIES):
                    try:
                        result = await controller.invoke(name, payload, timeout_s=RESULT_WAIT_S)
                        break
                    except NoCapacity:
                        await asyncio.sleep(0.5)
                else:
                    raise AssertionError(f"{name}: no capacity after {NO_CAPACITY_RETRIES} tries")
            assert result.status is Status.SUCCESS, result.error
            return result.result

        async with asyncio.timeout(RESULT_WAIT_S * 2):
            got = await asyncio.gather(*(call(name, payload) for name, payload in calls))
    differing = [call for call, a, b in zip(calls, got, expected, strict=True) if a != b]
    assert not differing, f"{len(differing)} of {len(calls)} differ, e.g. {differing[:3]}"
    assert sys.modules["seeded_graph"] is seeded_graph
