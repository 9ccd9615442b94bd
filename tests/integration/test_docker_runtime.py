"""The docker runtime against a real engine, end to end on the real brokers, and its
action server in-process.

Docker tests need an engine (``compose/images/engine.sh``) and the local images
(``compose/images/build.sh``); without them they are skipped, or fail when
``BROKER_SCHED_REQUIRE_BROKERS`` is set. The action-server tests at the end run the
server on a thread in this process and need nothing.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from brokers import REQUIRE_ENV, brokers_required
from embedded import embedded_settings, eventually

from broker_sched.bench.docker_ops import BENCH_LABEL, measure_docker_ops, simulated_costs
from broker_sched.config import Settings, SimulatedRuntimeSettings, load_settings
from broker_sched.model import Action, Start, Status
from broker_sched.runtime import docker as docker_runtime
from broker_sched.runtime import runtime_from_settings
from broker_sched.runtime.action_server import Action as ServedAction
from broker_sched.runtime.action_server import MainThread, Server
from broker_sched.runtime.base import ContainerCrashed
from broker_sched.runtime.docker import (
    DEFAULT_IMAGE,
    Docker,
    DockerRuntime,
    _post_json,
    _ServerGone,
)
from broker_sched.stack import Stack

BENCH_IMAGE = "broker-sched/debian:bookworm"


def _docker_problem() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "the docker CLI is not installed"
    engine = subprocess.run(
        [docker, "version", "-f", "{{.Server.Version}}"], capture_output=True, timeout=20
    )
    if engine.returncode != 0:
        return "no Docker engine answers; start one with `bash compose/images/engine.sh`"
    for image in (DEFAULT_IMAGE, BENCH_IMAGE):
        inspect = subprocess.run([docker, "image", "inspect", image], capture_output=True)
        if inspect.returncode != 0:
            return f"image {image} is missing; build it with `bash compose/images/build.sh`"
    return None


@pytest.fixture(scope="module")
def docker_engine() -> None:
    problem = _docker_problem()
    if problem is None:
        return
    if brokers_required():
        pytest.fail(f"{problem} ({REQUIRE_ENV} is set)", pytrace=False)
    pytest.skip(problem)


@pytest.fixture
async def runtime(docker_engine: None) -> AsyncIterator[DockerRuntime]:
    docker_runtime = DockerRuntime(init_timeout_s=30)
    yield docker_runtime
    await docker_runtime.close()


async def containers_labelled(label: str) -> list[str]:
    docker = Docker(shutil.which("docker") or "docker")
    return (await docker("ps", "-aq", "--filter", f"label={label}")).split()


async def container_exists(name: str) -> bool:
    docker = Docker(shutil.which("docker") or "docker")
    return bool((await docker("ps", "-aq", "--filter", f"name=^{name}$")).split())


@pytest.mark.docker
async def test_a_container_lives_through_runs_pause_and_resume(runtime: DockerRuntime) -> None:
    container, timings = await runtime.create(Action(name="echo"))
    assert timings.create_ms > 0
    assert timings.init_ms > 0
    cold = await container.run({"n": 1}, timeout_s=10)
    warm = await container.run({"n": 2}, timeout_s=10)
    assert (cold.status, cold.result) == (Status.SUCCESS, {"n": 1})
    assert (warm.status, warm.result) == (Status.SUCCESS, {"n": 2})

    assert await container.pause() > 0
    assert container.paused
    assert await container.resume() > 0
    assert not container.paused
    after = await container.run(["still", "works"], timeout_s=10)
    assert (after.status, after.result) == (Status.SUCCESS, ["still", "works"])

    assert await container.remove() > 0
    assert await container.remove() == 0.0
    assert not container.alive
    assert not await container_exists(container.id)
    with pytest.raises(ContainerCrashed):
        await container.run({}, timeout_s=10)


@pytest.mark.docker
async def test_concurrent_runs_share_one_container(runtime: DockerRuntime) -> None:
    container, _ = await runtime.create(
        Action(name="sleepy", handler="broker_sched.samples:async_sleep", concurrency=3)
    )
    outcomes = await asyncio.gather(*(container.run({"ms": 50}, timeout_s=10) for _ in range(3)))
    assert [o.status for o in outcomes] == [Status.SUCCESS] * 3


@pytest.mark.docker
async def test_handler_errors_keep_the_container(runtime: DockerRuntime) -> None:
    failing, _ = await runtime.create(Action(name="fail", handler="broker_sched.samples:fail"))
    outcome = await failing.run({}, timeout_s=10)
    assert outcome.status is Status.ACTION_ERROR
    assert outcome.error == "ValueError: sample handler failed on purpose"
    assert failing.alive

    reporting, _ = await runtime.create(
        Action(name="app-error", handler="broker_sched.samples:app_error")
    )
    outcome = await reporting.run({}, timeout_s=10)
    assert outcome.status is Status.APPLICATION_ERROR
    assert outcome.result == {"error": "sample handler reports an application error"}
    assert reporting.alive


@pytest.mark.docker
async def test_a_timeout_kills_the_container(runtime: DockerRuntime) -> None:
    container, _ = await runtime.create(Action(name="hang", handler="broker_sched.samples:hang"))
    outcome = await container.run({}, timeout_s=0.3)
    assert outcome.status is Status.TIMEOUT
    assert outcome.run_ms >= 300
    assert not container.alive
    assert not await container_exists(container.id)


@pytest.mark.docker
async def test_a_run_on_a_paused_container_waits_and_can_time_out(
    runtime: DockerRuntime,
) -> None:
    container, _ = await runtime.create(Action(name="frozen"))
    await container.pause()
    outcome = await container.run({}, timeout_s=0.3)
    assert outcome.status is Status.TIMEOUT
    assert not await container_exists(container.id)


@pytest.mark.docker
async def test_a_taken_port_is_retried_on_another(
    runtime: DockerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        # Bound but not listening: the server cannot bind it, and probes are refused.
        taken.bind(("127.0.0.1", 0))
        taken_port = taken.getsockname()[1]
        ports = iter([taken_port, docker_runtime.free_port()])
        monkeypatch.setattr(docker_runtime, "free_port", lambda: next(ports))
        container, _ = await runtime.create(Action(name="echo"))
    assert isinstance(container, docker_runtime.DockerContainer)
    assert container.port != taken_port
    assert (await container.run("ok", timeout_s=10)).result == "ok"
    assert await containers_labelled(runtime.label) == [container.docker_id[:12]]


@pytest.mark.docker
async def test_a_dying_container_is_reported_with_its_exit_code(runtime: DockerRuntime) -> None:
    container, _ = await runtime.create(Action(name="crash", handler="broker_sched.samples:crash"))
    with pytest.raises(ContainerCrashed, match="exited with code 3"):
        await container.run({}, timeout_s=10)
    assert not container.alive


@pytest.mark.docker
async def test_a_handler_that_cannot_load_fails_the_cold_start(runtime: DockerRuntime) -> None:
    with pytest.raises(ContainerCrashed, match="No module named 'no_such_module'"):
        await runtime.create(Action(name="broken", handler="no_such_module:main"))
    assert await containers_labelled(runtime.label) == []


@pytest.mark.docker
async def test_a_stem_cell_is_a_started_server_that_gets_its_init_later(
    runtime: DockerRuntime,
) -> None:
    cell = await runtime.start_stem_cell("python", 128)
    assert cell.alive
    assert cell.create_ms > 0
    assert len(await containers_labelled(runtime.label)) == 1
    action = Action(name="late", handler="broker_sched.samples:hello", memory_mb=128)
    container, timings = await runtime.initialise(cell, action)
    assert timings.start is Start.PREWARM
    assert timings.create_ms == 0
    assert timings.init_ms > 0
    assert not cell.alive
    outcome = await container.run({"name": "stem"}, 10.0)
    assert outcome.result == {"greeting": "Hello, stem!"}
    spare = await runtime.start_stem_cell("python", 128)
    await spare.remove()
    assert not spare.alive
    await container.remove()
    assert await containers_labelled(runtime.label) == []


@pytest.mark.docker
async def test_a_create_that_times_out_leaves_no_container(docker_engine: None) -> None:
    """`docker run` interrupted by the create timeout: the engine still makes the
    container, and the runtime removes it once the command ends, counting it meanwhile."""
    slow = DockerRuntime(init_timeout_s=0.05)
    try:
        action = Action(name="slow", handler="broker_sched.samples:hello", memory_mb=128)
        with pytest.raises(ContainerCrashed, match="not ready within"):
            await slow.create(action)
        assert slow.abandoned == 1
        await eventually(lambda: not slow.abandoned, 60)
        assert await containers_labelled(slow.label) == []
    finally:
        await slow.close()
    assert await containers_labelled(slow.label) == []


@pytest.mark.docker
async def test_a_missing_image_names_the_build_script(docker_engine: None) -> None:
    runtime = DockerRuntime(image="broker-sched/no-such-image:latest")
    try:
        with pytest.raises(ContainerCrashed, match=r"compose/images/build\.sh"):
            await runtime.create(Action(name="echo"))
    finally:
        await runtime.close()


@pytest.mark.docker
async def test_close_removes_every_container(docker_engine: None) -> None:
    runtime = runtime_from_settings(load_settings(runtime="docker"))
    assert isinstance(runtime, DockerRuntime)
    running, _ = await runtime.create(Action(name="one"))
    paused, _ = await runtime.create(Action(name="two"))
    await paused.pause()
    assert len(await containers_labelled(runtime.label)) == 2
    await runtime.close()
    assert await containers_labelled(runtime.label) == []
    assert not running.alive
    assert not paused.alive
    with pytest.raises(ContainerCrashed, match="closed"):
        await runtime.create(Action(name="three"))


@pytest.mark.docker
async def test_docker_ops_measures_every_operation(docker_engine: None) -> None:
    result = await measure_docker_ops((1, 2), ops_per_level=2, image=BENCH_IMAGE)
    assert [level.concurrency for level in result.levels] == [1, 2]
    for level in result.levels:
        for phase in (level.run_rm, level.pause_unpause):
            assert phase.errors == 0, phase.first_error
            assert phase.cycles == 2
            assert phase.cycles_per_s > 0
            for stats in phase.latency_ms.values():
                assert 0 < stats["p50"] <= stats["max"]
    SimulatedRuntimeSettings.model_validate(simulated_costs(result))
    assert await containers_labelled(BENCH_LABEL) == []


# ------------------------------------------------ end to end on a real broker


@pytest.mark.docker
@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize("broker", ["kafka", "redis", "nats"])
async def test_activations_through_a_broker_run_in_docker_containers(
    broker: str, docker_engine: None, broker_settings: Callable[..., Settings]
) -> None:
    """A burst scales out in real containers; an idle one is paused and resumed by the
    next activation; after the keep-alive every container is gone, from Docker too."""
    uid = uuid.uuid4().hex[:8]
    sleep = Action(name=f"dsleep{uid}", handler="broker_sched.samples:sleep", max_containers=3)
    echo = Action(name=f"decho{uid}", handler="broker_sched.samples:echo", max_containers=1)
    settings = broker_settings(
        broker,
        runtime="docker",
        invoker={"keep_alive_s": 4.0, "pause_grace_s": 0.5, "heartbeat_interval_s": 0.2},
        kafka={"default_partitions": 3},
    )
    stack = Stack(settings, actions={a.fqn: a for a in (sleep, echo)})
    async with stack:
        controller = stack.controller
        assert controller is not None
        assert isinstance(stack.runtime, DockerRuntime)
        label = stack.runtime.label
        burst = [controller.invoke(sleep.name, {"ms": 150}, timeout_s=60) for _ in range(24)]
        burst += [controller.invoke(echo.name, {"i": i}, timeout_s=60) for i in range(8)]
        results = await asyncio.gather(*burst)

        assert Counter(r.status for r in results) == {Status.SUCCESS: len(burst)}
        assert len({r.activation_id for r in results}) == len(burst)
        created = stack.timeline.of_kind("container_created")
        assert 1 < sum(e.action == sleep.fqn for e in created) <= sleep.max_containers
        assert all(e.detail["create_ms"] > 0 and e.detail["init_ms"] > 0 for e in created)
        cold = [r for r in results if r.start is Start.COLD]
        assert cold
        assert all(r.init_ms > 0 for r in cold)
        # A create that timed out on a loaded machine is removed once its `docker run`
        # ends; then the labelled containers are exactly the recorded creations.
        await eventually(lambda: not stack.runtime.abandoned, 30)
        assert len(await containers_labelled(label)) == len(created)

        # The echo container's pause alone: waiting for every container's would let the
        # first paused reach its keep-alive on a loaded machine.
        await eventually(
            lambda: any(e.action == echo.fqn for e in stack.timeline.of_kind("container_paused"))
        )
        resumed = await controller.invoke(echo.name, {"after": "pause"}, timeout_s=30)
        assert resumed.status is Status.SUCCESS
        assert resumed.start is Start.RESUMED
        assert resumed.init_ms > 0, "a resumed run reports what the resume cost"
        assert stack.timeline.of_kind("container_resumed")[-1].detail["resume_ms"] > 0

        await eventually(lambda: not any(i.proxies for i in stack.invokers), 30)
        assert stack.timeline.counts["container_removed"] == len(created)
        assert await containers_labelled(label) == []
        for action in (sleep, echo):
            await stack.transport.delete(settings.queue_name(action.namespace, action.name))


@pytest.mark.docker
async def test_a_prewarm_pool_of_docker_stem_cells_serves_a_container_request(
    docker_engine: None,
) -> None:
    hello = Action(name="dhello", handler="broker_sched.samples:hello", memory_mb=128)
    settings = embedded_settings(
        runtime="docker",
        prewarm={"pools": [{"memory_mb": 128, "initial_count": 1}], "check_interval_s": 0.1},
    )
    async with Stack(settings, actions={hello.fqn: hello}) as stack:
        controller = stack.controller
        assert controller is not None
        invoker = stack.invokers[0]
        await eventually(lambda: invoker.prewarm.ready("python:128") == 1, 30)
        result = await controller.invoke(hello.name, {"name": "cell"}, timeout_s=30)
        assert result.result == {"greeting": "Hello, cell!"}
        assert result.start is Start.PREWARM
        assert 0 < result.init_ms < 1000
        await eventually(lambda: invoker.prewarm.ready("python:128") == 1, 30)


# ---------------------------------------------------- the action server, in-process


@pytest.fixture
def action_server() -> Iterator[int]:
    """The server in this process; a thread stands in for the process's main thread."""
    main_thread = MainThread()
    threading.Thread(target=main_thread.serve, daemon=True).start()
    server = Server(("127.0.0.1", 0), ServedAction(main_thread))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


