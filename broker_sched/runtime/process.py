"""The ``process`` runtime: each container is an OS process running one Python handler.

A cold start is real — start an interpreter, import the handler — so the scheduler's
cold-start arithmetic meets real numbers without Docker. A stem cell is a worker started
with no handler: the interpreter is up, and initialising it for an action is the
handler's import alone. The process speaks the JSON
lines protocol described in :mod:`broker_sched.runtime.worker`.

A container is the worker's process group (the worker starts a new session), so pause
(SIGSTOP), resume (SIGCONT) and kill reach whatever the handler started, as
``docker pause`` freezes a whole cgroup.

What can go wrong:
- the handler fails to import → ``create`` raises :class:`ContainerCrashed` with the
  import error; a worker that is not ready within ``init_timeout_s`` is killed likewise;
- a run exceeds its time limit → the process is killed (its state is unknown; a stuck
  thread cannot be stopped any other way) and the run reports ``TIMEOUT``; other runs
  in flight on the same container raise :class:`ContainerCrashed`;
- the process dies (``os._exit``, a segfault, the OOM killer) → every run in flight
  raises :class:`ContainerCrashed` naming the exit code or signal;
- the worker's stdout and stderr (handler prints and tracebacks; stdout through a pipe
  of its own, ``--stdout-fd``) go to this module's logger at INFO, one record per line,
  read continuously so a chatty handler never blocks on a full pipe.

Each run's output is also its activation's logs: the worker ends each run's output on
both streams with a marker line naming the request, and a container of an action with
concurrency 1 gives the lines before the markers to that run's outcome, at most
:data:`~broker_sched.runtime.base.LOG_LIMIT_BYTES`. With a higher concurrency runs
interleave on the same streams and no line can be told to be one run's, so the lines
stay in the invoker's log only and the outcome says so, as OpenWhisk does not collect
logs of concurrent activations per activation either.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import JsonValue

from broker_sched.model import Action, Start, Status
from broker_sched.runtime.base import (
    LOG_LIMIT_BYTES,
    Container,
    ContainerCrashed,
    ContainerTimings,
    RunOutcome,
    Runtime,
    StemCell,
    completed,
)
from broker_sched.runtime.worker import LINE_LIMIT_BYTES, RUN_END_MARKER

log = logging.getLogger(__name__)

WORKER_MODULE = "broker_sched.runtime.worker"
LOG_STREAMS = ("stdout", "stderr")
LOGS_WAIT_S = 2.0
"""How long a run's answer waits for the end markers of its output; the worker writes
them before the answer, so only a stalled pipe reader waits this long."""
UNCOLLECTED_LOGS = (
    "logs are not collected per activation for an action with concurrency > 1: "
    "its runs share one stdout and stderr (they are in the invoker's log)"
)


@dataclass(slots=True)
class _Worker:
    """A started worker process and the read end of its handlers' stdout pipe."""

    process: asyncio.subprocess.Process
    stdout_fd: int

    def close_stdout(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.stdout_fd)


