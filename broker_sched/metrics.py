"""What a controller knows, as Prometheus metrics for ``GET /metrics``.

A platform team watches the same numbers the scheduler decides from — each action's
backlog, arrival rate and containers — next to what it did about them (the timeline's
event counts: containers created, throttling, duplicate results) and how a migration's
drain is going, which invokers report in their heartbeats. Everything is read from the
controller's own view at scrape time: nothing is stored for metrics alone.

:func:`controller_families` reads a live controller into plain families;
:func:`exposition` writes them with ``prometheus-client``, which owns the text format
(escaping, number formatting, the OpenMetrics variant) so this module does not.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from broker_sched.model import Heartbeat
    from broker_sched.scheduler.controller import Controller

PREFIX = "broker_sched_"
CONTENT_TYPE = CONTENT_TYPE_LATEST


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
    for name, stats in tracked.items():
        pending.add(stats.backlog.pending, action=name)
        in_flight.add(stats.backlog.in_flight, action=name)
        arrivals.add(stats.arrivals.rate_per_s(now_s), action=name)
        throttled.add(float(stats.throttled), action=name)

    beats = controller.cluster.live()
    containers = Family("containers", "gauge", "Containers per action and state.")
    by_state: dict[tuple[str, str], int] = defaultdict(int)
    for beat in beats:
        for name, count in beat.containers.items():
            paused = beat.paused.get(name, 0)
            by_state[name, "running"] += count - paused
            by_state[name, "paused"] += paused
    for name in tracked:
        by_state[name, "creating"] = controller.cluster.creating(name)
    for (name, state), count in sorted(by_state.items()):
        containers.add(count, action=name, state=state)
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
    return [
        pending,
        in_flight,
        arrivals,
        throttled,
        containers,
        free_slots,
        live,
        draining,
        *prewarm,
        warmed,
        wasted,
        events,
    ]


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
