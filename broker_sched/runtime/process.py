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
- the worker's stderr (handler prints and tracebacks) goes to this module's logger at
  INFO, one record per line, read continuously so a chatty handler never blocks on a
  full pipe.
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
from typing import Any

from pydantic import JsonValue

from broker_sched.model import Action, Start, Status
from broker_sched.runtime.base import (
    Container,
    ContainerCrashed,
    ContainerTimings,
    RunOutcome,
    Runtime,
    StemCell,
    completed,
)
from broker_sched.runtime.worker import LINE_LIMIT_BYTES

log = logging.getLogger(__name__)

WORKER_MODULE = "broker_sched.runtime.worker"


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
        started_s = time.perf_counter()
        process = await self._spawn("--concurrency", str(action.concurrency), "--", action.handler)
        spawned_s = time.perf_counter()
        container = self._adopt(action, process)
        await self._until_ready(container)
        ready_s = time.perf_counter()
        return container, ContainerTimings(
            create_ms=(spawned_s - started_s) * 1000, init_ms=(ready_s - spawned_s) * 1000
        )

    async def start_stem_cell(self, kind: str, memory_mb: int) -> StemCell:
        """A worker with no handler, once its interpreter is up; ``kind`` is not checked:
        every action here is Python."""
        started_s = time.perf_counter()
        process = await self._spawn()
        cell = ProcessStemCell(
            process,
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
        container = self._adopt(action, cell.take_process())
        init = {"init": action.handler, "concurrency": action.concurrency}
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

    async def _spawn(self, *args: str) -> asyncio.subprocess.Process:
        if self._closed:
            raise ContainerCrashed("the process runtime is closed")
        try:
            return await asyncio.create_subprocess_exec(
                self.python,
                "-m",
                WORKER_MODULE,
                "--parent-pid",
                str(os.getpid()),
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=LINE_LIMIT_BYTES,
                start_new_session=True,
            )
        except OSError as exc:
            raise ContainerCrashed(f"cannot start a worker process: {exc}") from exc

    def _adopt(self, action: Action, process: asyncio.subprocess.Process) -> ProcessContainer:
        container = ProcessContainer(
            action, process, stop_timeout_s=self.stop_timeout_s, on_removed=self._forget
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
        process: asyncio.subprocess.Process,
        *,
        kind: str,
        memory_mb: int,
        stop_timeout_s: float,
        on_removed: Callable[[ProcessStemCell], None],
    ) -> None:
        self.id = f"stem-{secrets.token_hex(6)}"
        self.pid = process.pid
        self._on_removed = on_removed
        self.kind = kind
        self.memory_mb = memory_mb
        self.create_ms = 0.0
        self._process: asyncio.subprocess.Process | None = process
        self._stop_timeout_s = stop_timeout_s

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def up(self, timeout_s: float) -> None:
        """Wait for the worker's ``{"stem": true}``; anything else means it failed."""
        process = self._process
        assert process is not None
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

    def take_process(self) -> asyncio.subprocess.Process:
        """Hand the worker over to the container that adopts it."""
        process = self._process
        if process is None:
            raise ContainerCrashed(f"stem cell {self.id} was already used or removed")
        self._process = None
        return process

    async def remove(self) -> float:
        process, self._process = self._process, None
        self._on_removed(self)
        if process is None:
            return 0.0
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
        process: asyncio.subprocess.Process,
        *,
        stop_timeout_s: float,
        on_removed: Callable[[ProcessContainer], None],
    ) -> None:
        self.id = f"{action.name}-{secrets.token_hex(6)}"
        self.action = action
        self.paused = False
        self._process = process
        self._stop_timeout_s = stop_timeout_s
        self._on_removed = on_removed
        self._alive = True
        self._death: str | None = None
        self._removed = False
        self._remove_lock = asyncio.Lock()
        self._request_ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._readers = (
            asyncio.create_task(self._read_replies(), name=f"{self.id}-replies"),
            asyncio.create_task(self._log_stderr(), name=f"{self.id}-stderr"),
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
            )
        finally:
            self._pending.pop(request_id, None)
        run_ms = (time.perf_counter() - started_s) * 1000
        if not answer.get("ok"):
            return RunOutcome(Status.ACTION_ERROR, None, str(answer.get("error")), run_ms)
        return completed(answer.get("result"), run_ms)

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

    async def _log_stderr(self) -> None:
        stderr = self._process.stderr
        assert stderr is not None
        while True:
            try:
                line = await stderr.readline()
            except ValueError:
                log.info("%s: (a log line over %d bytes was dropped)", self.id, LINE_LIMIT_BYTES)
                continue
            if not line:
                return
            log.info("%s: %s", self.id, line.decode(errors="replace").rstrip())


def _describe_exit(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        return f"the worker was killed by {signal.Signals(-returncode).name}"
    return f"the worker exited with code {returncode}"