class ProcessRuntime(Runtime):
    """Starts one worker process per container; ``close`` stops every one still running."""

    name = "process"
    makes_stem_cells = True

    def __init__(
        self,
        *,
        init_timeout_s: float = 30.0,
        stop_timeout_s: float = 2.0,
        python: str = sys.executable,
    ) -> None:
        self.init_timeout_s = init_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.python = python
        self._containers: set[ProcessContainer] = set()
        self._cells: set[ProcessStemCell] = set()
        self._closed = False

    async def create(self, action: Action) -> tuple[Container, ContainerTimings]:
        if action.code:  # too large for a command line: the code goes in an init line
            cell = await self.start_stem_cell(action.kind, action.memory_mb)
            container, timings = await self.initialise(cell, action)
            return container, ContainerTimings(create_ms=cell.create_ms, init_ms=timings.init_ms)
        started_s = time.perf_counter()
        worker = await self._spawn("--concurrency", str(action.concurrency), "--", action.handler)
        spawned_s = time.perf_counter()
        container = self._adopt(action, worker)
        await self._until_ready(container)
        ready_s = time.perf_counter()
        return container, ContainerTimings(
            create_ms=(spawned_s - started_s) * 1000, init_ms=(ready_s - spawned_s) * 1000
        )

    async def start_stem_cell(self, kind: str, memory_mb: int) -> StemCell:
        """A worker with no handler, once its interpreter is up; ``kind`` is not checked:
        every action here is Python."""
        started_s = time.perf_counter()
        worker = await self._spawn()
        cell = ProcessStemCell(
            worker,
            kind=kind,
            memory_mb=memory_mb,
            stop_timeout_s=self.stop_timeout_s,
            on_removed=self._cells.discard,
        )
        self._cells.add(cell)
        try:
            await cell.up(self.init_timeout_s)
        except BaseException:
            await cell.remove()
            raise
        cell.create_ms = (time.perf_counter() - started_s) * 1000
        return cell

    async def initialise(
        self, cell: StemCell, action: Action
    ) -> tuple[Container, ContainerTimings]:
        if not isinstance(cell, ProcessStemCell) or cell not in self._cells:
            raise ContainerCrashed(f"stem cell {cell.id} is not one of this runtime's")
        self._cells.discard(cell)
        if not cell.alive:
            await cell.remove()
            raise ContainerCrashed(f"stem cell {cell.id} died before it was initialised")
        started_s = time.perf_counter()
        container = self._adopt(action, cell.take_worker())
        init = {"init": action.handler, "concurrency": action.concurrency}
        if action.code:
            init.update(code=action.code, binary=action.binary, main=action.main, name=action.name)
        try:
            await container.send_line(json.dumps(init).encode() + b"\n")
        except BaseException:
            await container.remove()
            raise
        await self._until_ready(container)
        return container, ContainerTimings(
            create_ms=0.0,
            init_ms=(time.perf_counter() - started_s) * 1000,
            start=Start.PREWARM,
        )

    async def _spawn(self, *args: str) -> _Worker:
        if self._closed:
            raise ContainerCrashed("the process runtime is closed")
        stdout_read, stdout_write = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                self.python,
                "-m",
                WORKER_MODULE,
                "--parent-pid",
                str(os.getpid()),
                "--stdout-fd",
                str(stdout_write),
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=LINE_LIMIT_BYTES,
                start_new_session=True,
                pass_fds=(stdout_write,),
            )
        except OSError as exc:
            os.close(stdout_read)
            raise ContainerCrashed(f"cannot start a worker process: {exc}") from exc
        finally:
            os.close(stdout_write)
        return _Worker(process, stdout_read)

    def _adopt(self, action: Action, worker: _Worker) -> ProcessContainer:
        container = ProcessContainer(
            action, worker, stop_timeout_s=self.stop_timeout_s, on_removed=self._forget
        )
        self._containers.add(container)
        return container

    async def _until_ready(self, container: ProcessContainer) -> None:
        try:
            if self._closed:
                raise ContainerCrashed("the process runtime closed while the worker was starting")
            await container.ready(self.init_timeout_s)
        except BaseException:
            await container.remove()
            raise

    async def close(self) -> None:
        self._closed = True
        cells = [cell.remove() for cell in list(self._cells)]
        await asyncio.gather(*(container.remove() for container in list(self._containers)), *cells)

    def _forget(self, container: ProcessContainer) -> None:
        self._containers.discard(container)


