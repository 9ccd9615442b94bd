"""`broker-sched demo`: the embedded stack under a bursty load, with a live display.

It shows the whole idea on one machine in about twenty seconds: activations queue in
per-action queues, the backlog monitor creates containers (real OS processes) only when
the existing ones cannot keep up, bursts are absorbed by waiting for a busy container
where that beats a cold start, idle containers pause and are removed after the
keep-alive, and new containers come from a pool of prewarmed stem cells while it has
some (``start = prewarm``: only the handler's import is waited for). It serves the
controller's API on a free loopback port with a key made for the run (kept in memory
only), and shows one call with the key and one without.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from broker_sched.api import Api
from broker_sched.api_client import post
from broker_sched.api_keys import Credential, Keyring, digest, new_auth, split_auth
from broker_sched.config import PrewarmPoolSettings, Settings
from broker_sched.errors import BrokerSchedError, Throttled
from broker_sched.model import Action, ActivationResult
from broker_sched.stack import Stack


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    duration_s: float
    rates_per_s: dict[str, float]


DEMO_ACTIONS = [
    Action(name="hello", handler="broker_sched.samples:hello", max_containers=4),
    Action(name="resize", handler="broker_sched.samples:sleep", max_containers=8),
    Action(name="report", handler="broker_sched.samples:fib", max_containers=2),
]

PHASES = [
    Phase("warm-up", 4.0, {"hello": 5, "resize": 5}),
    Phase("burst", 5.0, {"hello": 20, "resize": 80, "report": 4}),
    Phase("quiet", 5.0, {"hello": 2}),
    Phase("second burst", 4.0, {"hello": 10, "resize": 60}),
    Phase("drain", 2.0, {}),
]

PAYLOADS: dict[str, Any] = {
    "hello": {"name": "broker-sched"},
    "resize": {"ms": 50},
    "report": {"n": 22},
}


@dataclass
class Tally:
    started_s: float = field(default_factory=time.monotonic)
    sent: int = 0
    results: list[ActivationResult] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    throttled: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def finished(self) -> int:
        return len(self.results) + self.throttled + sum(self.errors.values())


def demo_settings(base: Settings) -> Settings:
    """The demo's tuning: short keep-alive and pause grace so the display shows both,
    and a prewarm pool (unless one is configured) so it shows prewarm starts too."""
    pools = base.prewarm.pools or [PrewarmPoolSettings(kind="python", memory_mb=256)]
    return base.model_copy(
        update={
            "invoker": base.invoker.model_copy(
                update={"keep_alive_s": 4.0, "pause_grace_s": 0.5, "slots": 16}
            ),
            "prewarm": base.prewarm.model_copy(update={"pools": pools}),
        }
    )


async def run_demo(
    settings: Settings, *, json_output: bool, out: TextIO = sys.stdout
) -> dict[str, Any]:
    tally = Tally()
    async with Stack(demo_settings(settings), actions={a.fqn: a for a in DEMO_ACTIONS}) as stack:
        assert stack.controller is not None
        auth = new_auth()
        user, key = split_auth(auth)
        keyring = Keyring([Credential(user, "guest", digest(key))])
        async with await Api(stack.controller, keyring).start("127.0.0.1", 0) as api:
            display = asyncio.create_task(_display(stack, tally, out, quiet=json_output))
            try:
                await _drive(stack, tally)
            finally:
                display.cancel()
            front_door = await _front_door(f"127.0.0.1:{api.port}", auth)
        peak = max((e.detail.get("live", 0) for e in stack.timeline.events), default=0)
        return {**_summary(stack, tally, peak), "api": front_door}


async def _front_door(api: str, auth: str) -> dict[str, int]:
    """The API's answers to one call of ``hello`` with the run's key and one without."""
    payload = b'{"name": "api"}'
    with_key, _ = await post(api, "hello", payload, blocking=True, auth=auth)
    without_key, _ = await post(api, "hello", payload, blocking=True, auth=None)
    return {"with_key": with_key, "without_key": without_key}


async def _drive(stack: Stack, tally: Tally) -> None:
    assert stack.controller is not None
    controller = stack.controller
    in_flight: set[asyncio.Task[None]] = set()

    async def one(action: str) -> None:
        sent_s = time.monotonic()
        try:
            result = await controller.invoke(action, PAYLOADS[action], timeout_s=30)
        except Throttled:
            tally.throttled += 1
            return
        except BrokerSchedError as exc:
            tally.errors[type(exc).__name__] += 1
            return
        tally.results.append(result)
        tally.latencies_ms.append((time.monotonic() - sent_s) * 1000)

    for phase in PHASES:
        phase_end_s = time.monotonic() + phase.duration_s
        next_send = {action: time.monotonic() for action in phase.rates_per_s}
        while (now_s := time.monotonic()) < phase_end_s:
            for action, rate in phase.rates_per_s.items():
                while next_send[action] <= now_s:
                    next_send[action] += 1 / rate
                    tally.sent += 1
                    task = asyncio.create_task(one(action))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
            await asyncio.sleep(0.005)
    if in_flight:
        await asyncio.gather(*in_flight)


def _live_containers(stack: Stack) -> Counter[str]:
    return Counter(proxy.action for invoker in stack.invokers for proxy in invoker.proxies)


async def _display(stack: Stack, tally: Tally, out: TextIO, *, quiet: bool) -> None:
    while True:
        live = _live_containers(stack)
        stack.timeline.record("sample", live=sum(live.values()))
        if not quiet:
            elapsed_s = time.monotonic() - tally.started_s
            paused = sum(p.paused for i in stack.invokers for p in i.proxies)
            per_action = " ".join(f"{a.name}={live.get(a.fqn, 0)}" for a in DEMO_ACTIONS)
            line = (
                f"\r{elapsed_s:5.1f}s  sent {tally.sent:5d}  done {tally.finished:5d}  "
                f"containers {sum(live.values()):2d} ({per_action}, paused {paused})  "
            )
            out.write(line if out.isatty() else line.strip() + "\n")
            out.flush()
        await asyncio.sleep(0.25 if out.isatty() or quiet else 2.0)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(stack: Stack, tally: Tally, peak: int) -> dict[str, Any]:
    elapsed_s = time.monotonic() - tally.started_s
    starts = Counter(str(r.start) for r in tally.results if r.start is not None)
    succeeded = sum(1 for r in tally.results if r.ok)
    return {
        "activations": tally.sent,
        "succeeded": succeeded,
        "failed": len(tally.results) - succeeded + sum(tally.errors.values()),
        "throttled": tally.throttled,
        "throughput_per_s": round(len(tally.results) / elapsed_s, 1),
        "latency_ms": {
            "p50": round(_percentile(tally.latencies_ms, 0.50), 1),
            "p99": round(_percentile(tally.latencies_ms, 0.99), 1),
        },
        "starts": {kind: starts.get(kind, 0) for kind in ("cold", "prewarm", "warm", "resumed")},
        "containers": {
            "created": stack.timeline.counts["container_created"],
            "removed": stack.timeline.counts["container_removed"],
            "peak": peak,
        },
        "duration_s": round(elapsed_s, 1),
        "errors": dict(tally.errors),
    }


def format_summary(summary: dict[str, Any]) -> str:
    latency = summary["latency_ms"]
    starts = summary["starts"]
    containers = summary["containers"]
    return "\n".join(
        [
            "",
            f"activations   {summary['activations']} in {summary['duration_s']} s "
            f"({summary['throughput_per_s']}/s completed)",
            f"succeeded     {summary['succeeded']}   failed {summary['failed']}   "
            f"throttled {summary['throttled']}",
            f"latency       p50 {latency['p50']} ms   p99 {latency['p99']} ms",
            f"starts        cold {starts['cold']}   warm {starts['warm']}   "
            f"resumed {starts['resumed']}   prewarm {starts['prewarm']}",
            f"containers    created {containers['created']}   removed {containers['removed']}   "
            f"peak {containers['peak']}",
            f"API           POST .../actions/hello with a key: {summary['api']['with_key']}   "
            f"without: {summary['api']['without_key']}",
        ]
    )