async def test_the_server_runs_the_module_function_it_was_initialised_with(
    action_server: int,
) -> None:
    assert await _post_json(action_server, "/run", {"value": 1}) == (
        502,
        {"error": "Cannot invoke an uninitialized action."},
    )
    init = {"value": {"name": "echo", "main": "broker_sched.samples:echo", "code": ""}}
    assert await _post_json(action_server, "/init", init) == (200, {"ok": True})
    assert await _post_json(action_server, "/run", {"value": {"a": [1, None]}}) == (
        200,
        {"a": [1, None]},
    )
    status, _ = await _post_json(action_server, "/init", init)
    assert status == 403


async def test_the_server_runs_inline_code_and_async_handlers(action_server: int) -> None:
    code = "import asyncio\nasync def main(n):\n    await asyncio.sleep(0)\n    return n + 1\n"
    assert await _post_json(action_server, "/init", {"value": {"code": code}}) == (
        200,
        {"ok": True},
    )
    assert await _post_json(action_server, "/run", {"value": 41}) == (200, 42)


async def test_the_server_reports_handler_failures_as_502(action_server: int) -> None:
    code = "def main(args):\n    if args == 'set':\n        return {1}\n    raise KeyError(args)\n"
    await _post_json(action_server, "/init", {"value": {"code": code}})
    assert await _post_json(action_server, "/run", {"value": "x"}) == (
        502,
        {"error": "KeyError: 'x'"},
    )
    status, body = await _post_json(action_server, "/run", {"value": "set"})
    assert status == 502
    assert "not JSON serializable" in body["error"]