class ProcessStemCell(StemCell):
    """A worker process waiting for its init line.

    It says once that it is up (``{"stem": true}``) and then nothing until its init, so
    its pipes need no reading after that line until the container that adopts it starts
    its own readers.
    """

    def __init__(
        self,
        worker: _Worker,
        *,
        kind: str,
        memory_mb: int,
        stop_timeout_s: float,
        on_removed: Callable[[ProcessStemCell], None],
    ) -> None:
        self.id = f"stem-{secrets.token_hex(6)}"
        self.pid = worker.process.pid
        self._on_removed = on_removed
        self.kind = kind
        self.memory_mb = memory_mb
        self.create_ms = 0.0
        self._worker: _Worker | None = worker
        self._stop_timeout_s = stop_timeout_s

    @property
    def alive(self) -> bool:
        return self._worker is not None and self._worker.process.returncode is None

    async def up(self, timeout_s: float) -> None:
        """Wait for the worker's ``{"stem": true}``; anything else means it failed."""
        assert self._worker is not None
        process = self._worker.process
        assert process.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                line = await process.stdout.readline()
        except TimeoutError:
            raise ContainerCrashed(
                f"stem cell {self.id} was not up within {timeout_s:g} s"
            ) from None
        try:
            message = json.loads(line) if line else None
        except ValueError:
            message = None
        if message != {"stem": True}:
            raise ContainerCrashed(f"stem cell {self.id} did not start: {line[:200]!r}")

    def take_worker(self) -> _Worker:
        """Hand the worker over to the container that adopts it."""
        worker = self._worker
        if worker is None:
            raise ContainerCrashed(f"stem cell {self.id} was already used or removed")
        self._worker = None
        return worker

    async def remove(self) -> float:
        worker, self._worker = self._worker, None
        self._on_removed(self)
        if worker is None:
            return 0.0
        worker.close_stdout()
        process = worker.process
        started_s = time.perf_counter()
        if process.stdin is not None:
            process.stdin.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._stop_timeout_s):
                await process.wait()
        return (time.perf_counter() - started_s) * 1000


