"""`broker-sched bench chaos`: one fault at a time under steady open-loop load.

Each run starts a fresh deployment — a controller process with its HTTP API and two
invoker processes (`broker-sched run --role ...`), or for the in-process memory
transport the embedded stack — sends blocking and non-blocking invocations at a fixed
rate, injects one fault while work is in flight, keeps the load going, then waits for
every accepted activation to finish. An observer in this process listens on the
controller's results channel (a fan-out channel, so it gets a copy of every result,
reruns included) and afterwards the activation records are read back from the store.
`chaos_accounting.account` turns those records into the table this prints, and
`invocation_checker.check` judges every invocation from the client's history, the
handler's own history of executions (the action appends them to a file of the run)
and the results: ok, duplicated, lost or unknown, and how soon after the fault healed
the action's backlog had a consumer.

Faults:
    invoker-kill      SIGKILL an invoker (its containers die with it)
    invoker-pause     SIGSTOP an invoker past its heartbeat expiry, then SIGCONT
    container-crash   SIGKILL the container processes of one invoker
    container-pause   SIGSTOP the container processes of one invoker past the
                      redelivery window (a frozen container), then SIGCONT
    controller-kill   SIGKILL the controller with calls outstanding, restart it
    controller-pause  SIGSTOP the controller (a GC pause, a VM migration) with calls
                      outstanding, then SIGCONT: it wakes to stale state
    broker-kill       SIGKILL a broker node (``--broker-node``, a `brokers.sh` name;
                      default: the transport's own, `redis`, `nats` or `kafka`),
                      restart it after ``outage_s`` with `brokers.sh up`
    ROLE-net-TOXIC    for ``pause_s``, a network fault between the controller or one
                      invoker (ROLE) and its broker, through a Toxiproxy proxy that
                      only that process uses (``--toxiproxy``; Redis and NATS, whose
                      clients stay on the address they are given): TOXIC is latency,
                      timeout (silence), reset, slicer or bandwidth (`bench.toxiproxy`)

`broker-kill` only touches brokers of the state directory named by
``BROKER_SCHED_STATE_DIR``, which must be set: the bench kills what that directory's
pid file names, so it never reaches brokers it was not pointed at.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import JsonValue

from broker_sched.bench.chaos_accounting import SUCCESS, Accounting, Call, Seen, account
from broker_sched.bench.invocation_checker import (
    TABLE_HEADER,
    Checked,
    Verdict,
    check,
    parse_executions,
    table_row,
)
from broker_sched.bench.toxiproxy import DEFAULT_API_PORT, TOXICS, Toxiproxy
from broker_sched.config import ENV_PREFIX, Settings, load_settings
from broker_sched.errors import BrokerSchedError, BrokerUnavailable, ConfigError, MalformedMessage
from broker_sched.model import Action, ActivationResult, Heartbeat, Status, decode
from broker_sched.stack import Stack
from broker_sched.topology import HEARTBEATS, results_channel
from transports.base import Transport
from transports.registry import transport_from_settings

PROCESS_FAULTS = (
    "invoker-kill",
    "invoker-pause",
    "container-crash",
    "container-pause",
    "controller-kill",
    "controller-pause",
)
NETWORK_FAULTS = tuple(
    f"{role}-net-{toxic}" for role in ("invoker", "controller") for toxic in TOXICS
)
FAULTS = (*PROCESS_FAULTS, "broker-kill", *NETWORK_FAULTS)
PROXIED_SETTING = {"redis": ("redis", "url"), "nats": ("nats", "servers")}
"""Where each transport that network faults apply to takes its broker's address. (A
Kafka client follows the addresses the brokers advertise, past any proxy.)"""
IN_PROCESS_FAULTS = ("container-crash", "container-pause")
"""What applies to the in-process memory transport, where nothing else is a process."""
INVOKERS = 2
HTTP_THREADS = 128
STATE_DIR_ENV = "BROKER_SCHED_STATE_DIR"


@dataclass(frozen=True)
class ChaosPlan:
    rate_per_s: float
    warmup_s: float
    """Load before the steady window: cold starts, not counted in the steady p99."""
    steady_s: float
    after_s: float
    """Load after the fault is injected."""
    drain_s: float
    """At most this long after the load for the last accepted activations to finish."""
    run_ms: float
    pause_s: float
    outage_s: float
    ready_timeout_s: float = 60.0


QUICK = ChaosPlan(
    rate_per_s=30, warmup_s=3.0, steady_s=2.0, after_s=6.0, drain_s=25.0, run_ms=100,
    pause_s=3.0, outage_s=2.0,
)  # fmt: skip
FULL = ChaosPlan(
    rate_per_s=60, warmup_s=3.0, steady_s=5.0, after_s=25.0, drain_s=60.0, run_ms=100,
    pause_s=5.0, outage_s=5.0,
)  # fmt: skip


@dataclass(frozen=True)
class Row:
    transport: str
    fault: str
    accounting: Accounting
    checked: Checked
    notes: list[str] = field(default_factory=list)


def overrides(
    transport: str, controller_id: str, action: Action, plan: ChaosPlan
) -> dict[str, Any]:
    """Settings every process of a run shares on top of the user's: short failure
    detection (heartbeats, redelivery timeouts) so a fault resolves within the run, no
    API keys or namespace limits in the way of the load."""
    return {
        "transport": transport,
        "runtime": "process",
        "controller_id": controller_id,
        "invocation_timeout_s": plan.drain_s,
        "actions": [action.model_dump(mode="json")],
        "api": {
            "auth": False,
            "invocations_per_minute": 1_000_000,
            "concurrent_invocations": 100_000,
        },
        "invoker": {"heartbeat_interval_s": 0.3, "keep_alive_s": 300.0, "pause_grace_s": 300.0},
        "scheduler": {"create_timeout_s": 5.0},
        "redis": {"claim_min_idle_ms": 2_000},
        "nats": {"ack_wait_s": 2.0},
        "kafka": {
            "default_partitions": action.max_containers,
            "session_timeout_ms": 6_000,
            "heartbeat_interval_ms": 1_000,
            "rebalance_timeout_ms": 6_000,
        },
        "memory": {"ack_wait_s": 2.0},
    }


def as_env(values: Mapping[str, Any], prefix: str = ENV_PREFIX) -> dict[str, str]:
    """Nested settings as the ``BROKER_SCHED_*`` variables a child process reads."""
    env: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key.upper()}"
        if isinstance(value, Mapping):
            env |= as_env(value, f"{name}__")
        elif isinstance(value, str):
            env[name] = value
        else:
            env[name] = json.dumps(value)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -------------------------------------------------------------------- the load


def http_call(url: str, payload: bytes, timeout_s: float) -> tuple[int, Any, str]:
    """One POST (run in a thread): status (0: no answer), the JSON body, an error text."""
    request = urllib.request.Request(
        url, data=payload, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read()), ""
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError):
            text = str(json.loads(text).get("error", text))
        return exc.code, None, text
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return 0, None, f"controller unreachable ({type(reason).__name__})"


def short_reason(status: int, text: str) -> str:
    """A reason that groups: the status and the error's first words, no ids."""
    words = [w for w in text.split() if not any(ch.isdigit() for ch in w)][:5]
    head = f"HTTP {status}" if status else ""
    return " ".join([head, *words]).strip() or "no answer"


