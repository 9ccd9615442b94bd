"""What happened to every invocation of a fault run, judged from histories alone.

In the manner of Jepsen's checkers, three independent histories are compared after the
run, with no I/O:

- the client's: every call it made, when, and how it was answered (`Call`): accepted
  (an activation id, a result, or a 504 that says it was published), refused for certain
  (a 429, a connection the controller refused: nothing was published), or refused in a
  way that leaves it open (a 503 from the broker, a connection that dropped or timed out
  mid-call: the message may still have been stored, ``maybe_published``);
- the handler's: every execution the action began and finished, written by the action
  itself in its container (`Execution`, parsed from the lines `execution_line` makes);
- the results: the invocations whose result came on the results channel or whose
  activation record the store holds.

Each invocation is then **ok** (a result, executed at most once), **duplicated** (a
result, executed more than once: at-least-once delivery, counted per fault), **lost**
(accepted — by the client's answer or by an execution — and no result nor record ever
came) or **unknown** (an open refusal with no trace at all: it may or may not have been
accepted, as Jepsen's indeterminate operations); refusals that are certain are not
accepted invocations and are only counted. Two stricter findings sit beside them: a
*rerun after finish* is an execution that began after the fault of an invocation that
had already run to its end before it (results are de-duplicated by activation id, so
the fault should never run finished work again; reruns before the fault, such as a
Kafka rebalance while containers join, are duplicates of no fault's making), and a
*result without an execution* (a successful one: an invoker may answer an error, such as
a deadline passed while queued, without running the action) would mean the handler's
history is incomplete.

Liveness: after the fault heals, the action has a backlog as long as an accepted
invocation is not finished; the *consumer gap* is how long after the heal the first
execution was running (one that spans the heal counts at once). The target is two
monitor ticks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from broker_sched.bench.chaos_accounting import Call

LIVENESS_TICKS = 2
"""Monitor ticks after a heal by which an action with a backlog must have a consumer."""


class Verdict(StrEnum):
    OK = "ok"
    DUPLICATED = "duplicated"
    LOST = "lost"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Execution:
    """One execution of the action, as the handler recorded it."""

    seq: int
    started_s: float
    finished_s: float | None
    """None: it never finished (its container was killed mid-run)."""


def execution_line(event: str, execution: str, seq: int, at_s: float) -> str:
    """One line of the handler's history: ``event`` is ``start`` or ``finish`` of the
    execution named ``execution`` (unique per run of the handler)."""
    return json.dumps({"event": event, "id": execution, "seq": seq, "at_s": at_s}) + "\n"


def parse_executions(lines: Iterable[str]) -> list[Execution]:
    """The executions in the handler's history, pairing each start with its finish. A
    torn last line (a container killed mid-write) is skipped."""
    started: dict[str, tuple[int, float]] = {}
    finished: dict[str, float] = {}
    for line in lines:
        try:
            entry = json.loads(line)
            event, name, seq, at_s = entry["event"], entry["id"], entry["seq"], entry["at_s"]
        except (ValueError, KeyError, TypeError):
            continue
        if event == "start":
            started[name] = (int(seq), float(at_s))
        elif event == "finish":
            finished[name] = float(at_s)
    return [
        Execution(seq, started_s, finished.get(name))
        for name, (seq, started_s) in sorted(started.items(), key=lambda item: item[1][1])
    ]


@dataclass(frozen=True)
class Checked:
    verdicts: dict[int, Verdict]
    """Per accepted (or unknown) invocation, by seq."""
    refused: int
    """Invocations certainly refused: not accepted, no trace."""
    executions: int
    reruns_after_finish: list[int] = field(default_factory=list)
    """Seqs that ran again after the fault, having run to their end before it."""
    results_without_execution: list[int] = field(default_factory=list)
    """Seqs with a successful result and no execution: the handler's history has a gap."""
    consumer_gap_s: float | None = None
    """From the heal until an execution was running; None: no backlog after the heal."""
    tick_s: float = 0.1

    def count(self, verdict: Verdict) -> int:
        return sum(1 for v in self.verdicts.values() if v is verdict)

    def seqs(self, verdict: Verdict) -> list[int]:
        return sorted(seq for seq, v in self.verdicts.items() if v is verdict)

    @property
    def live(self) -> bool:
        """A consumer within `LIVENESS_TICKS` monitor ticks of the heal (or no backlog)."""
        return self.consumer_gap_s is None or self.consumer_gap_s <= LIVENESS_TICKS * self.tick_s


