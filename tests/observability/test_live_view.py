"""The live view in a real browser: Debian's Chromium, headless, loads the page the
controller serves while the stack is under load, takes a screenshot, and the numbers the
page shows match what ``/metrics`` says around the same moment."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
from html.parser import HTMLParser
from pathlib import Path

import pytest
from observed import AUTH, INVOKERS, Observed, basic, get, tool
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE_TIME_MS = 4000
"""Virtual time the page runs before it is read: a few of its one-second polls."""

SCREENSHOT_ENV = "LIVE_VIEW_SCREENSHOT"
"""Where to copy the screenshot (docs/img/live-view.png when the docs are refreshed)."""

Readings = dict[tuple[str, str], float]


class PageNumbers(HTMLParser):
    """The numbers the page shows: ``data-metric`` cells by metric and action (or
    invoker), and ``data-decisions`` counts by rule."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: dict[tuple[str, str], str] = {}
        self.loaded = False
        self._open: tuple[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "body" and found.get("data-loaded") == "true":
            self.loaded = True
        if found.get("data-metric") is not None:
            self._open = (str(found["data-metric"]), str(found.get("data-action")))
        elif found.get("data-decisions") is not None:
            self._open = ("decisions", str(found["data-decisions"]))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.numbers[self._open] = data.strip()
            self._open = None


def chromium(url: str, profile: Path, *mode: str) -> str:
    done = subprocess.run(
        [
            tool("chromium"),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={PAGE_TIME_MS}",
            "--window-size=1400,1000",
            *mode,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def readings(observed: Observed) -> Readings:
    """/metrics as (page metric, action or invoker or rule) -> value."""
    found: Readings = {}
    for family in text_string_to_metric_families(observed.metrics()):
        for sample in family.samples:
            labels = sample.labels
            name = sample.name.removeprefix("broker_sched_")
            if name == "containers":
                found[f"containers_{labels['state']}", labels["action"]] = sample.value
            elif name == "invoker_free_slots":
                found[name, labels["invoker"]] = sample.value
            elif name == "decisions_total":
                found["decisions", labels["rule"]] = sample.value
            elif "action" in labels:
                found[name, labels["action"]] = sample.value
    return found


def within(page: float, before: float, after: float, slack: float = 0.0) -> bool:
    return min(before, after) - slack <= page <= max(before, after) + slack


def test_the_live_view_needs_a_key_and_loads_nothing_from_elsewhere(observed: Observed) -> None:
    for path in ("/live/", "/live/state"):
        for headers in ({}, basic("5e3b7a10-8c2d-4f6e-9a1b-2c3d4e5f6a7b:wrong")):
            with pytest.raises(urllib.error.HTTPError) as refused:
                get(observed.api + path, headers)
            with refused.value:
                assert refused.value.code == 401
                assert refused.value.headers["WWW-Authenticate"].startswith("Basic")
    page = get(observed.api + "/live/", basic()).decode()
    assert "<script" in page
    assert "http://" not in page
    assert "https://" not in page


def test_chromium_shows_what_metrics_says_under_load(observed: Observed, tmp_path: Path) -> None:
    uuid, key = AUTH.split(":")
    host = observed.api.removeprefix("http://")
    url = f"http://{uuid}:{key}@{host}/live/"

    before = readings(observed)
    dom = chromium(url, tmp_path / "profile-dom", "--dump-dom")
    after = readings(observed)

    page = PageNumbers()
    page.feed(dom)
    assert page.loaded, dom[-2000:]
    shown = page.numbers
    for action in ("guest/steady", "guest/bursty"):
        # Containers change only when the scheduler acts: exactly as around the page.
        for state in ("running", "paused", "creating"):
            metric = f"containers_{state}"
            assert within(
                float(shown[metric, action]),
                before.get((metric, action), 0.0),
                after.get((metric, action), 0.0),
            ), (metric, action, shown[metric, action], before, after)
        # The backlog moves with every call: within what one second of load adds.
        for metric, slack in (("backlog_pending", 10.0), ("backlog_in_flight", 4.0)):
            assert within(
                float(shown[metric, action]), before[metric, action], after[metric, action], slack
            ), (metric, action, shown[metric, action])
        assert within(
            float(shown["arrival_rate_per_s", action]),
            before["arrival_rate_per_s", action],
            after["arrival_rate_per_s", action],
            slack=5.0,
        )
        throttled = shown["throttled", action] == "yes"
        assert throttled in (before["throttled", action] == 1, after["throttled", action] == 1)
    invokers = {name for metric, name in shown if metric == "invoker_free_slots"}
    assert len(invokers) == INVOKERS
    for invoker in invokers:
        assert within(
            float(shown["invoker_free_slots", invoker]),
            before["invoker_free_slots", invoker],
            after["invoker_free_slots", invoker],
        )
    rules = {rule for metric, rule in shown if metric == "decisions"}
    assert rules
    for rule in rules:
        count = float(shown["decisions", rule].rsplit(":", 1)[1])
        assert before.get(("decisions", rule), 0.0) <= count <= after["decisions", rule]

    screenshot = tmp_path / "live-view.png"
    chromium(url, tmp_path / "profile-shot", f"--screenshot={screenshot}")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(screenshot, os.environ[SCREENSHOT_ENV])
