"""The Prometheus text format, from plain metric families."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from broker_sched.metrics import Family, exposition


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
