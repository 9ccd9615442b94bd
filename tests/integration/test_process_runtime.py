"""The process runtime with real worker processes running the sample handlers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import os
import re
import signal
import sys
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import JsonValue

from broker_sched.model import Action, Start, Status
from broker_sched.runtime.base import LOG_LIMIT_BYTES, ContainerCrashed
from broker_sched.runtime.process import (
    UNCOLLECTED_LOGS,
    ProcessContainer,
    ProcessRuntime,
    ProcessStemCell,
)

TIMEOUT_S = 10.0


@pytest.fixture
async def runtime() -> AsyncIterator[ProcessRuntime]:
    runtime = ProcessRuntime(init_timeout_s=TIMEOUT_S, stop_timeout_s=1.0)
    try:
        yield runtime
    finally:
        await runtime.close()


def sample(name: str, handler: str, concurrency: int = 1) -> Action:
    return Action(name=name, handler=f"broker_sched.samples:{handler}", concurrency=concurrency)


async def start(runtime: ProcessRuntime, action: Action) -> ProcessContainer:
    container, _ = await runtime.create(action)
    assert isinstance(container, ProcessContainer)
    return container


PAUSE_AND_DIE = """
import asyncio, os
from broker_sched.model import Action
from broker_sched.runtime.process import ProcessRuntime

async def main():
    container, _ = await ProcessRuntime().create(Action(name="orphan"))
    await container.pause()
    print(container.pid, flush=True)
    os._exit(0)

asyncio.run(main())
"""


def exists(pid: int) -> bool:
    """True while ``pid`` is running or an unreaped zombie of ours."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_cold_start_reports_positive_timings_and_echoes(runtime: ProcessRuntime) -> None:
    container, timings = await runtime.create(sample("echo", "echo"))

    outcome = await container.run({"hello": ["world", 1, None]}, TIMEOUT_S)

    assert timings.create_ms > 0
    assert timings.init_ms > 0
    assert outcome.status is Status.SUCCESS
    assert outcome.result == {"hello": ["world", 1, None]}
    assert outcome.error is None
    assert outcome.run_ms > 0
    assert container.alive


async def test_a_warm_container_serves_many_runs(runtime: ProcessRuntime) -> None:
    container = await start(runtime, sample("hello", "hello"))

    outcomes = [await container.run({"name": f"n{i}"}, TIMEOUT_S) for i in range(20)]

    assert [o.result for o in outcomes] == [{"greeting": f"Hello, n{i}!"} for i in range(20)]


async def test_an_async_handler_runs_on_the_workers_loop(runtime: ProcessRuntime) -> None:
    container = await start(runtime, sample("asleep", "async_sleep"))

    outcome = await container.run({"ms": 20}, TIMEOUT_S)

    assert (outcome.status, outcome.result) == (Status.SUCCESS, {"ms": 20})
    assert outcome.run_ms >= 20


@pytest.mark.parametrize("handler", ["sleep", "async_sleep"])
async def test_concurrency_two_runs_overlap(runtime: ProcessRuntime, handler: str) -> None:
    container = await start(runtime, sample("pair", handler, concurrency=2))

    started_s = time.perf_counter()
    outcomes = await asyncio.gather(*(container.run({"ms": 400}, TIMEOUT_S) for _ in range(2)))
    elapsed_ms = (time.perf_counter() - started_s) * 1000

    assert all(o.status is Status.SUCCESS for o in outcomes)
    assert elapsed_ms < 750, "two 400 ms runs took longer than one run plus overhead"


async def test_concurrency_one_runs_one_at_a_time(runtime: ProcessRuntime) -> None:
    container = await start(runtime, sample("single", "async_sleep"))

    started_s = time.perf_counter()
    await asyncio.gather(*(container.run({"ms": 150}, TIMEOUT_S) for _ in range(2)))

    assert (time.perf_counter() - started_s) * 1000 >= 300


