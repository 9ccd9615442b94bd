"""A controller and two invokers under load, scraped by a real Prometheus.

One ``broker-sched run`` process (controller and two invokers, as an operator starts
them, on Redis) with its API and the invokers' ``--metrics`` ports, load from threads
calling the API, and Debian's Prometheus on 127.0.0.1 scraping all three every second
with the shipped rules (compose/prometheus/rules) loaded, on ``$PROMETHEUS_PORT`` or
else a free port. The scrape, dashboard and browser tests share it: it is started once
per session.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from brokers import HOST, REQUIRE_ENV, brokers_required, free_port

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "compose" / "prometheus" / "rules"
INSTALL_HINT = "install it with `bash compose/prometheus/prometheus.sh install`"
AUTH = "5e3b7a10-8c2d-4f6e-9a1b-2c3d4e5f6a7b:observed-secret"
INVOKERS = 2
SCRAPE_INTERVAL_S = 1
READY_TIMEOUT_S = 60.0
DATA_TIMEOUT_S = 90.0

Sample = tuple[dict[str, str], float]


def tool(name: str) -> str:
    """The path of a command the observability tests need; skip (fail in CI) without it."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: {INSTALL_HINT}"
        if brokers_required():
            pytest.fail(f"{message} ({REQUIRE_ENV} is set)", pytrace=False)
        pytest.skip(message)
    return path


def basic(auth: str = AUTH) -> dict[str, str]:
    return {"Authorization": "Basic " + b64encode(auth.encode()).decode()}


def get(url: str, headers: dict[str, str] | None = None, timeout_s: float = 10.0) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        body: bytes = response.read()
        return body


def await_condition(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.25)


@dataclass
class Observed:
    api: str
    prometheus: str
    invoker_metrics: list[str]
    log: Path
    load_calls: dict[str, int] = field(default_factory=dict)

    def query(self, expr: str) -> list[Sample]:
        """An instant query through Prometheus' HTTP API."""
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        answer = json.loads(get(url))
        assert answer["status"] == "success", answer
        data = answer["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    def await_data(self, expr: str, timeout_s: float = DATA_TIMEOUT_S) -> list[Sample]:
        """The query's samples once one of them is a number (a quantile of a label set
        with no recent observations is NaN beside the others)."""
        found: list[Sample] = []

        def answered() -> bool:
            nonlocal found
            found = self.query(expr)
            return any(math.isfinite(value) for _, value in found)

        try:
            await_condition(answered, timeout_s, f"data for {expr!r}")
        except AssertionError:
            raise AssertionError(
                f"{expr!r} returned no finite data in {timeout_s:.0f} s: {found}; "
                f"controller log {self.log}"
            ) from None
        return found

    def metrics(self) -> str:
        return get(self.api + "/metrics").decode()


def write_config(path: Path, redis_url: str, state: Path) -> None:
    token = f"obs{os.getpid()}x{int(time.time()) % 100_000}"
    path.write_text(
        f"""transport = "redis"
queue_template = "{token}-{{namespace}}-{{action}}"

[redis]
url = "{redis_url}"

[invoker]
slots = 6
heartbeat_interval_s = 0.5
keep_alive_s = 120.0
pause_grace_s = 60.0

[api]
invocations_per_minute = 1000000
concurrent_invocations = 10000
keys_file = "{state / "api-keys.json"}"
auth_file = "{state / "wskprops"}"

[api.keys]
guest = "{AUTH}"

[[actions]]
name = "steady"
handler = "broker_sched.samples:sleep"
max_containers = 3

[[actions]]
name = "bursty"
handler = "broker_sched.samples:sleep"
max_containers = 1
"""
    )


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (the invokers' metrics)."""
    for _ in range(50):
        first = free_port()
        if all(_free(first + n) for n in range(1, count)):
            return first
    raise AssertionError(f"no {count} consecutive free ports on {HOST}")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def start_stack(
    config: Path, api_port: int, metrics_port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_SCHED_")}
    command = [sys.executable, "-m", "broker_sched.cli", "--config", str(config), "run"]
    command += ["--role", "all", "--invokers", str(INVOKERS)]
    command += ["--api", f"{HOST}:{api_port}", "--metrics", f"{HOST}:{metrics_port}"]
    with log.open("wb") as output:
        return subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def start_prometheus(
    binary: str, directory: Path, port: int, controller: str, invokers: list[str]
) -> subprocess.Popen[bytes]:
    config = directory / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {
                    "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                    "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
                },
                "rule_files": [str(RULES / "*.yml")],
                "scrape_configs": [
                    {
                        "job_name": "broker-sched-controller",
                        "static_configs": [{"targets": [controller]}],
                    },
                    {
                        "job_name": "broker-sched-invoker",
                        "static_configs": [{"targets": invokers}],
                    },
                ],
            }
        )
    )
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address={HOST}:{port}",
    ]
    with (directory / "prometheus.log").open("wb") as output:
        return subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