Invoke = Callable[[int, bool, float], Coroutine[Any, Any, Call]]


def http_invoker(
    api: str, action: Action, run_ms: float, timeout_s: float, executions: Path
) -> Invoke:
    executor = ThreadPoolExecutor(HTTP_THREADS, thread_name_prefix="chaos-http")
    base = f"http://{api}/api/v1/namespaces/{action.namespace}/actions/{action.name}"

    async def invoke(seq: int, blocking: bool, sent_s: float) -> Call:
        url = f"{base}?blocking={'true' if blocking else 'false'}"
        body = json.dumps({"seq": seq, "ms": run_ms, "executions": str(executions)}).encode()
        loop = asyncio.get_running_loop()
        status, answer, text = await loop.run_in_executor(executor, http_call, url, body, timeout_s)
        answered_s = time.monotonic()
        if status == 202 and isinstance(answer, dict):
            return Call(seq, sent_s, blocking, True, answer.get("activationId"), None, answered_s)
        if status in (200, 502) and isinstance(answer, dict):
            return Call(seq, sent_s, blocking, True, answer.get("activation_id"), None, answered_s)
        if status == 504:  # published, but no result came in time
            return Call(seq, sent_s, blocking, True, None, short_reason(status, text), answered_s)
        reason = short_reason(status, text)
        certain = status in (400, 401, 403, 404, 429) or "ConnectionRefused" in text
        return Call(seq, sent_s, blocking, False, None, reason, answered_s, not certain)

    return invoke


