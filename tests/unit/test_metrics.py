"""The Prometheus text format, from plain metric families."""

from __future__ import annotations

import re

from metered_controller import controller_with
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from broker_sched.metrics import (
    PROCESS,
    RECORDS_NOT_WRITTEN,
    ActivationTimes,
    Family,
    InvokerMetrics,
    controller_families,
    exposition,
)
from broker_sched.model import ActivationResult, Start, Status


def lines(text: bytes) -> list[str]:
    return text.decode().splitlines()


def test_each_family_has_help_type_and_one_line_per_sample() -> None:
    pending = Family("backlog_pending", "gauge", "Activations queued.")
    pending.add(3, action="guest/a")
    pending.add(0, action="guest/b")
    events = Family("events_total", "counter", "Timeline events.")
    events.add(12, kind="container_created")

    assert lines(exposition([pending, events])) == [
        "# HELP broker_sched_backlog_pending Activations queued.",
        "# TYPE broker_sched_backlog_pending gauge",
        'broker_sched_backlog_pending{action="guest/a"} 3.0',
        'broker_sched_backlog_pending{action="guest/b"} 0.0',
        "# HELP broker_sched_events_total Timeline events.",
        "# TYPE broker_sched_events_total counter",
        'broker_sched_events_total{kind="container_created"} 12.0',
    ]


def test_values_keep_fractions_and_unlabelled_samples_have_no_braces() -> None:
    rate = Family("arrival_rate_per_s", "gauge", "Per second.")
    rate.add(2.5)

    assert lines(exposition([rate]))[2:] == ["broker_sched_arrival_rate_per_s 2.5"]


def test_label_values_are_escaped() -> None:
    family = Family("throttled", "gauge", "Refusing.")
    family.add(1, action='odd"name\\with\nnewline')

    assert lines(exposition([family]))[2] == (
        'broker_sched_throttled{action="odd\\"name\\\\with\\nnewline"} 1.0'
    )


def test_a_family_without_samples_still_declares_itself() -> None:
    assert exposition([Family("invokers", "gauge", "Live invokers.")]) == (
        b"# HELP broker_sched_invokers Live invokers.\n# TYPE broker_sched_invokers gauge\n"
    )


def test_a_registry_of_live_metrics_comes_first() -> None:
    registry = CollectorRegistry()
    Counter("broker_sched_api_requests", "Requests.", registry=registry).inc()

    text = lines(exposition([Family("invokers", "gauge", "Live.")], registry))
    assert text.index("broker_sched_api_requests_total 1.0") < text.index(
        "# TYPE broker_sched_invokers gauge"
    )


def series(text: bytes) -> dict[str, int]:
    """Samples per metric family in an exposition."""
    return {
        family.name: len(family.samples) for family in text_string_to_metric_families(text.decode())
    }


def test_series_grow_with_actions_and_invokers_only_where_labelled_by_them() -> None:
    few = series(exposition(controller_families(controller_with(10))))
    many = series(exposition(controller_families(controller_with(1000))))

    per_action = {
        "broker_sched_backlog_pending": 1,
        "broker_sched_backlog_in_flight": 1,
        "broker_sched_backlog_age_seconds": 1,
        "broker_sched_arrival_rate_per_s": 1,
        "broker_sched_throttled": 1,
        "broker_sched_containers": 3,
    }
    for name, per in per_action.items():
        assert (few[name], many[name]) == (10 * per, 1000 * per), name
    for name in few.keys() - per_action.keys():
        assert few[name] == many[name], f"{name} grows with the number of actions"
    assert many["broker_sched_decisions"] == 3
    assert sum(many.values()) < 1000 * sum(per_action.values()) + 100


def test_names_carry_units_and_counters_end_in_total() -> None:
    registry = CollectorRegistry()
    ActivationTimes(registry)
    text = exposition(controller_families(controller_with(2)), registry)
    for family in text_string_to_metric_families(text.decode()):
        assert family.name.startswith("broker_sched_")
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if re.search(r"\b(seconds|time to)\b", family.documentation, re.IGNORECASE):
            assert family.name.endswith("_seconds"), family.name


def test_queue_wait_is_observed_per_start_kind_only() -> None:
    registry = CollectorRegistry()
    times = ActivationTimes(registry)
    for n in range(1000):
        times.observe(
            ActivationResult(
                activation_id=f"a-{n}",
                namespace="team",
                action=f"action-{n}",
                status=Status.SUCCESS,
                start=Start.WARM if n % 2 else Start.COLD,
                wait_ms=n,
            )
        )
    times.observe(
        ActivationResult(
            activation_id="never-ran", namespace="team", action="x", status=Status.TIMEOUT
        )
    )
    (family,) = registry.collect()
    assert {sample.labels["start"] for sample in family.samples} == {"warm", "cold"}
    count = registry.get_sample_value
    assert count("broker_sched_queue_wait_seconds_count", {"start": "warm"}) == 500
    assert count("broker_sched_queue_wait_seconds_count", {"start": "cold"}) == 500
    assert count("broker_sched_queue_wait_seconds_bucket", {"start": "cold", "le": "0.1"}) == 51


def test_an_invokers_cold_starts_and_record_failures_are_exposed() -> None:
    metrics = InvokerMetrics()
    metrics.observe_cold_start("cold", create_ms=300.0, init_ms=150.0)
    metrics.observe_cold_start("prewarm", create_ms=0.0, init_ms=20.0)
    count = metrics.registry.get_sample_value
    assert count("broker_sched_cold_start_seconds_sum", {"start": "cold"}) == 0.45
    assert count("broker_sched_cold_start_seconds_bucket", {"start": "prewarm", "le": "0.025"}) == 1
    before = PROCESS.get_sample_value("broker_sched_record_write_failures_total")
    RECORDS_NOT_WRITTEN.inc()
    assert PROCESS.get_sample_value("broker_sched_record_write_failures_total") == (before or 0) + 1