class Load:
    """Threads invoking through the API until stopped: blocking calls of ``steady``
    (three callers, 100 ms each) and non-blocking ones of ``bursty`` (one container,
    250 ms each, 8 a second: a backlog that grows until the scheduler throttles it)."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.stopping = threading.Event()
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._call, args=("steady", True, 0.0, 100), daemon=True)
            for _ in range(3)
        ]
        self._threads.append(
            threading.Thread(target=self._call, args=("bursty", False, 0.125, 250), daemon=True)
        )

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(60)

    def _call(self, action: str, blocking: bool, pause_s: float, ms: int) -> None:
        url = f"{self.api}/api/v1/namespaces/_/actions/{action}?blocking={str(blocking).lower()}"
        body = json.dumps({"ms": ms}).encode()
        headers = {**basic(), "Content-Type": "application/json"}
        while not self.stopping.is_set():
            request = urllib.request.Request(url, data=body, method="POST", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    code = response.status
            except urllib.error.HTTPError as exc:
                code = exc.code
            except OSError:
                code = 0
            with self._lock:
                key = f"{action} {code}"
                self.calls[key] = self.calls.get(key, 0) + 1
            self.stopping.wait(pause_s)


def observed_stack(redis_url: str, directory: Path) -> Iterator[Observed]:
    """Run the stack, Prometheus and the load; yield once Prometheus scrapes all three
    targets and the load has run a first round."""
    prometheus_binary = tool("prometheus")
    config = directory / "deploy.toml"
    write_config(config, redis_url, directory)
    api_port = free_port()
    metrics_port = consecutive_free_ports(INVOKERS)
    log = directory / "stack.log"
    stack = start_stack(config, api_port, metrics_port, log)
    api = f"http://{HOST}:{api_port}"
    invokers = [f"{HOST}:{metrics_port + n}" for n in range(INVOKERS)]
    prometheus_port = int(os.environ.get("PROMETHEUS_PORT") or free_port())
    prometheus: subprocess.Popen[bytes] | None = None
    try:

        def serving() -> bool:
            assert stack.poll() is None, f"broker-sched run exited: {log.read_text()[-2000:]}"
            try:
                get(api + "/health", timeout_s=2)
                for address in invokers:
                    get(f"http://{address}/metrics", timeout_s=2)
            except OSError:
                return False
            return True

        await_condition(serving, READY_TIMEOUT_S, "broker-sched run serving")
        prometheus = start_prometheus(
            prometheus_binary, directory, prometheus_port, f"{HOST}:{api_port}", invokers
        )
        observed = Observed(
            api=api,
            prometheus=f"http://{HOST}:{prometheus_port}",
            invoker_metrics=[f"http://{address}/metrics" for address in invokers],
            log=log,
        )

        def scraping() -> bool:
            assert prometheus is not None
            assert prometheus.poll() is None, (
                f"prometheus exited: {(directory / 'prometheus.log').read_text()[-2000:]}"
            )
            try:
                up = observed.query("up == 1")
            except OSError:
                return False
            return len(up) == 1 + INVOKERS

        await_condition(scraping, READY_TIMEOUT_S, "prometheus scraping every target")
        with Load(api) as load:
            observed.load_calls = load.calls
            await_condition(lambda: bool(load.calls), READY_TIMEOUT_S, "a first call answered")
            yield observed
    finally:
        if prometheus is not None:
            stop(prometheus)
        stop(stack)
