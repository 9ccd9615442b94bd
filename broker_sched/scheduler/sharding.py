"""The classic hash-based "home invoker" choice, modelled faithfully for comparison.

This is how OpenWhisk's ShardingContainerPoolBalancer picks an invoker: hash the fully
qualified action name to a home invoker, then probe with a step size that is coprime to
the invoker count (so the probe visits every invoker once), taking the first with a
free slot; when every probe misses, overload a random healthy invoker. Two busy actions
hashing to the same home evict each other's containers — the collapse broker-sched's
own policy exists to avoid. Pure functions, no I/O.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode``, as the original scheduler hashes action names."""
    value = 0
    for char in text:
        value = (31 * value + ord(char)) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def pairwise_coprime_steps(n: int) -> list[int]:
    """Numbers in 1..n coprime with ``n`` and with each other: the probe step sizes."""
    steps: list[int] = []
    for candidate in range(1, n + 1):
        if math.gcd(candidate, n) == 1 and all(math.gcd(s, candidate) == 1 for s in steps):
            steps.append(candidate)
    return steps


def probe_sequence(action: str, n: int) -> list[int]:
    """Invoker indexes in the order they are probed for ``action``: home first."""
    if n <= 0:
        return []
    digest = abs(java_string_hash(action))
    steps = pairwise_coprime_steps(n)
    step = steps[digest % len(steps)]
    home = digest % n
    return [(home + i * step) % n for i in range(n)]


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    overloaded: bool


def choose_invoker(
    action: str,
    free_slots: Sequence[int],
    healthy: Sequence[bool],
    rng: random.Random,
) -> Choice | None:
    """The invoker for one activation; ``None`` only when no invoker is healthy."""
    for index in probe_sequence(action, len(free_slots)):
        if healthy[index] and free_slots[index] > 0:
            return Choice(index, overloaded=False)
    candidates = [i for i, ok in enumerate(healthy) if ok]
    if not candidates:
        return None
    return Choice(rng.choice(candidates), overloaded=True)
