"""A real Prometheus scrapes a controller and two invokers under load, and answers the
questions an operator asks through its HTTP API: backlog, arrival rate, containers by
state, cold-start time, queue wait, and what the scheduler decided by rule."""

from __future__ import annotations

import json

import pytest
from observed import INVOKERS, Observed, get

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_backlog_and_arrival_rate_per_action(observed: Observed) -> None:
    backlog = observed.await_data('broker_sched_backlog_pending{job="broker-sched-controller"}')
    # At least the loaded ones: actions other runs made through the API live in the
    # same broker's store, and every controller reads the backlog of the actions it owns.
    assert {labels["action"] for labels, _ in backlog} >= {"guest/steady", "guest/bursty"}
    observed.await_data('broker_sched_backlog_in_flight{action="guest/steady"}')
    rates = observed.await_data(
        'max_over_time(broker_sched_arrival_rate_per_s{action="guest/steady"}[1m]) > 0'
    )
    assert rates[0][1] > 1


def test_containers_by_state_on_the_controller_and_on_each_invoker(observed: Observed) -> None:
    running = observed.await_data(
        "sum by (action) "
        '(broker_sched_containers{job="broker-sched-controller",state="running"}) > 0'
    )
    assert {labels["action"] for labels, _ in running} >= {"guest/steady"}
    states = observed.await_data(
        'count by (state) (broker_sched_containers{job="broker-sched-controller"})'
    )
    assert {labels["state"] for labels, _ in states} >= {"running", "paused", "creating"}
    # What each invoker says of its own containers adds up to what the controller sees.
    observed.await_data(
        'sum(broker_sched_containers{job="broker-sched-invoker",state="running"}) > 0'
    )
    assert (
        len(observed.await_data('broker_sched_invoker_free_slots{job="broker-sched-invoker"}'))
        == INVOKERS
    )


def test_cold_start_time_is_a_histogram_from_the_invokers(observed: Observed) -> None:
    counts = observed.await_data("sum(broker_sched_cold_start_seconds_count) > 0")
    assert counts[0][1] >= 2  # steady and bursty each had at least one
    (p90,) = observed.await_data(
        "histogram_quantile(0.9, sum by (le) "
        "(increase(broker_sched_cold_start_seconds_bucket[5m])))"
    )
    assert 0 < p90[1] < 32
    mean = observed.await_data(
        "sum(broker_sched_cold_start_seconds_sum) / sum(broker_sched_cold_start_seconds_count)"
    )
    assert 0 < mean[0][1] < 32


def test_queue_wait_by_start_kind(observed: Observed) -> None:
    starts = observed.await_data("sum by (start) (broker_sched_queue_wait_seconds_count) > 0")
    assert {labels["start"] for labels, _ in starts} >= {"cold", "warm"}
    (median,) = observed.await_data(
        "histogram_quantile(0.5, sum by (le) "
        '(rate(broker_sched_queue_wait_seconds_bucket{start="warm"}[1m])))'
    )
    assert 0 <= median[1] < 60


def test_decisions_per_rule_and_the_events_they_led_to(observed: Observed) -> None:
    rules = observed.await_data("sum by (rule) (increase(broker_sched_decisions_total[1m])) > 0")
    assert {labels["rule"] for labels, _ in rules} & {
        "poke",
        "sustained",
        "steady",
        "burst-drain",
        "burst-wait",
        "standing",
        "capped-limit",
    }
    observed.await_data('broker_sched_events_total{kind="container_requested"} > 0')


def test_invokers_and_their_heartbeats_are_seen(observed: Observed) -> None:
    (invokers,) = observed.await_data("broker_sched_invokers")
    assert invokers[1] == INVOKERS
    ages = observed.await_data("broker_sched_invoker_heartbeat_age_seconds")
    assert len(ages) == INVOKERS
    assert all(age < 5 for _, age in ages)
    failures = observed.await_data(
        'broker_sched_record_write_failures_total{job="broker-sched-invoker"}'
    )
    assert [value for _, value in failures] == [0.0] * INVOKERS


def test_the_shipped_rules_load_and_record(observed: Observed) -> None:
    answer = json.loads(get(observed.prometheus + "/api/v1/rules"))
    rules = [rule for group in answer["data"]["groups"] for rule in group["rules"]]
    assert len(rules) >= 10
    assert [rule["name"] for rule in rules if rule["health"] != "ok"] == []
    observed.await_data("state:broker_sched_containers:sum")
    observed.await_data("rule:broker_sched_decisions:rate1m")
    observed.await_data("start:broker_sched_queue_wait_seconds:p95_rate1m")
    # Every target is up, heartbeats arrive and records are written: those stay quiet.
    healthy = "InvokerHeartbeatsMissing|InvokerDown|ControllerDown|RecordsFailingToWrite"
    assert observed.query(f'ALERTS{{alertname=~"{healthy}"}}') == []
