"""What became of every invocation a chaos run sent, from plain records of the run.

The load generator records each call it made (`Call`), the observer each result it saw
on the controller's results channel (`Seen`), and after the run the activation records
the store holds are listed. From those three alone, with no I/O, `account` says how many
invocations were sent, accepted, completed and failed (and why), which accepted ones
never got a result nor a record (lost), which results have no record (unrecorded: the
invoker keeps it before acking, so there should be none), how many results came twice
(reruns the controller drops as duplicates) and how long p99 latency took to come back
to its steady value after the fault. Keeping it pure is what lets the arithmetic be
tested to the activation.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

SUCCESS = "success"

FAULT_SETTLES_S = 0.5
"""How long after a fault a call may still have been on its way before anyone knew: a
client learns that a killed broker is gone only when the socket closes under it, so a
publish handed over in that instant waits out its own deadline. How fast an outage is
told (``refused_within_s``) is measured on the calls sent after this."""


@dataclass(frozen=True)
class Call:
    """One invocation as the client saw it.

    ``accepted``: the controller answered with an activation id or a result. A call that
    was refused (an error, a dropped connection) may still have been published — then
    its result shows up among the `Seen` ones under its ``seq`` and it counts as accepted.
    """

    seq: int
    sent_s: float
    blocking: bool
    accepted: bool
    activation_id: str | None = None
    error: str | None = None
    answered_s: float | None = None
    maybe_published: bool = False
    """A refusal that leaves it open whether the message was stored (a 503 from the
    broker, a connection that dropped mid-call), unlike a 429 or a refused connection."""


@dataclass(frozen=True)
class Seen:
    """One result message on the results channel (copies included)."""

    activation_id: str
    status: str
    at_s: float
    seq: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Accounting:
    sent: int
    accepted: int
    completed: int
    failed: dict[str, int]
    refused: dict[str, int]
    lost: int
    duplicates: int
    unrecorded: int
    """Results that came (the observer saw them) but have no activation record."""
    refused_within_s: float | None
    """The slowest refusal of a call sent once the fault had settled (`FAULT_SETTLES_S`):
    how fast an outage is told."""
    steady_p99_s: float | None
    recovery_s: float | None
    lost_seqs: list[int] = field(default_factory=list)
    p99_by_second: list[float] = field(default_factory=list)
    """p99 latency of the calls sent in each second of the run (inf: one got no result)."""


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def p99_by_window(
    latencies: Iterable[tuple[float, float]], *, start_s: float, window_s: float = 1.0
) -> list[float]:
    """p99 latency of the calls sent in each window from ``start_s``; 0 for an empty one."""
    windows: dict[int, list[float]] = {}
    for sent_s, latency in latencies:
        windows.setdefault(int((sent_s - start_s) // window_s), []).append(latency)
    last = max(windows, default=-1)
    return [percentile(windows[i], 99) if i in windows else 0.0 for i in range(last + 1)]


def recovery_s(
    latencies: Iterable[tuple[float, float]],
    *,
    fault_s: float,
    steady_p99_s: float,
    window_s: float = 0.5,
    slack: float = 2.0,
    floor_s: float = 0.05,
) -> float | None:
    """Seconds from the fault until p99 stayed back within its steady bound.

    ``latencies`` are (sent_s, latency_s) pairs; a call that never got a result counts
    as infinitely slow in the window it was sent in. The bound is ``slack`` times the
    steady p99, at least ``floor_s`` above it, so scheduler jitter alone does not count
    as a disturbance. The answer is the start of the first window after the fault from
    which every later window is within the bound, minus the fault time: 0 when the fault
    never showed; None when the last window is still out of bounds.
    """
    bound = max(steady_p99_s * slack, steady_p99_s + floor_s)
    windows: dict[int, list[float]] = {}
    for sent_s, latency in latencies:
        if sent_s >= fault_s:
            windows.setdefault(int((sent_s - fault_s) // window_s), []).append(latency)
    if not windows:
        return 0.0
    recovered_from: int | None = None
    for index in sorted(windows):
        if percentile(windows[index], 99) <= bound:
            if recovered_from is None:
                recovered_from = index
        else:
            recovered_from = None
    return None if recovered_from is None else recovered_from * window_s


def account(
    calls: Sequence[Call],
    seen: Sequence[Seen],
    recorded: set[str],
    *,
    fault_s: float,
    warmup_s: float = 0.0,
) -> Accounting:
    """The fate of every call: see the module docstring for the terms."""
    first: dict[str, Seen] = {}
    duplicates = 0
    for copy in sorted(seen, key=lambda s: s.at_s):
        if copy.activation_id in first:
            duplicates += 1
        else:
            first[copy.activation_id] = copy
    by_seq = {result.seq: result for result in first.values() if result.seq is not None}
    completed = 0
    failed: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    refused_after: list[float] = []
    lost_seqs: list[int] = []
    unrecorded = 0
    accepted = 0
    latencies: list[tuple[float, float]] = []
    for call in calls:
        result: Seen | None = by_seq.get(call.seq)
        if result is None and call.activation_id is not None:
            result = first.get(call.activation_id)
        activation_id = call.activation_id or (result.activation_id if result else None)
        if not call.accepted and result is None:
            refused[call.error or "refused"] += 1
            if call.answered_s is not None and call.sent_s >= fault_s + FAULT_SETTLES_S:
                refused_after.append(call.answered_s - call.sent_s)
            latencies.append((call.sent_s, math.inf))
            continue
        accepted += 1
        if result is None:
            if activation_id is not None and activation_id in recorded:
                completed += 1  # the record proves a result the observer missed
            else:
                lost_seqs.append(call.seq)
                latencies.append((call.sent_s, math.inf))
            continue
        if result.status == SUCCESS:
            completed += 1
        else:
            failed[f"{result.status}: {result.error or ''}".rstrip(": ")] += 1
        if result.activation_id not in recorded:
            unrecorded += 1
        latencies.append((call.sent_s, result.at_s - call.sent_s))
    # Steady: calls after the warm-up whose result came before the fault, so none of
    # them is one the fault held up.
    steady = [lat for sent, lat in latencies if warmup_s <= sent and sent + lat < fault_s]
    steady_p99 = percentile(steady, 99) if steady else None
    recovery = (
        recovery_s(latencies, fault_s=fault_s, steady_p99_s=steady_p99)
        if steady_p99 is not None
        else None
    )
    return Accounting(
        sent=len(calls),
        accepted=accepted,
        completed=completed,
        failed=dict(failed),
        refused=dict(refused),
        lost=len(lost_seqs),
        duplicates=duplicates,
        unrecorded=unrecorded,
        refused_within_s=max(refused_after) if refused_after else None,
        steady_p99_s=steady_p99,
        recovery_s=recovery,
        lost_seqs=lost_seqs,
        p99_by_second=p99_by_window(latencies, start_s=min((c.sent_s for c in calls), default=0)),
    )
