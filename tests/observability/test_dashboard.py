"""Every query of the Grafana dashboard (compose/grafana/broker-sched.json) returns data
from the Prometheus that scrapes the stack under load, run as Grafana runs a panel: a
range query over the last minutes, with the dashboard's variables filled in."""

from __future__ import annotations

import json
import math
import time
import urllib.parse
from typing import Any

import pytest
from observed import DATA_TIMEOUT_S, REPO, Observed, await_condition, get

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DASHBOARD = REPO / "compose" / "grafana" / "broker-sched.json"
VARIABLES = {"$__rate_interval": "1h", "$action": ".*"}
"""What Grafana substitutes for "All" actions, and a rate window that reaches back to the
start of the load: cold starts come in its first seconds, and on a slow run this test
comes minutes later, when a one-minute window holds none and the quantile is NaN."""


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def targets() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def range_points(observed: Observed, expr: str) -> list[float]:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    end_s = time.time()
    query = {"query": expr, "start": end_s - 300, "end": end_s, "step": "5"}
    url = f"{observed.prometheus}/api/v1/query_range?" + urllib.parse.urlencode(query)
    answer = json.loads(get(url))
    assert answer["status"] == "success", answer
    return [float(value) for series in answer["data"]["result"] for _, value in series["values"]]


def test_every_panel_reads_the_one_prometheus_datasource_variable() -> None:
    board = dashboard()
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert len(panels) >= 12
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
    variables = {variable["name"] for variable in board["templating"]["list"]}
    assert variables == {"datasource", "action"}


@pytest.mark.parametrize(("title", "expr"), targets(), ids=[title for title, _ in targets()])
def test_every_panel_query_returns_data(observed: Observed, title: str, expr: str) -> None:
    points: list[float] = []

    def has_data() -> bool:
        nonlocal points
        points = range_points(observed, expr)
        return any(math.isfinite(point) for point in points)

    try:
        await_condition(has_data, DATA_TIMEOUT_S, title)
    except AssertionError:
        raise AssertionError(f"panel {title!r}: {expr!r} returned no data: {points[:10]}") from None


def test_the_action_variable_lists_the_actions(observed: Observed) -> None:
    match = urllib.parse.urlencode({"match[]": "broker_sched_backlog_pending"})
    answer = json.loads(get(f"{observed.prometheus}/api/v1/label/action/values?{match}"))
    assert {"guest/steady", "guest/bursty"} <= set(answer["data"])
