"""What a controller knows, as Prometheus metrics for ``GET /metrics``.

A platform team watches the same numbers the scheduler decides from — each action's
backlog, arrival rate and containers — next to what it did about them (the timeline's
event counts: containers created, throttling, duplicate results) and how a migration's
drain is going, which invokers report in their heartbeats. Gauges and counters are read
from the controller's own view at scrape time: nothing is stored for them alone. Only
distributions need observing as they happen — the queue wait each result reports
(:class:`ActivationTimes`) and each container's cold start on its invoker
(:class:`InvokerMetrics`) — and those are histograms with fixed buckets.

Names follow Prometheus' conventions: the unit in the name (``_seconds``), ``_total``
on counters, and labels from bounded sets only — the configured actions and invokers,
the timeline's event kinds, the scheduler's rules and the start kinds — never an
activation or container id, so the series grow with the deployment, not its traffic.

:func:`controller_families` reads a live controller into plain families;
:func:`exposition` writes them with ``prometheus-client``, which owns the text format
(escaping, number formatting, the OpenMetrics variant) so this module does not.
:func:`metrics_server` serves an invoker's on a port of its own, since an invoker has
no API.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker_sched.model import Start, now_ms

if TYPE_CHECKING:
    from broker_sched.api_server import ApiServer
    from broker_sched.invoker.invoker import Invoker
    from broker_sched.model import ActivationResult, Heartbeat
    from broker_sched.scheduler.controller import Controller

PREFIX = "broker_sched_"
CONTENT_TYPE = CONTENT_TYPE_LATEST

QUEUE_WAIT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""From a warm container's few milliseconds to a backlog that waits out a timeout."""

COLD_START_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
"""From a prewarmed stem cell's init to an image pulled on a busy host."""

PROCESS = CollectorRegistry(auto_describe=False)
"""What this process counts wherever it happens, exposed beside an invoker's metrics."""

RECORDS_NOT_WRITTEN = Counter(
    "broker_sched_record_write_failures",
    "Activation records (with their reply and ack) the broker refused to write.",
    registry=PROCESS,
)


@dataclass(slots=True)
class Family:
    """One metric name with its samples, each a label set and a value."""

    name: str
    kind: Literal["gauge", "counter"]
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))


def exposition(families: list[Family], registry: CollectorRegistry | None = None) -> bytes:
    """The Prometheus text format of ``families``, after those of ``registry``."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_Snapshot(families))
    if registry is None:
        return generate_latest(scrape)
    return generate_latest(registry) + generate_latest(scrape)


class _Snapshot(Collector):
    """Families read once, at scrape time: nothing is kept between scrapes."""

    def __init__(self, families: list[Family]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            names = sorted({key for labels, _ in family.samples for key in labels})
            kind = GaugeMetricFamily if family.kind == "gauge" else CounterMetricFamily
            metric = kind(PREFIX + family.name, family.help, labels=names)
            for labels, value in family.samples:
                metric.add_metric([labels.get(name, "") for name in names], value)
            yield metric


def controller_families(controller: Controller) -> list[Family]:
    now_s = time.monotonic()
    pending = Family("backlog_pending", "gauge", "Activations queued, not yet taken.")
    in_flight = Family("backlog_in_flight", "gauge", "Activations taken, not yet acked.")
    arrivals = Family("arrival_rate_per_s", "gauge", "Invocations per second, last window.")
    throttled = Family("throttled", "gauge", "1 while new invocations are refused (429).")
    tracked = controller.monitor.stats if controller.monitor is not None else {}
    backlog_age = Family(
        "backlog_age_seconds",
        "gauge",
        "How long the action's queue has had activations pending without emptying (0: none).",
    )
    for name, stats in tracked.items():
        since_s = stats.backlog_since_s
        backlog_age.add(0.0 if since_s is None else max(0.0, now_s - since_s), action=name)
        pending.add(stats.backlog.pending, action=name)
        in_flight.add(stats.backlog.in_flight, action=name)
        arrivals.add(stats.arrivals.rate_per_s(now_s), action=name)
        throttled.add(float(stats.throttled), action=name)

    beats = controller.cluster.live()
    creating = {name: controller.cluster.creating(name) for name in tracked}
    containers = _containers(beats, creating)
    free_slots = Family("invoker_free_slots", "gauge", "Free container slots per live invoker.")
    draining = Family(
        "drain_remaining", "gauge", "Activations left on the old transport (drain mode)."
    )
    for beat in beats:
        free_slots.add(beat.free_slots, invoker=beat.invoker_id)
        for name, left in beat.draining.items():
            draining.add(left, action=name, invoker=beat.invoker_id)
    live = Family("invokers", "gauge", "Invokers heard from within the heartbeat expiry.")
    live.add(len(beats))
    beat_age = Family(
        "invoker_heartbeat_age_seconds",
        "gauge",
        "Seconds since each live invoker sent its last heartbeat (its clock against ours).",
    )
    now = now_ms()
    for beat in beats:
        beat_age.add(max(0.0, (now - beat.sent_ms) / 1000), invoker=beat.invoker_id)
    prewarm = _prewarm_families(beats)
    ledger = controller.sequences.ledger
    warmed = Family(
        "sequence_prewarms", "counter", "Sequence steps' containers asked for ahead, by outcome."
    )
    warmed.add(ledger.asked, outcome="asked")
    warmed.add(ledger.used, outcome="used")
    warmed.add(ledger.released, outcome="released")
    wasted = Family(
        "sequence_prewarm_wasted_seconds",
        "counter",
        "Container-seconds pre-warmed containers waited for their step, or until released.",
    )
    wasted.add(ledger.wasted_s)

    events = Family("events_total", "counter", "What the scheduler did, by timeline event.")
    for kind, count in sorted(controller.timeline.counts.items()):
        events.add(count, kind=kind)
    decisions = Family(
        "decisions_total",
        "counter",
        "Per-action decisions of the backlog monitor's ticks, by the rule that fired.",
    )
    if controller.monitor is not None:
        for rule, count in sorted(controller.monitor.rules_decided.items()):
            decisions.add(count, rule=rule)
    return [
        pending,
        in_flight,
        backlog_age,
        arrivals,
        throttled,
        containers,
        free_slots,
        live,
        beat_age,
        draining,
        *prewarm,
        warmed,
        wasted,
        events,
        decisions,
    ]


def _containers(beats: list[Heartbeat], creating: dict[str, int]) -> Family:
    """Containers per action and state: running and paused from heartbeats, creating
    from the requests still awaiting their reply."""
    containers = Family("containers", "gauge", "Containers per action and state.")
    by_state: dict[tuple[str, str], int] = defaultdict(int)
    for beat in beats:
        for name, count in beat.containers.items():
            paused = beat.paused.get(name, 0)
            by_state[name, "running"] += count - paused
            by_state[name, "paused"] += paused
    for name, count in creating.items():
        by_state[name, "creating"] = count
    for (name, state), count in sorted(by_state.items()):
        containers.add(count, action=name, state=state)
    return containers


class ActivationTimes:
    """How long activations waited in their queue, from each first result a controller
    hears, by how their container started (a cold start's wait includes the start)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue_wait = Histogram(
            "broker_sched_queue_wait_seconds",
            "From publish to a container taking the activation, by the container's start.",
            ["start"],
            buckets=QUEUE_WAIT_BUCKETS_S,
            registry=registry,
        )

    def watch(self, controller: Controller) -> None:
        controller.result_listeners.append(self.observe)

    def observe(self, result: ActivationResult) -> None:
        """Results that never reached a container (timed out queued) have no start."""
        if result.start is not None:
            self.queue_wait.labels(str(result.start)).observe(result.wait_ms / 1000)