def stack_invoker(stack: Stack, action: Action, run_ms: float, executions: Path) -> Invoke:
    controller = stack.controller
    assert controller is not None

    async def invoke(seq: int, blocking: bool, sent_s: float) -> Call:
        payload: JsonValue = {"seq": seq, "ms": run_ms, "executions": str(executions)}
        try:
            if blocking:
                result = await controller.invoke(action.fqn, payload)
                activation_id = result.activation_id
            else:
                activation_id = await controller.invoke(action.fqn, payload, blocking=False)
        except BrokerSchedError as exc:
            reason = short_reason(0, f"{type(exc).__name__}: {exc}")
            maybe = isinstance(exc, BrokerUnavailable)
            return Call(seq, sent_s, blocking, False, None, reason, time.monotonic(), maybe)
        return Call(seq, sent_s, blocking, True, activation_id, None, time.monotonic())

    return invoke


@dataclass(frozen=True)
class LoadRun:
    calls: list[Call]
    fault_s: float
    healed_s: float
    """When the fault's coroutine ended: the process resumed or restarted, the broker
    back up; for a kill with nothing restarted, the kill itself."""
    notes: list[str]


async def open_loop(
    invoke: Invoke, plan: ChaosPlan, fault: Callable[[], Awaitable[None]]
) -> LoadRun:
    """Send at ``rate_per_s`` regardless of answers; inject the fault mid-way."""
    total = int(plan.rate_per_s * (plan.warmup_s + plan.steady_s + plan.after_s))
    start = time.monotonic()
    fault_at = start + plan.warmup_s + plan.steady_s
    notes: list[str] = []
    healed_at = fault_at

    async def injected() -> None:
        nonlocal healed_at
        await asyncio.sleep(fault_at - time.monotonic())
        try:
            await fault()
        except (OSError, BrokerSchedError, TimeoutError) as exc:
            notes.append(f"fault failed: {type(exc).__name__}: {exc}")
        healed_at = time.monotonic()

    fault_task = asyncio.create_task(injected())
    calls: list[asyncio.Task[Call]] = []
    for seq in range(total):
        await asyncio.sleep(max(0.0, start + seq / plan.rate_per_s - time.monotonic()))
        calls.append(asyncio.create_task(invoke(seq, seq % 2 == 0, time.monotonic())))
    await fault_task
    return LoadRun(list(await asyncio.gather(*calls)), fault_at, healed_at, notes)


# ------------------------------------------------------------------ observing