async def test_a_raising_handler_is_an_action_error(runtime: ProcessRuntime) -> None:
    container = await start(runtime, sample("fail", "fail"))

    outcome = await container.run({}, TIMEOUT_S)

    assert outcome.status is Status.ACTION_ERROR
    assert outcome.result is None
    assert outcome.error == "ValueError: sample handler failed on purpose"
    assert container.alive
    assert (await container.run({}, TIMEOUT_S)).status is Status.ACTION_ERROR


async def test_an_error_result_is_an_application_error(runtime: ProcessRuntime) -> None:
    container = await start(runtime, sample("apperr", "app_error"))

    outcome = await container.run({}, TIMEOUT_S)

    assert outcome.status is Status.APPLICATION_ERROR
    assert outcome.error == "sample handler reports an application error"
    assert outcome.result == {"error": "sample handler reports an application error"}
    assert container.alive


async def test_a_result_that_is_not_json_is_an_action_error(runtime: ProcessRuntime) -> None:
    container = await start(runtime, Action(name="bad", handler="builtins:set"))

    outcome = await container.run([1, 2], TIMEOUT_S)

    assert outcome.status is Status.ACTION_ERROR
    assert outcome.error is not None
    assert "not JSON-serializable" in outcome.error
    assert "set" in outcome.error
    assert container.alive


async def test_a_timeout_kills_the_container(runtime: ProcessRuntime) -> None:
    container = await start(runtime, sample("hang", "hang"))

    outcome = await container.run({}, 0.5)

    assert outcome.status is Status.TIMEOUT
    assert outcome.error is not None
    assert "0.5 s" in outcome.error
    assert 500 <= outcome.run_ms < 2000
    assert not container.alive
    with pytest.raises(ContainerCrashed):
        await container.run({}, TIMEOUT_S)
    await container.remove()
    assert not exists(container.pid)


async def test_a_timeout_crashes_the_other_runs_in_flight(runtime: ProcessRuntime) -> None:
    container = await start(runtime, sample("pair", "async_sleep", concurrency=2))
    other = asyncio.create_task(container.run({"ms": 5000}, TIMEOUT_S))

    outcome = await container.run({"ms": 5000}, 0.5)

    assert outcome.status is Status.TIMEOUT
    with pytest.raises(ContainerCrashed, match="time limit"):
        await other


async def test_a_crash_mid_run_raises_container_crashed(runtime: ProcessRuntime) -> None:
    container = await start(runtime, sample("crash", "crash"))

    with pytest.raises(ContainerCrashed, match="code 3"):
        await container.run({}, TIMEOUT_S)

    assert not container.alive
    with pytest.raises(ContainerCrashed):
        await container.run({}, TIMEOUT_S)


async def test_crash_once_succeeds_in_a_new_container(
    runtime: ProcessRuntime, tmp_path: Path
) -> None:
    action = sample("once", "crash_once")
    payload: JsonValue = {"marker": str(tmp_path / "crashed")}
    first = await start(runtime, action)
    with pytest.raises(ContainerCrashed):
        await first.run(payload, TIMEOUT_S)

    second = await start(runtime, action)
    outcome = await second.run(payload, TIMEOUT_S)

    assert outcome.status is Status.SUCCESS


async def test_a_paused_container_answers_only_after_resume(runtime: ProcessRuntime) -> None:
    container = await start(runtime, sample("echo", "echo"))
    assert await container.pause() >= 0
    assert container.paused

    run = asyncio.create_task(container.run("still there?", TIMEOUT_S))
    done, _ = await asyncio.wait({run}, timeout=0.3)
    assert not done, "a paused container answered"

    assert await container.resume() >= 0
    outcome = await run

    assert not container.paused
    assert outcome.result == "still there?"
    assert await container.resume() == 0.0


