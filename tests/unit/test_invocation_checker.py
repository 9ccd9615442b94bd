"""The invocation checker on hand-made histories: every verdict, reruns, liveness."""

from __future__ import annotations

import math

from broker_sched.bench.chaos_accounting import Call
from broker_sched.bench.invocation_checker import (
    TABLE_HEADER,
    Execution,
    Verdict,
    check,
    execution_line,
    parse_executions,
    table_row,
)

FAULT_S = 10.0
HEALED_S = 13.0


def call(seq: int, *, accepted: bool = True, maybe: bool = False, sent_s: float = 9.0) -> Call:
    return Call(
        seq, sent_s, seq % 2 == 0, accepted, f"a{seq}" if accepted else None, None, None, maybe
    )


def test_each_invocation_gets_one_verdict() -> None:
    calls = [
        call(0),  # ran once, answered: ok
        call(1),  # ran twice (a redelivery), answered: duplicated
        call(2),  # accepted, ran, no result nor record: lost
        call(3),  # accepted, never ran, nothing: lost
        call(4, accepted=False),  # a certain refusal, no trace: refused
        call(5, accepted=False, maybe=True),  # an open refusal, no trace: unknown
        call(6, accepted=False, maybe=True),  # an open refusal that ran and answered: ok
        call(7, accepted=False),  # refused to the client, yet it ran: accepted, lost
    ]
    executions = [
        Execution(0, 9.1, 9.2),
        Execution(1, 9.1, None),  # killed mid-run
        Execution(1, 12.0, 12.1),
        Execution(2, 9.5, 9.6),
        Execution(6, 9.3, 9.4),
        Execution(7, 9.3, 9.4),
    ]
    checked = check(calls, executions, {0, 1, 6}, fault_s=FAULT_S, healed_s=HEALED_S, tick_s=0.1)
    assert checked.verdicts == {
        0: Verdict.OK,
        1: Verdict.DUPLICATED,
        2: Verdict.LOST,
        3: Verdict.LOST,
        5: Verdict.UNKNOWN,
        6: Verdict.OK,
        7: Verdict.LOST,
    }
    assert checked.refused == 1
    assert checked.executions == 6
    assert checked.seqs(Verdict.LOST) == [2, 3, 7]
    assert checked.reruns_after_finish == []  # seq 1's first run never finished
    assert checked.results_without_execution == []


def test_a_run_finished_before_the_fault_must_not_run_again() -> None:
    executions = [Execution(0, 9.0, 9.1), Execution(0, 11.0, 11.1), Execution(1, 9.0, 10.5)]
    executions.append(Execution(1, 12.0, 12.2))  # its first run ended after the fault
    executions += [Execution(2, 8.0, 8.1), Execution(2, 9.0, 9.1)]  # rerun before the fault
    checked = check(
        [call(0), call(1), call(2)],
        executions,
        {0, 1, 2},
        fault_s=FAULT_S,
        healed_s=HEALED_S,
        tick_s=0.1,
    )
    assert checked.count(Verdict.DUPLICATED) == 3
    assert checked.reruns_after_finish == [0]


def test_a_result_without_an_execution_is_flagged() -> None:
    checked = check([call(0)], [], {0}, fault_s=FAULT_S, healed_s=HEALED_S, tick_s=0.1)
    assert checked.verdicts == {0: Verdict.OK}
    assert checked.results_without_execution == [0]


def test_liveness_is_the_gap_from_the_heal_to_a_running_execution() -> None:
    calls = [call(0), call(1, sent_s=13.5)]
    # seq 1 arrives after the heal and runs 0.15 s after it
    executions = [Execution(0, 9.0, 9.1), Execution(1, HEALED_S + 0.15, HEALED_S + 0.25)]
    checked = check(calls, executions, {0, 1}, fault_s=FAULT_S, healed_s=HEALED_S, tick_s=0.1)
    assert math.isclose(checked.consumer_gap_s or 0, 0.15)
    assert checked.live
    late = [Execution(0, 9.0, 9.1), Execution(1, HEALED_S + 0.5, HEALED_S + 0.6)]
    checked = check(calls, late, {0, 1}, fault_s=FAULT_S, healed_s=HEALED_S, tick_s=0.1)
    assert not checked.live


def test_an_execution_spanning_the_heal_is_a_consumer_at_once() -> None:
    executions = [Execution(0, 12.0, 14.0)]
    checked = check([call(0)], executions, {0}, fault_s=FAULT_S, healed_s=HEALED_S, tick_s=0.1)
    assert checked.consumer_gap_s == 0.0


def test_no_backlog_after_the_heal_needs_no_consumer() -> None:
    checked = check(
        [call(0)], [Execution(0, 9.0, 9.1)], {0}, fault_s=FAULT_S, healed_s=HEALED_S, tick_s=0.1
    )
    assert checked.consumer_gap_s is None
    assert checked.live
    lost = check([call(0)], [], set(), fault_s=FAULT_S, healed_s=HEALED_S, tick_s=0.1)
    assert lost.consumer_gap_s == math.inf  # a backlog nobody ever consumed
    assert not lost.live


def test_the_handler_history_round_trips_and_skips_a_torn_line() -> None:
    lines = [
        execution_line("start", "x", 3, 1.0),
        execution_line("start", "y", 3, 2.0),
        execution_line("finish", "x", 3, 1.5),
        '{"event": "fin',  # the container was killed mid-write
    ]
    assert parse_executions("".join(lines).splitlines()) == [
        Execution(3, 1.0, 1.5),
        Execution(3, 2.0, None),
    ]


def test_the_table_row_lists_every_verdict() -> None:
    checked = check(
        [call(0)], [Execution(0, 9.0, 9.1)], {0}, fault_s=FAULT_S, healed_s=HEALED_S, tick_s=0.1
    )
    row = table_row("redis", "invoker-pause", checked)
    assert row == "| redis | invoker-pause | 1 | 0 | 0 | 0 | 0 | 0 | - |"
    assert TABLE_HEADER.count("|") == 2 * row.count("|")


def test_an_error_answered_without_running_is_neither_unexecuted_nor_a_backlog() -> None:
    # seq 1: the invoker answered "deadline passed while queued" without running it
    checked = check(
        [call(0), call(1)],
        [Execution(0, 9.0, 9.1)],
        {0, 1},
        fault_s=FAULT_S,
        healed_s=HEALED_S,
        tick_s=0.1,
        failures=frozenset({1}),
    )
    assert checked.verdicts == {0: Verdict.OK, 1: Verdict.OK}
    assert checked.results_without_execution == []
    assert checked.consumer_gap_s is None