class Observer:
    """Every result message on the controller's results channel, and the heartbeats."""

    def __init__(self, transport: Transport, controller_id: str) -> None:
        self.transport = transport
        self.channel = results_channel(controller_id)
        self.seen: list[Seen] = []
        self.invokers: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> None:
        """Return once ``condition`` holds, re-checked on every message observed."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def start(self) -> None:
        results = await self.transport.listen(self.channel)
        beats = await self.transport.listen(HEARTBEATS)
        self._tasks = [
            asyncio.create_task(self._drain(results, self._on_result)),
            asyncio.create_task(self._drain(beats, self._on_heartbeat)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _drain(self, listener: Any, handle: Callable[[bytes], None]) -> None:
        try:
            while True:
                try:
                    body = await listener.receive(0.5)
                except BrokerUnavailable:
                    await asyncio.sleep(0.2)
                    continue
                if body is not None:
                    with contextlib.suppress(MalformedMessage):
                        handle(body)
                    self._changed.set()
        finally:
            with contextlib.suppress(Exception):
                await listener.close()

    def _on_result(self, body: bytes) -> None:
        result = decode(ActivationResult, body)
        self.seen.append(
            Seen(
                activation_id=result.activation_id,
                status=str(result.status),
                at_s=time.monotonic(),
                seq=_seq_of(result),
                error=result.error,
            )
        )

    def _on_heartbeat(self, body: bytes) -> None:
        self.invokers.add(decode(Heartbeat, body).invoker_id)

    def finished(self, calls: list[Call]) -> bool:
        seqs = {s.seq for s in self.seen}
        ids = {s.activation_id for s in self.seen}
        return all(
            c.seq in seqs or c.activation_id in ids
            for c in calls
            if c.accepted and (c.activation_id or c.blocking)
        )


async def recorded(
    transport: Transport, namespace: str, limit: int
) -> dict[str, tuple[int | None, bool]]:
    """The activation ids with a record, the ``seq`` its result echoes and whether it is
    a success: the run's namespace is its own, so its newest ``limit`` records are all
    of its records, read in one listing."""
    bodies = await transport.recent_records(namespace, limit)
    found: dict[str, tuple[int | None, bool]] = {}
    for body in bodies:
        with contextlib.suppress(MalformedMessage):
            result = decode(ActivationResult, body)
            found[result.activation_id] = (_seq_of(result), result.status == Status.SUCCESS)
    return found


def _seq_of(result: ActivationResult) -> int | None:
    seq = result.result.get("seq") if isinstance(result.result, dict) else None
    return seq if isinstance(seq, int) else None


# ------------------------------------------------------------------ processes


@dataclass
class Deployment:
    """The processes of one run: a controller with its API and the invokers."""

    config: Path | None
    env: dict[str, str]
    logs: Path
    api: str
    controller: asyncio.subprocess.Process | None = None
    invokers: list[asyncio.subprocess.Process] = field(default_factory=list)
    process_env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Settings of one process only, by name (``controller`` or an invoker id)."""

    async def _spawn(
        self, name: str, role: str, extra: dict[str, str]
    ) -> asyncio.subprocess.Process:
        command = [sys.executable, "-m", "broker_sched.cli"]
        if self.config is not None:
            command += ["--config", str(self.config)]
        api = self.api if role == "controller" else "off"
        command += ["run", "--role", role, "--api", api]
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env |= {k: v for k, v in os.environ.items() if k == STATE_DIR_ENV}
        with (self.logs / f"{name}.log").open("ab") as log:
            return await asyncio.create_subprocess_exec(
                *command,
                env={**env, **self.env, **self.process_env.get(name, {}), **extra},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )

    async def start_controller(self, timeout_s: float) -> None:
        self.controller = await self._spawn("controller", "controller", {})
        deadline = time.monotonic() + timeout_s
        while not await asyncio.to_thread(_healthy, self.api):
            if self.controller.returncode is not None or time.monotonic() > deadline:
                raise BrokerSchedError(
                    f"chaos: the controller did not come up (log: {self.logs}/controller.log)"
                )
            await asyncio.sleep(0.2)

    async def start_invokers(self, ids: list[str]) -> None:
        self.invokers = [
            await self._spawn(invoker_id, "invoker", {f"{ENV_PREFIX}INVOKER__ID": invoker_id})
            for invoker_id in ids
        ]

    async def stop(self) -> None:
        for process in [self.controller, *self.invokers]:
            if process is None or process.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGCONT)
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


def _healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{api}/health", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