async def test_a_paused_container_can_be_removed(runtime: ProcessRuntime) -> None:
    container = await start(runtime, sample("echo", "echo"))
    await container.pause()

    await container.remove()

    assert not exists(container.pid)


async def test_remove_is_idempotent_and_crashes_runs_in_flight(runtime: ProcessRuntime) -> None:
    container = await start(runtime, sample("sleep", "sleep"))
    run = asyncio.create_task(container.run({"ms": 5000}, TIMEOUT_S))
    await asyncio.sleep(0)  # let the run start

    removals_ms = await asyncio.gather(container.remove(), container.remove())

    assert sorted(removals_ms)[0] == 0.0
    assert sorted(removals_ms)[1] > 0
    assert await container.remove() == 0.0
    assert not container.alive
    assert not exists(container.pid)
    with pytest.raises(ContainerCrashed, match="removed"):
        await run


async def test_an_import_error_fails_create_with_the_reason(runtime: ProcessRuntime) -> None:
    with pytest.raises(ContainerCrashed, match="No module named 'no_such_module'"):
        await runtime.create(Action(name="bad", handler="no_such_module:main"))
    with pytest.raises(ContainerCrashed, match="has no attribute 'nope'"):
        await runtime.create(sample("bad", "nope"))
    with pytest.raises(ContainerCrashed, match="module:function"):
        await runtime.create(Action(name="bad", handler="broker_sched.samples"))


async def test_handler_prints_go_to_the_log_not_the_protocol(
    runtime: ProcessRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broker_sched.runtime.process")
    container = await start(runtime, sample("chatty", "chatty"))

    outcomes = [await container.run({}, TIMEOUT_S) for _ in range(3)]
    await container.remove()

    assert [o.result for o in outcomes] == [{"printed": True}] * 3
    assert "chatty handler says hello" in caplog.text
    assert "not from the protocol" in caplog.text


async def test_close_leaves_no_child_process(runtime: ProcessRuntime) -> None:
    containers = [
        await start(runtime, sample("echo", "echo")),
        await start(runtime, sample("hang", "hang")),
        await start(runtime, sample("paused", "echo")),
    ]
    running = asyncio.create_task(containers[1].run({}, TIMEOUT_S))
    await containers[2].pause()

    await runtime.close()

    assert not any(exists(c.pid) for c in containers)
    with pytest.raises(ContainerCrashed):
        await running
    with pytest.raises(ContainerCrashed, match="closed"):
        await runtime.create(sample("late", "echo"))


async def test_a_paused_worker_dies_with_its_parent() -> None:
    """A stopped worker cannot see its stdin close; the kernel must kill it instead."""
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PAUSE_AND_DIE, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await parent.communicate()
    assert parent.returncode == 0
    worker_pid = int(out)
    try:
        assert await exits_within(worker_pid, TIMEOUT_S)
    finally:
        if exists(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)


async def exits_within(pid: int, timeout_s: float) -> bool:
    """Await the exit of a process that is not our child (a pidfd turns readable)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()
    loop.add_reader(pidfd, gone.set_result, None)
    try:
        async with asyncio.timeout(timeout_s):
            await gone
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return True


async def test_a_stem_cell_becomes_an_actions_container_paying_only_its_import(
    runtime: ProcessRuntime,
) -> None:
    cell = await runtime.start_stem_cell("python", 256)
    assert cell.alive
    assert cell.create_ms > 0
    container, timings = await runtime.initialise(cell, sample("two", "async_sleep", 2))
    assert timings.start is Start.PREWARM
    assert timings.create_ms == 0
    assert timings.init_ms > 0
    assert not cell.alive
    started_s = time.monotonic()
    outcomes = await asyncio.gather(
        container.run({"ms": 300}, TIMEOUT_S), container.run({"ms": 300}, TIMEOUT_S)
    )
    assert [o.status for o in outcomes] == [Status.SUCCESS, Status.SUCCESS]
    assert time.monotonic() - started_s < 0.55, "the init line's concurrency was not applied"


async def test_a_stem_cell_given_a_bad_handler_fails_its_init_and_is_gone(
    runtime: ProcessRuntime,
) -> None:
    cell = await runtime.start_stem_cell("python", 256)
    with pytest.raises(ContainerCrashed, match="cannot load handler"):
        await runtime.initialise(cell, Action(name="bad", handler="no_such_module:f"))
    with pytest.raises(ContainerCrashed, match="not one of this runtime's"):
        await runtime.initialise(cell, sample("echo", "echo"))


async def test_closing_the_runtime_kills_its_stem_cells() -> None:
    runtime = ProcessRuntime(init_timeout_s=TIMEOUT_S, stop_timeout_s=1.0)
    cell = await runtime.start_stem_cell("python", 256)
    assert isinstance(cell, ProcessStemCell)
    pid = cell.pid
    await runtime.close()
    assert not cell.alive
    assert not exists(pid)


FUNCTIONS = str(Path(__file__).parent.parent / "functions")
IGRAPH_IMPORT_S = 60.0
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z +std(out|err): ")
"""OpenWhisk's log line: ISO time in UTC padded to 30 columns, the stream, the text."""


@pytest.fixture
def functions_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes can import the test functions in ``tests/functions``."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [FUNCTIONS, os.environ.get("PYTHONPATH")]))
    )


