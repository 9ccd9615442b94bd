"""The live view: a page the controller serves, showing why the scheduler does what it does.

Per action the backlog, arrival rate, containers by state and the rule and reason of the
last decision; per invoker its containers and free slots; the latest timeline events that
carry a reason (containers asked for or told to leave, throttling, evictions). The page
(``static/live.html``, plain HTML and script, nothing fetched from elsewhere) polls
``/live/state`` once a second; that state is built from the same families as
``/metrics``, so the page and a Prometheus scrape never disagree on what a number means.

Both routes need a valid API key of any namespace — what they show is the operator's view
of the whole controller, the numbers ``/metrics`` already serves without one, plus the
decisions' reasons, which name actions.
"""

from __future__ import annotations

import time
from collections import defaultdict
from http import HTTPStatus
from importlib.resources import files
from itertools import islice
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from broker_sched.metrics import Family, controller_families

if TYPE_CHECKING:
    from broker_sched.api_keys import Keyring
    from broker_sched.scheduler.controller import Controller

RECENT_EVENTS = 30
"""How many of the latest reasoned timeline events the page lists."""

PER_ACTION = ("backlog_pending", "backlog_in_flight", "backlog_age_seconds", "throttled")
"""Families with one sample per action that the page shows as they are."""


def live_routes(controller: Controller, keyring: Keyring | None) -> list[Route]:
    """``GET /live/`` (the page) and ``GET /live/state`` (its data), behind ``keyring``."""
    page = files("broker_sched").joinpath("static/live.html").read_text(encoding="utf-8")

    def authorize(request: Request) -> None:
        if keyring is None or keyring.namespace_for(request.headers.get("authorization")):
            return
        raise HTTPException(
            HTTPStatus.UNAUTHORIZED,
            "an API key is required (HTTP basic auth, uuid:key)",
            {"WWW-Authenticate": 'Basic realm="broker-sched"'},
        )

    async def live_page(request: Request) -> Response:
        authorize(request)
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def live_state(request: Request) -> Response:
        authorize(request)
        return JSONResponse(state(controller), headers={"Cache-Control": "no-store"})

    return [
        Route("/live/", live_page, methods=["GET"]),
        Route("/live/state", live_state, methods=["GET"]),
    ]


def state(controller: Controller) -> dict[str, Any]:
    """What the page shows, as plain JSON."""
    families = {family.name: family for family in controller_families(controller)}
    actions: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"containers": {"running": 0, "paused": 0, "creating": 0}}
    )
    for name in PER_ACTION:
        for labels, value in families[name].samples:
            actions[labels["action"]][name] = value
    for labels, value in families["arrival_rate_per_s"].samples:
        actions[labels["action"]]["arrival_rate_per_s"] = round(value, 2)
    for labels, value in families["containers"].samples:
        actions[labels["action"]]["containers"][labels["state"]] = value
    decision = controller.monitor.last_decision if controller.monitor is not None else None
    for decided in decision.actions if decision is not None else ():
        actions[decided.action]["rule"] = decided.rule
        actions[decided.action]["reason"] = decided.reason
    return {
        "controller": controller.id,
        "invokers": _invokers(controller, families["invoker_free_slots"]),
        "actions": [{"action": name, **actions[name]} for name in sorted(actions)],
        "events": _reasoned_events(controller),
        "decisions_total": {
            labels["rule"]: value for labels, value in families["decisions_total"].samples
        },
    }


def _invokers(controller: Controller, free_slots: Family) -> list[dict[str, Any]]:
    free = {labels["invoker"]: value for labels, value in free_slots.samples}
    return [
        {
            "invoker": beat.invoker_id,
            "free_slots": free.get(beat.invoker_id, 0),
            "containers": {
                name: {"running": count - paused, "paused": paused}
                for name, count in sorted(beat.containers.items())
                for paused in [beat.paused.get(name, 0)]
            },
        }
        for beat in sorted(controller.cluster.live(), key=lambda beat: beat.invoker_id)
    ]


def _reasoned_events(controller: Controller) -> list[dict[str, Any]]:
    """The latest timeline events that say why, newest first."""
    events = controller.timeline.events
    reasoned = (event for event in reversed(events) if "reason" in event.detail)
    now_s = time.monotonic()
    return [
        {
            "ago_s": round(now_s - event.at_s, 1),
            "kind": event.kind,
            "action": event.action,
            "invoker": str(event.detail.get("invoker", "")),
            "reason": str(event.detail["reason"]),
        }
        for event in islice(reasoned, RECENT_EVENTS)
    ]
