"""Built-in workloads of the shapes the other scenarios lack, for the tails.

The scheduler's rules were tuned on steady mixes; a new user's load is rarely one.
These three shapes are where overhead tails grow (issue: "tails on loads nobody tuned
for"), on the default cluster of 10 invokers x 20 slots with simulated Docker-like
cold starts:

- ``tails-onoff``: heavy-tailed run times (lognormal, median 20 ms, sigma 1.3: about
  1 ms at the 1st percentile, 1 s at the 99.9th), Zipf popularity over 30 actions
  (action ``k`` called in proportion to 1/k), and an open loop whose rate changes 10x
  every 3 s (40/s, then 400/s, five times);
- ``tails-bimodal``: half the calls to actions of 2 ms runs, half to actions of 300 ms
  runs, 100 closed-loop users — the two kinds share nothing but the cluster.

Both are ordinary workloads (:class:`~broker_sched.bench.workload.Workload`): the bench
runs them as a workload file, and ``broker-sched simulate`` runs them by name.
"""

from __future__ import annotations

from typing import Any

from broker_sched.bench.workload import Workload, parse_workload

ZIPF_ACTIONS = 30
ONOFF_LOW_PER_S = 40.0
ONOFF_STEP_S = 3.0
ONOFF_CYCLES = 5


def onoff_zipf_heavy() -> Workload:
    heavy_tailed = {"kind": "lognormal", "median_ms": 20.0, "sigma": 1.3}
    classes: list[dict[str, Any]] = [
        {"name": f"zipf{k:02d}", "count": 1, "share": 1.0 / k, "run_ms": heavy_tailed}
        for k in range(1, ZIPF_ACTIONS + 1)
    ]
    phases: list[dict[str, Any]] = [
        {"shape": "steady", "duration_s": ONOFF_STEP_S, "rate_per_s": rate}
        for _ in range(ONOFF_CYCLES)
        for rate in (ONOFF_LOW_PER_S, 10 * ONOFF_LOW_PER_S)
    ]
    return parse_workload(
        {"name": "tails-onoff", "classes": classes, "phases": phases, "warmup_s": 0.0}
    )


def bimodal() -> Workload:
    return parse_workload(
        {
            "name": "tails-bimodal",
            "users": 100,
            "classes": [
                {"name": "ms", "count": 10, "share": 0.5, "run_ms": {"kind": "fixed", "ms": 2}},
                {
                    "name": "slow",
                    "count": 10,
                    "share": 0.5,
                    "run_ms": {"kind": "fixed", "ms": 300},
                },
            ],
        }
    )


WORKLOADS = {"tails-onoff": onoff_zipf_heavy, "tails-bimodal": bimodal}
"""The built-in workloads by name."""