def check(
    calls: Sequence[Call],
    executions: Sequence[Execution],
    results: set[int],
    *,
    fault_s: float,
    healed_s: float,
    tick_s: float,
    failures: frozenset[int] = frozenset(),
) -> Checked:
    """Judge every call of a run; see the module docstring for the terms.

    ``results`` are the seqs with a result seen or a record kept, ``failures`` those of
    them whose result is an error (an invoker may answer one without running the action:
    a deadline that passed while it was queued); ``fault_s`` and
    ``healed_s`` when the fault began and ended (monotonic, as the histories);
    ``tick_s`` the backlog monitor's interval.
    """
    runs: dict[int, list[Execution]] = {}
    for execution in executions:
        runs.setdefault(execution.seq, []).append(execution)
    verdicts: dict[int, Verdict] = {}
    refused = 0
    reruns: list[int] = []
    unexecuted: list[int] = []
    for call in calls:
        ran = runs.get(call.seq, [])
        answered = call.seq in results
        if not (call.accepted or answered or ran):
            if call.maybe_published:
                verdicts[call.seq] = Verdict.UNKNOWN
            else:
                refused += 1
            continue
        if not answered:
            verdicts[call.seq] = Verdict.LOST
            continue
        if not ran and call.seq not in failures:
            unexecuted.append(call.seq)
        verdicts[call.seq] = Verdict.DUPLICATED if len(ran) > 1 else Verdict.OK
        ends = [r.finished_s for r in ran if r.finished_s is not None and r.finished_s < fault_s]
        if ends and any(r.started_s >= fault_s for r in ran):
            reruns.append(call.seq)
    return Checked(
        verdicts=verdicts,
        refused=refused,
        executions=len(executions),
        reruns_after_finish=sorted(reruns),
        results_without_execution=sorted(unexecuted),
        consumer_gap_s=consumer_gap_s(
            calls, executions, verdicts, healed_s=healed_s, unrun=frozenset(unexecuted) | failures
        ),
        tick_s=tick_s,
    )


def consumer_gap_s(
    calls: Sequence[Call],
    executions: Sequence[Execution],
    verdicts: dict[int, Verdict],
    *,
    healed_s: float,
    unrun: frozenset[int] = frozenset(),
) -> float | None:
    """Seconds from the heal until an execution was running, if the action had a backlog
    then: an accepted invocation whose last execution had not finished by the heal (one
    answered without running, ``unrun``, is not waiting for a consumer). None when there
    was no backlog after the heal."""
    accepted = {
        seq
        for seq, v in verdicts.items()
        if v is not Verdict.UNKNOWN and not (seq in unrun and v is not Verdict.LOST)
    }
    finished_by: dict[int, float] = {}
    for execution in executions:
        if execution.finished_s is not None:
            last = finished_by.get(execution.seq, 0.0)
            finished_by[execution.seq] = max(last, execution.finished_s)
    backlog = [
        call
        for call in calls
        if call.seq in accepted and finished_by.get(call.seq, float("inf")) > healed_s
    ]
    if not backlog:
        return None
    running_from = [
        max(execution.started_s, healed_s)
        for execution in executions
        if execution.finished_s is None or execution.finished_s >= healed_s
    ]
    if not running_from:
        return float("inf")
    return min(running_from) - healed_s


def table_row(transport: str, fault: str, checked: Checked) -> str:
    """One markdown row of the checker's table."""
    gap = checked.consumer_gap_s
    shown = "-" if gap is None else ("never" if gap == float("inf") else f"{gap:.2f}")
    counts = " | ".join(str(checked.count(v)) for v in Verdict)
    return (
        f"| {transport} | {fault} | {counts} | {checked.refused} | "
        f"{len(checked.reruns_after_finish)} | {shown} |"
    )


TABLE_HEADER = (
    "| transport | fault | ok | duplicated | lost | unknown | refused | reruns after finish "
    "| consumer after heal s |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)