@pytest.mark.parametrize(("concurrency", "main"), [(1, True), (3, False)])
async def test_a_sync_handler_runs_in_the_main_thread_when_its_concurrency_is_1(
    runtime: ProcessRuntime, functions_path: None, concurrency: int, main: bool
) -> None:
    action = Action(name="thread", handler="plain:thread", concurrency=concurrency)
    container = await start(runtime, action)
    outcome = await container.run({}, TIMEOUT_S)
    assert outcome.result == {"main": main}


@pytest.mark.parametrize("start_from", ["cold", "stem cell"])
async def test_a_seeded_graph_is_the_same_as_from_a_direct_call(
    functions_path: None, start_from: str
) -> None:
    async with contextlib.AsyncExitStack() as exits:
        # Importing igraph may take long on a loaded machine.
        runtime = ProcessRuntime(init_timeout_s=IGRAPH_IMPORT_S, stop_timeout_s=1.0)
        exits.push_async_callback(runtime.close)
        await _compare_seeded_graphs(runtime, start_from)


async def _compare_seeded_graphs(runtime: ProcessRuntime, start_from: str) -> None:
    sys.path.insert(0, FUNCTIONS)
    try:
        import seeded_graph
    finally:
        sys.path.remove(FUNCTIONS)
    action = Action(name="bfs", handler="seeded_graph:bfs")
    if start_from == "cold":
        container = await start(runtime, action)
    else:
        cell = await runtime.start_stem_cell("python", 256)
        made, _ = await runtime.initialise(cell, action)
        assert isinstance(made, ProcessContainer)
        container = made
    for seed in (1, 2, 3):
        outcome = await container.run({"seed": seed, "size": 100}, TIMEOUT_S)
        assert outcome.result == seeded_graph.bfs({"seed": seed, "size": 100})


async def test_each_run_keeps_its_own_stdout_and_stderr(
    runtime: ProcessRuntime, functions_path: None
) -> None:
    container = await start(runtime, Action(name="chatty", handler="plain:chatty"))
    first = await container.run({"lines": 2, "tag": "a"}, TIMEOUT_S)
    second = await container.run({"lines": 1, "tag": "b"}, TIMEOUT_S)
    texts = [line.split(" ", 1)[1].strip() for line in first.logs]
    assert sorted(texts) == sorted(
        ["stdout: out a 0", "stdout: out a 1", "stdout: no newline", "stderr: err a"]
    )
    assert all("a" not in line.split(": ", 1)[1] for line in second.logs if "out" in line)
    assert len(second.logs) == 3
    assert all(LOG_LINE.match(line) for line in first.logs + second.logs)