class ProcessContainer(Container):
    def __init__(
        self,
        action: Action,
        worker: _Worker,
        *,
        stop_timeout_s: float,
        on_removed: Callable[[ProcessContainer], None],
    ) -> None:
        self.id = f"{action.name}-{secrets.token_hex(6)}"
        self.action = action
        self.paused = False
        self._process = process = worker.process
        self._logs = _RunLogs(collect=action.concurrency == 1)
        self._stop_timeout_s = stop_timeout_s
        self._on_removed = on_removed
        self._alive = True
        self._death: str | None = None
        self._removed = False
        self._remove_lock = asyncio.Lock()
        self._request_ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        assert process.stderr is not None
        self._readers = (
            asyncio.create_task(self._read_replies(), name=f"{self.id}-replies"),
            asyncio.create_task(self._read_stdout(worker), name=f"{self.id}-stdout"),
            asyncio.create_task(
                self._read_output(process.stderr, "stderr"), name=f"{self.id}-stderr"
            ),
        )

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def pid(self) -> int:
        return self._process.pid

    async def ready(self, timeout_s: float) -> None:
        """Wait for the worker to import its handler; kill it if that takes too long."""
        try:
            await asyncio.wait_for(self._ready, timeout_s)
        except TimeoutError:
            self._kill(f"the worker was not ready within {timeout_s:g} s")
            raise ContainerCrashed(
                f"{self.action.handler}: the worker was not ready within {timeout_s:g} s"
            ) from None

    async def run(self, payload: JsonValue, timeout_s: float) -> RunOutcome:
        if not self._alive:
            raise ContainerCrashed(self._death or "the container is not alive")
        request_id = next(self._request_ids)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        output = self._logs.expect(request_id)
        line = json.dumps({"id": request_id, "payload": payload}).encode() + b"\n"
        started_s = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                await self._send(line)
                answer = await reply
        except TimeoutError:
            self._kill(f"killed: a run exceeded its time limit of {timeout_s:g} s")
            return RunOutcome(
                Status.TIMEOUT,
                None,
                f"the action exceeded its time limit of {timeout_s:g} s",
                (time.perf_counter() - started_s) * 1000,
                self._logs.give_up(request_id),
            )
        finally:
            self._pending.pop(request_id, None)
        run_ms = (time.perf_counter() - started_s) * 1000
        logs = await self._logs.of(request_id, output)
        if not answer.get("ok"):
            return RunOutcome(Status.ACTION_ERROR, None, str(answer.get("error")), run_ms, logs)
        return completed(answer.get("result"), run_ms, logs)

    async def pause(self) -> float:
        if self.paused or not self._alive:
            return 0.0
        started_s = time.perf_counter()
        self._signal(signal.SIGSTOP)
        self.paused = True
        return (time.perf_counter() - started_s) * 1000

    async def resume(self) -> float:
        if not self.paused:
            return 0.0
        started_s = time.perf_counter()
        self._signal(signal.SIGCONT)
        self.paused = False
        return (time.perf_counter() - started_s) * 1000

    async def remove(self) -> float:
        """Close stdin and SIGTERM the group; SIGKILL if it outlives ``stop_timeout_s``."""
        async with self._remove_lock:
            if self._removed:
                return 0.0
            started_s = time.perf_counter()
            self._death = self._death or "the container was removed"
            self._alive = False
            await self._stop()
            _, stuck = await asyncio.wait(self._readers, timeout=self._stop_timeout_s)
            for task in stuck:
                log.warning("container %s: its pipes stay open after exit; giving up", self.id)
                task.cancel()
            self._removed = True
            self._on_removed(self)
            return (time.perf_counter() - started_s) * 1000

    async def _stop(self) -> None:
        process = self._process
        if process.returncode is None:
            if process.stdin is not None:
                process.stdin.close()
            self._signal(signal.SIGTERM)
            self._signal(signal.SIGCONT)
            self.paused = False
            if not await self._exited_within(self._stop_timeout_s):
                self._signal(signal.SIGKILL)
                if not await self._exited_within(self._stop_timeout_s):
                    log.error("container %s: pid %d survives SIGKILL", self.id, process.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    async def _exited_within(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._process.wait()
        except TimeoutError:
            return False
        return True

    async def send_line(self, line: bytes) -> None:
        """Write one protocol line (a stem cell's init line; requests go through ``run``)."""
        await self._send(line)

    async def _send(self, line: bytes) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(line)
            await stdin.drain()
        except ConnectionError as exc:
            raise ContainerCrashed(f"cannot reach the worker: {exc}") from exc

    def _kill(self, reason: str) -> None:
        self._death = self._death or reason
        self._alive = False
        self._signal(signal.SIGKILL)

    def _signal(self, signum: signal.Signals) -> None:
        """Signal the whole process group, unless the worker is already reaped."""
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signum)

    async def _read_replies(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        while True:
            try:
                line = await stdout.readline()
            except ValueError as exc:
                self._kill(f"the worker sent a line over {LINE_LIMIT_BYTES} bytes: {exc}")
                continue
            if not line:
                break
            try:
                self._dispatch(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                self._kill(f"the worker broke the protocol ({exc}): {line[:200]!r}")
        await self._worker_gone()

    def _dispatch(self, message: Any) -> None:
        if not isinstance(message, dict):
            raise TypeError(f"expected an object, got {type(message).__name__}")
        if "ready" in message:
            if self._ready.done():
                return
            if message["ready"] is True:
                self._ready.set_result(None)
                return
            self._death = str(message.get("error", "the worker failed to start"))
            self._ready.set_exception(ContainerCrashed(self._death))
            return
        reply = self._pending.get(message["id"])
        if reply is not None and not reply.done():
            reply.set_result(message)

    async def _worker_gone(self) -> None:
        """The protocol pipe closed: fail whatever still waits, naming the cause."""
        self._alive = False
        if not await self._exited_within(self._stop_timeout_s):
            self._kill("the worker closed its protocol pipe")
            await self._process.wait()
        reason = self._death or _describe_exit(self._process.returncode)
        self._death = reason
        if not self._ready.done():
            self._ready.set_exception(ContainerCrashed(f"{self.action.handler}: {reason}"))
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(ContainerCrashed(reason))

    async def _read_stdout(self, worker: _Worker) -> None:
        """The handlers' stdout pipe, read like stderr; closed when the worker exits."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=LINE_LIMIT_BYTES)
        pipe = os.fdopen(worker.stdout_fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        try:
            await self._read_output(reader, "stdout")
        finally:
            transport.close()

    async def _read_output(self, stream: asyncio.StreamReader, name: str) -> None:
        """Log each line of a worker's output stream and keep it for its run's logs."""
        while True:
            try:
                line = await stream.readline()
            except ValueError:
                log.info("%s: (a log line over %d bytes was dropped)", self.id, LINE_LIMIT_BYTES)
                continue
            if not line:
                return
            text = line.decode(errors="replace").rstrip("\r\n")
            text, marker, request = text.partition(RUN_END_MARKER)
            if text or not marker:
                log.info("%s: %s", self.id, text)
                self._logs.add(name, text)
            if marker:
                with contextlib.suppress(ValueError):
                    self._logs.end(name, int(request))


class _RunLogs:
    """The lines of each run's output, per stream until that stream's end marker.

    With concurrency 1 one run at a time writes, so the lines a stream carries before
    a run's marker are that run's. Each stream's pending lines are bounded by
    :data:`LOG_LIMIT_BYTES`, so a chatty handler costs no more memory than its logs keep.
    """

    def __init__(self, *, collect: bool) -> None:
        self.collect = collect
        self._pending: dict[str, list[str]] = {stream: [] for stream in LOG_STREAMS}
        self._pending_bytes = dict.fromkeys(LOG_STREAMS, 0)
        self._dropped = dict.fromkeys(LOG_STREAMS, False)
        self._ended: dict[int, dict[str, tuple[list[str], bool]]] = {}
        self._waiting: dict[int, asyncio.Future[None]] = {}

    def expect(self, request_id: int) -> asyncio.Future[None] | None:
        """Start waiting for ``request_id``'s markers; None when logs are not collected."""
        if not self.collect:
            return None
        done = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = done
        return done

    def add(self, stream: str, text: str) -> None:
        if not self.collect:
            return
        line = f"{_now_iso():<30} {stream}: {text}"
        size = len(line.encode())
        if self._pending_bytes[stream] + size > LOG_LIMIT_BYTES:
            self._dropped[stream] = True
            return
        self._pending[stream].append(line)
        self._pending_bytes[stream] += size

    def end(self, stream: str, request_id: int) -> None:
        """``stream``'s output for ``request_id`` is complete."""
        if not self.collect:
            return
        lines, dropped = self._pending[stream], self._dropped[stream]
        self._pending[stream], self._pending_bytes[stream] = [], 0
        self._dropped[stream] = False
        if request_id not in self._waiting:
            return
        ended = self._ended.setdefault(request_id, {})
        ended[stream] = (lines, dropped)
        done = self._waiting[request_id]
        if len(ended) == len(LOG_STREAMS) and not done.done():
            done.set_result(None)

    async def of(self, request_id: int, done: asyncio.Future[None] | None) -> tuple[str, ...]:
        """``request_id``'s lines, once both streams ended it (or after ``LOGS_WAIT_S``)."""
        if done is None:
            return (UNCOLLECTED_LOGS,)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), LOGS_WAIT_S)
        return self._take(request_id)

    def give_up(self, request_id: int) -> tuple[str, ...]:
        """A run that never ended (killed at its time limit): what it wrote so far."""
        if not self.collect:
            return (UNCOLLECTED_LOGS,)
        for stream in LOG_STREAMS:
            self.end(stream, request_id)
        return self._take(request_id)

    def _take(self, request_id: int) -> tuple[str, ...]:
        self._waiting.pop(request_id, None)
        ended = self._ended.pop(request_id, {})
        lines = sorted(line for kept, _ in ended.values() for line in kept)
        truncated = any(dropped for _, dropped in ended.values())
        kept_lines: list[str] = []
        size = 0
        for line in lines:
            size += len(line.encode())
            if size > LOG_LIMIT_BYTES:
                truncated = True
                break
            kept_lines.append(line)
        if truncated:
            note = (
                "Logs were truncated because the total bytes size exceeds the limit of "
                f"{LOG_LIMIT_BYTES} bytes."
            )
            kept_lines.append(f"{_now_iso():<30} stderr: {note}")
        return tuple(kept_lines)


def _now_iso() -> str:
    """The time of a log line as OpenWhisk writes it: ISO 8601 in UTC, microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _describe_exit(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        return f"the worker was killed by {signal.Signals(-returncode).name}"
    return f"the worker exited with code {returncode}"