@dataclass(frozen=True)
class BrokerNode:
    """A broker process `brokers.sh` started in a state directory this bench may kill in."""

    name: str
    script: Path
    state_dir: Path

    @classmethod
    def from_env(cls, name: str, script: Path) -> BrokerNode:
        state_dir = os.environ.get(STATE_DIR_ENV)
        if not state_dir:
            raise ConfigError(
                f"broker-kill: set {STATE_DIR_ENV} to the state directory of the brokers "
                "it may kill (brokers started for this, never shared ones)"
            )
        if not script.is_file():
            raise ConfigError(f"broker-kill: {script} not found (--brokers-sh)")
        return cls(name, script, Path(state_dir))

    def pid(self) -> int:
        path = self.state_dir / "run" / f"{self.name}.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"broker-kill: no running broker {self.name!r} ({path})") from exc

    async def restart(self) -> None:
        process = await asyncio.create_subprocess_exec(
            "bash", str(self.script), "up", self.name,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await process.communicate()
        if process.returncode:
            raise BrokerSchedError(f"brokers.sh up {self.name} failed: {err.decode()[-500:]}")


@dataclass(frozen=True)
class Proxied:
    """A Toxiproxy proxy that one process of the run reaches its broker through."""

    toxiproxy: Toxiproxy
    name: str

    async def create(self, upstream: str) -> str:
        """Create the proxy on a free loopback port; that address."""
        listen = f"127.0.0.1:{free_port()}"
        await asyncio.to_thread(self.toxiproxy.create_proxy, self.name, listen, upstream)
        return listen

    async def delete(self) -> None:
        with contextlib.suppress(BrokerSchedError):
            await asyncio.to_thread(self.toxiproxy.delete_proxy, self.name)


def broker_address(settings: Settings, transport: str) -> tuple[str, str, str]:
    """The variable that sets ``transport``'s broker address, its value, and the
    broker's ``host:port`` in it (the first, for a list): what a proxy forwards to and
    what the value has in its place for a process to go through the proxy."""
    if transport not in PROXIED_SETTING:
        known = ", ".join(PROXIED_SETTING)
        raise ConfigError(f"network faults apply to {known}, not the {transport} transport")
    section, key = PROXIED_SETTING[transport]
    value = str(getattr(getattr(settings, section), key)).split(",")[0].strip()
    parts = urlsplit(value if "://" in value else f"//{value}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ConfigError(f"{section}.{key}: {value!r} needs host:port for a network fault")
    return f"{ENV_PREFIX}{section.upper()}__{key.upper()}", value, f"{parts.hostname}:{port}"


def fault_action(
    fault: str,
    deployment: Deployment | None,
    plan: ChaosPlan,
    node: BrokerNode | None,
    proxied: Proxied | None = None,
) -> Callable[[], Awaitable[None]]:
    """The fault as a coroutine function; in-process (``deployment`` None) only crashes."""

    async def invoker_kill() -> None:
        assert deployment is not None
        os.killpg(deployment.invokers[0].pid, signal.SIGKILL)

    async def invoker_pause() -> None:
        assert deployment is not None
        os.killpg(deployment.invokers[0].pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(plan.pause_s)
        finally:
            os.killpg(deployment.invokers[0].pid, signal.SIGCONT)

    async def controller_pause() -> None:
        assert deployment is not None
        assert deployment.controller is not None
        os.killpg(deployment.controller.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(plan.pause_s)
        finally:
            os.killpg(deployment.controller.pid, signal.SIGCONT)

    def containers() -> list[int]:
        parent = deployment.invokers[0].pid if deployment is not None else os.getpid()
        pids = children(parent)
        if not pids:
            raise BrokerSchedError(f"{fault}: no container process")
        return pids

    def signal_all(pids: list[int], signum: signal.Signals) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    async def container_crash() -> None:
        signal_all(containers(), signal.SIGKILL)

    async def container_pause() -> None:
        pids = containers()
        signal_all(pids, signal.SIGSTOP)
        try:
            await asyncio.sleep(plan.pause_s)
        finally:
            signal_all(pids, signal.SIGCONT)

    async def controller_kill() -> None:
        assert deployment is not None
        assert deployment.controller is not None
        os.killpg(deployment.controller.pid, signal.SIGKILL)
        await deployment.controller.wait()
        await deployment.start_controller(plan.ready_timeout_s)

    async def broker_kill() -> None:
        assert node is not None
        os.kill(node.pid(), signal.SIGKILL)
        await asyncio.sleep(plan.outage_s)
        await node.restart()

    async def network() -> None:
        assert proxied is not None
        api = proxied.toxiproxy
        names = await asyncio.to_thread(api.add_toxic, proxied.name, fault.split("-net-")[1])
        try:
            await asyncio.sleep(plan.pause_s)
        finally:
            for name in names:
                await asyncio.to_thread(api.remove_toxic, proxied.name, name)

    if fault in NETWORK_FAULTS:
        return network
    return {
        "invoker-kill": invoker_kill,
        "invoker-pause": invoker_pause,
        "container-crash": container_crash,
        "container-pause": container_pause,
        "controller-kill": controller_kill,
        "controller-pause": controller_pause,
        "broker-kill": broker_kill,
    }[fault]


# ------------------------------------------------------------------ one run


async def run_fault(
    config: Path | None,
    transport: str,
    fault: str,
    plan: ChaosPlan,
    node: BrokerNode | None,
    logs: Path,
    toxiproxy: Toxiproxy | None = None,
) -> Row:
    token = f"{os.getpid()}-{time.monotonic_ns() % 10**9}"
    controller_id = f"chaos-{token}"
    action = Action(
        name=f"chaos-{fault}",
        namespace=f"chaos-{token}",
        handler="broker_sched.bench.chaos_action:tagged_sleep",
        max_containers=8,
    )
    values = overrides(transport, controller_id, action, plan)
    settings = load_settings(config, **values)
    executions = logs / f"executions-{token}.jsonl"
    observing = transport_from_settings(settings)
    await observing.connect()
    observer = Observer(observing, controller_id)
    deployment: Deployment | None = None
    proxied = None
    if fault in NETWORK_FAULTS:
        if toxiproxy is None:
            raise ConfigError(f"{fault}: a network fault needs Toxiproxy (--toxiproxy)")
        proxied = Proxied(toxiproxy, f"chaos-{token}")
    try:
        await observer.start()
        if transport == "memory":
            return await _in_process(settings, action, fault, plan, observer, executions)
        await _prepare(observing, settings, action, plan.ready_timeout_s)
        deployment = Deployment(config, as_env(values), logs, f"127.0.0.1:{free_port()}")
        invoker_ids = [f"{controller_id}-inv{i}" for i in range(INVOKERS)]
        if proxied is not None:
            variable, value, upstream = broker_address(settings, transport)
            listen = await proxied.create(upstream)
            role = "controller" if fault.startswith("controller") else invoker_ids[0]
            deployment.process_env[role] = {variable: value.replace(upstream, listen)}
        await deployment.start_invokers(invoker_ids)
        await deployment.start_controller(plan.ready_timeout_s)
        await observer.wait_until(
            lambda: observer.invokers >= set(invoker_ids), plan.ready_timeout_s
        )
        await asyncio.sleep(3 * settings.invoker.heartbeat_interval_s)  # the controller's view
        invoke = http_invoker(deployment.api, action, plan.run_ms, plan.drain_s + 5, executions)
        load = await open_loop(invoke, plan, fault_action(fault, deployment, plan, node, proxied))
        return await _settle(observing, observer, load, action, plan, settings, executions, fault)
    finally:
        if deployment is not None:
            await deployment.stop()
        if proxied is not None:
            await proxied.delete()
        await observer.stop()
        with contextlib.suppress(BrokerSchedError):
            await observing.delete(settings.queue_name(action.namespace, action.name))
        await observing.close()


async def _prepare(
    transport: Transport, settings: Settings, action: Action, timeout_s: float
) -> None:
    """Create the queue and the records store before the load, as a deployment has them
    long before its first fault: on a cluster their creation (a leader election) is
    slow and would otherwise be measured as the steady state."""
    queue = settings.queue_name(action.namespace, action.name)
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                await transport.declare(queue, action.max_containers)
                await transport.put_record(action.namespace, "chaos-probe", b"{}", 60.0)
                return
            except BrokerSchedError:
                await asyncio.sleep(0.5)


async def _in_process(
    settings: Settings,
    action: Action,
    fault: str,
    plan: ChaosPlan,
    observer: Observer,
    executions: Path,
) -> Row:
    async with Stack(settings, invokers=INVOKERS, transport=observer.transport) as stack:
        assert stack.controller is not None
        invoke = stack_invoker(stack, action, plan.run_ms, executions)
        load = await open_loop(invoke, plan, fault_action(fault, None, plan, None))
        return await _settle(
            stack.transport, observer, load, action, plan, settings, executions, fault
        )


async def _settle(
    transport: Transport,
    observer: Observer,
    load: LoadRun,
    action: Action,
    plan: ChaosPlan,
    settings: Settings,
    executions: Path,
    fault: str,
) -> Row:
    """Wait (bounded) for every accepted activation's result, then account and check."""
    calls = load.calls
    with contextlib.suppress(TimeoutError):
        await observer.wait_until(lambda: observer.finished(calls), plan.drain_s)
    await asyncio.sleep(1.0)  # late copies (duplicates)
    ids = {c.activation_id for c in calls if c.activation_id} | {
        s.activation_id for s in observer.seen
    }
    records = await recorded(transport, action.namespace, 2 * len(ids) + 10)
    start = min(c.sent_s for c in calls)
    accounting = account(
        calls,
        list(observer.seen),
        set(records),
        fault_s=load.fault_s,
        warmup_s=start + plan.warmup_s,
    )
    seq_of_id = {c.activation_id: c.seq for c in calls if c.activation_id}
    answered = {s.seq for s in observer.seen} | {
        seq_of_id.get(i, seq) for i, (seq, _) in records.items()
    }
    failed = {s.seq for s in observer.seen if s.status != SUCCESS} | {
        seq_of_id.get(i, seq) for i, (seq, success) in records.items() if not success
    }
    lines = await asyncio.to_thread(_read_lines, executions)
    checked = check(
        calls,
        parse_executions(lines),
        {seq for seq in answered if seq is not None},
        fault_s=load.fault_s,
        healed_s=load.healed_s,
        tick_s=settings.scheduler.check_interval_s,
        failures=frozenset(seq for seq in failed if seq is not None),
    )
    return Row(settings.transport, fault, accounting, checked, load.notes)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


# ------------------------------------------------------------------ the command


def format_rows(rows: list[Row]) -> str:
    header = (
        f"{'transport':<10} {'fault':<16} {'sent':>5} {'accepted':>8} {'completed':>9} "
        f"{'failed':>6} {'refused':>7} {'lost':>4} {'dupes':>5} {'unrecorded':>10} "
        f"{'steady p99 ms':>13} {'recovery s':>10} {'refused in s':>12}"
    )
    lines = [header]
    for row in rows:
        a = row.accounting
        lines.append(
            f"{row.transport:<10} {row.fault:<16} {a.sent:>5} {a.accepted:>8} "
            f"{a.completed:>9} {sum(a.failed.values()):>6} {sum(a.refused.values()):>7} "
            f"{a.lost:>4} {a.duplicates:>5} {a.unrecorded:>10} "
            f"{_ms(a.steady_p99_s):>13} {_s(a.recovery_s):>10} {_within(a.refused_within_s):>12}"
        )
    for row in rows:
        a = row.accounting
        for kind, reasons in (("failed", a.failed), ("refused", a.refused)):
            for reason, count in sorted(reasons.items()):
                lines.append(f"  {row.transport}/{row.fault} {kind} {count}: {reason}")
        series = " ".join(_ms(p) if p != float("inf") else "inf" for p in a.p99_by_second)
        lines.append(f"  {row.transport}/{row.fault} p99 ms by second: {series}")
        if a.lost_seqs:
            lines.append(f"  {row.transport}/{row.fault} lost seqs: {a.lost_seqs[:20]}")
        lines += [f"  {row.transport}/{row.fault} {note}" for note in row.notes]
    return "\n".join(lines)


def format_checked(rows: list[Row]) -> str:
    """The invocation checker's table (markdown), then what it found per row."""
    lines = [TABLE_HEADER, *(table_row(r.transport, r.fault, r.checked) for r in rows)]
    for row in rows:
        c = row.checked
        where = f"  {row.transport}/{row.fault}"
        for verdict in (Verdict.LOST, Verdict.UNKNOWN, Verdict.DUPLICATED):
            if c.count(verdict):
                lines.append(f"{where} {verdict} seqs: {c.seqs(verdict)[:20]}")
        if c.reruns_after_finish:
            lines.append(f"{where} reruns after finish: {c.reruns_after_finish[:20]}")
        if c.results_without_execution:
            lines.append(f"{where} results without execution: {c.results_without_execution[:20]}")
        if not c.live:
            lines.append(f"{where} no consumer within 2 ticks ({2 * c.tick_s:.1f} s) of the heal")
    return "\n".join(lines)


def default_toxiproxy() -> str:
    """Toxiproxy's API where `brokers.sh up toxiproxy` starts it (``TOXIPROXY_PORT``)."""
    return f"127.0.0.1:{os.environ.get('TOXIPROXY_PORT', DEFAULT_API_PORT)}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def _s(value: float | None) -> str:
    return "not back" if value is None else f"{value:.1f}"


def _within(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def parse_faults(text: str | None, transport: str) -> list[str]:
    if transport == "memory":
        applicable: tuple[str, ...] = IN_PROCESS_FAULTS
    elif transport in PROXIED_SETTING:
        applicable = FAULTS
    else:
        applicable = (*PROCESS_FAULTS, "broker-kill")
    if text is None:
        return [f for f in applicable if f in PROCESS_FAULTS]
    if text == "all":
        return list(applicable)
    faults = [f.strip() for f in text.split(",") if f.strip()]
    for fault in faults:
        if fault not in FAULTS:
            raise ConfigError(f"unknown fault {fault!r} (known: {', '.join(FAULTS)})")
        if fault not in applicable:
            raise ConfigError(f"fault {fault!r} does not apply to the {transport} transport")
    return faults


async def chaos_command(
    *,
    config: Path | None,
    transports: list[str],
    faults: str | None,
    broker_node: str | None,
    brokers_sh: Path,
    quick: bool,
    json_output: bool,
    out: Path,
    toxiproxy: str | None = None,
) -> int:
    """Run every fault on every transport; exit 1 if any accepted activation was lost
    (by the accounting or by the invocation checker)."""
    plan = QUICK if quick else FULL
    planned = [(t, f) for t in transports for f in parse_faults(faults, t)]
    nodes = {
        t: BrokerNode.from_env(broker_node or t, brokers_sh)
        for t, f in planned
        if f == "broker-kill"
    }
    proxy_api = None
    if any(f in NETWORK_FAULTS for _, f in planned):
        proxy_api = Toxiproxy(toxiproxy or default_toxiproxy())
        await asyncio.to_thread(proxy_api.version)  # answers, or one clear line
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    rows = []
    for transport, fault in planned:
        if not json_output:
            print(f"chaos: {transport} {fault} ...", file=sys.stderr, flush=True)
        node = nodes.get(transport)
        rows.append(await run_fault(config, transport, fault, plan, node, out, proxy_api))
        if not json_output:
            print(format_rows(rows[-1:]), file=sys.stderr, flush=True)
    document = json.dumps([asdict(row) for row in rows], indent=2, default=str) + "\n"
    await asyncio.to_thread((out / "chaos.json").write_text, document)
    if json_output:
        print(json.dumps([asdict(row) for row in rows], default=str))
    else:
        print(format_rows(rows))
        print(format_checked(rows))
        print(f"(logs and chaos.json in {out})")
    lost = any(row.accounting.lost or row.checked.count(Verdict.LOST) for row in rows)
    return 1 if lost else 0