class InvokerMetrics:
    """An invoker's own metrics: the cold starts it made, and what its heartbeat says."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.cold_start = Histogram(
            "broker_sched_cold_start_seconds",
            "Time to create a container and run its init, by start (cold, or from a prewarm).",
            ["start"],
            buckets=COLD_START_BUCKETS_S,
            registry=self.registry,
        )
        # Each series from zero, before its first start: a series that first appears
        # with its count already 1 shows no increase, and rate() never sees that start.
        for start in (Start.COLD, Start.PREWARM):
            self.cold_start.labels(str(start))

    def observe_cold_start(self, start: str, create_ms: float, init_ms: float) -> None:
        self.cold_start.labels(start).observe((create_ms + init_ms) / 1000)


def invoker_exposition(invoker: Invoker) -> bytes:
    """An invoker's ``/metrics``: its histograms, this process's counters, and its
    containers, free slots and prewarm pools as its next heartbeat will say them."""
    beat = invoker.heartbeat()
    free_slots = Family("invoker_free_slots", "gauge", "Free container slots of this invoker.")
    free_slots.add(beat.free_slots, invoker=beat.invoker_id)
    families = [_containers([beat], {}), free_slots, *_prewarm_families([beat])]
    live = CollectorRegistry(auto_describe=False)
    live.register(_Merged(invoker.metrics.registry, PROCESS))
    return exposition(families, live)


class _Merged(Collector):
    """Several registries' metrics as one collector, exposed in one pass."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self.registries = registries

    def collect(self) -> Iterator[Metric]:
        for registry in self.registries:
            yield from registry.collect()


async def metrics_server(render: Callable[[], bytes], host: str, port: int) -> ApiServer:
    """Serve ``GET /metrics`` with ``render()`` on ``host:port`` (0: a free port)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from broker_sched.api_server import start
    from broker_sched.config import ApiSettings

    async def metrics(request: Request) -> Response:
        return Response(render(), media_type=CONTENT_TYPE)

    app = Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])
    return await start(app, host, port, ApiSettings())


def _prewarm_families(beats: list[Heartbeat]) -> list[Family]:
    """Stem cells ready, and the container requests each pool served or missed."""
    ready = Family("prewarm_ready", "gauge", "Stem cells ready per prewarm pool and invoker.")
    hits = Family("prewarm_hits", "counter", "Container requests a prewarm pool served.")
    misses = Family(
        "prewarm_misses",
        "counter",
        "Container requests of a pool's kind and size it could not serve.",
    )
    for beat in beats:
        for pool, count in sorted(beat.prewarm.items()):
            ready.add(count, pool=pool, invoker=beat.invoker_id)
            hits.add(beat.prewarm_hits.get(pool, 0), pool=pool, invoker=beat.invoker_id)
            misses.add(beat.prewarm_misses.get(pool, 0), pool=pool, invoker=beat.invoker_id)
    return [ready, hits, misses]
