"""The Prometheus text format, from plain metric families."""

from __future__ import annotations

from broker_sched.metrics import Family, exposition


def test_each_family_has_help_type_and_one_line_per_sample() -> None:
    pending = Family("backlog_pending", "gauge", "Activations queued.")
    pending.add(3, action="guest/a")
    pending.add(0, action="guest/b")
    events = Family("events_total", "counter", "Timeline events.")
    events.add(12, kind="container_created")

    assert exposition([pending, events]).splitlines() == [
        "# HELP broker_sched_backlog_pending Activations queued.",
        "# TYPE broker_sched_backlog_pending gauge",
        'broker_sched_backlog_pending{action="guest/a"} 3',
        'broker_sched_backlog_pending{action="guest/b"} 0',
        "# HELP broker_sched_events_total Timeline events.",
        "# TYPE broker_sched_events_total counter",
        'broker_sched_events_total{kind="container_created"} 12',
    ]


def test_values_keep_fractions_and_unlabelled_samples_have_no_braces() -> None:
    rate = Family("arrival_rate_per_s", "gauge", "Per second.")
    rate.add(2.5)
    rate.add(1e-3, action="x")

    assert exposition([rate]).splitlines()[2:] == [
        "broker_sched_arrival_rate_per_s 2.5",
        'broker_sched_arrival_rate_per_s{action="x"} 0.001',
    ]


def test_label_values_are_escaped() -> None:
    family = Family("throttled", "gauge", "Refusing.")
    family.add(1, action='odd"name\\with\nnewline')

    assert exposition([family]).splitlines()[2] == (
        'broker_sched_throttled{action="odd\\"name\\\\with\\nnewline"} 1'
    )


def test_a_family_without_samples_still_declares_itself() -> None:
    assert exposition([Family("invokers", "gauge", "Live invokers.")]) == (
        "# HELP broker_sched_invokers Live invokers.\n# TYPE broker_sched_invokers gauge\n"
    )