async def test_a_failing_run_keeps_its_traceback_as_logs(runtime: ProcessRuntime) -> None:
    container = await start(runtime, sample("fail", "fail"))
    outcome = await container.run({}, TIMEOUT_S)
    assert outcome.status is Status.ACTION_ERROR
    assert any("stderr: Traceback" in line for line in outcome.logs)


async def test_logs_past_the_limit_are_cut_with_a_last_line_saying_so(
    runtime: ProcessRuntime, functions_path: None
) -> None:
    container = await start(runtime, Action(name="chatty", handler="plain:chatty"))
    outcome = await container.run({"lines": 5000, "tag": "x" * 20}, TIMEOUT_S)
    assert outcome.status is Status.SUCCESS
    assert sum(len(line.encode()) for line in outcome.logs[:-1]) <= LOG_LIMIT_BYTES
    assert outcome.logs[-1].endswith(
        f"Logs were truncated because the total bytes size exceeds the limit of "
        f"{LOG_LIMIT_BYTES} bytes."
    )
    after = await container.run({"lines": 1, "tag": "y"}, TIMEOUT_S)
    assert len(after.logs) == 3


async def test_logs_of_concurrent_runs_are_not_attributed(runtime: ProcessRuntime) -> None:
    container = await start(runtime, sample("echo", "echo", concurrency=2))
    outcome = await container.run({"a": 1}, TIMEOUT_S)
    assert outcome.logs == (UNCOLLECTED_LOGS,)


SOURCE = """
import threading

def main(args):
    return {"main": threading.current_thread() is threading.main_thread(), **args}
"""


def zipped(files: dict[str, str]) -> str:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, text in files.items():
            zipped.writestr(name, text)
    return base64.b64encode(archive.getvalue()).decode()


@pytest.mark.parametrize("start_from", ["cold", "stem cell"])
async def test_an_action_with_its_own_code_runs_it(
    runtime: ProcessRuntime, start_from: str
) -> None:
    action = Action(name="own", code=SOURCE)
    if start_from == "cold":
        container, timings = await runtime.create(action)
        assert timings.start is Start.COLD
    else:
        cell = await runtime.start_stem_cell("python", 256)
        container, timings = await runtime.initialise(cell, action)
        assert timings.start is Start.PREWARM
    outcome = await container.run({"x": 1}, TIMEOUT_S)
    assert outcome.result == {"main": True, "x": 1}


async def test_a_zipped_action_imports_its_other_modules(runtime: ProcessRuntime) -> None:
    code = zipped(
        {
            "__main__.py": "from lib.helper import twice\ndef run(args):\n    return twice(args)\n",
            "lib/__init__.py": "",
            "lib/helper.py": "def twice(args):\n    return {'n': args['n'] * 2}\n",
        }
    )
    container, _ = await runtime.create(Action(name="zipped", code=code, binary=True, main="run"))
    outcome = await container.run({"n": 4}, TIMEOUT_S)
    assert outcome.result == {"n": 8}


@pytest.mark.parametrize(
    ("code", "binary", "error"),
    [
        ("import no_such_module\ndef main(a): return a", False, "ModuleNotFoundError"),
        ("main = 3", False, "TypeError: main is a int, not a function"),
        ("def other(a): return a", False, "defines no 'main'"),
        ("raise SystemExit(3)\n", False, "SystemExit"),
        (zipped({"other.py": ""}), True, "no __main__.py"),
    ],
    ids=["import failure", "not callable", "no main", "exits while loading", "zip without main"],
)
async def test_code_that_cannot_load_crashes_the_container_with_its_error(
    runtime: ProcessRuntime, code: str, binary: bool, error: str
) -> None:
    with pytest.raises(ContainerCrashed, match=error):
        await runtime.create(Action(name="bad", code=code, binary=binary))