async def test_the_server_refuses_what_it_cannot_load(action_server: int) -> None:
    status, body = await _post_json(action_server, "/init", {"value": {"main": "no_colon"}})
    assert (status, body["error"]) == (502, "main must look like 'module:function', got 'no_colon'")
    status, body = await _post_json(action_server, "/init", {"value": {"binary": True}})
    assert status == 502
    assert "binary" in body["error"]


THREAD_CODE = """
import threading
def main(args):
    return {"main": threading.current_thread() is threading.main_thread()}
"""


@pytest.mark.parametrize(("env", "main"), [({}, True), ({"__OW_ALLOW_CONCURRENT": "true"}, False)])
async def test_the_server_process_runs_a_handler_in_its_main_thread_unless_concurrent(
    env: dict[str, str], main: bool
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker_sched.runtime.action_server", "--port", str(port)
    )
    try:
        async with asyncio.timeout(30):
            while True:
                try:
                    init = {"value": {"code": THREAD_CODE, "env": env}}
                    answer = await _post_json(port, "/init", init)
                    break
                except (OSError, _ServerGone):  # not listening yet
                    await asyncio.sleep(0.05)
        assert answer == (200, {"ok": True})
        assert await _post_json(port, "/run", {"value": {}}) == (200, {"main": main})
    finally:
        process.kill()
        await process.wait()
