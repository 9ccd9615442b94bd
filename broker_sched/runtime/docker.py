"""The ``docker`` runtime: each container is a real Docker container with an action server.

A container runs an image that speaks OpenWhisk's action protocol (``POST /init``,
``POST /run``; see :mod:`broker_sched.runtime.action_server`) on a loopback port the
runtime picks, with host networking, so all traffic stays on 127.0.0.1. Messages never
carry code: ``/init`` names the action's handler (``module:function``) and the handler's
source reaches the container as a read-only bind mount on ``PYTHONPATH`` (by default the
directory that holds the ``broker_sched`` package).

A cold start is ``docker run -d`` (create + start in one command), waiting until the
server accepts connections, then ``/init``: ``create_ms`` covers the first two,
``init_ms`` the last. A stem cell is the first two alone — a created and started action
server that has received no ``/init`` — and initialising it for an action is the
``/init``, as OpenWhisk's prewarmed containers are. ``pause``/``resume`` are
``docker pause``/``unpause`` (a paused container's runs wait in the kernel's accept
queue until it is resumed); ``remove`` is ``docker rm -f``. Each returns the
milliseconds it took, which the invoker reports.

Docker is driven through its CLI (``asyncio.create_subprocess_exec``), as OpenWhisk's
invoker does: it is natively async, needs no extra dependency (the SDK is synchronous
and would need a thread per call), honours ``DOCKER_HOST`` and contexts like any docker
command, and its costs are the ones ``broker-sched bench docker-ops`` measures. At most
``max_concurrent_ops`` commands run at once; the daemon serialises most of them anyway.
One ``docker events`` stream per runtime reports every container that dies, so a
crash is noticed even while a container is idle, and its exit code names the cause.

What can go wrong:
- the image is missing (nothing is ever pulled) or the handler fails to import →
  ``create`` raises :class:`ContainerCrashed` with the reason and removes the container;
- the chosen port was taken in the meantime → the server exits with 98 and ``create``
  retries on another port (a few times);
- a run exceeds its time limit → the container is removed (``rm -f``) before ``run``
  returns ``TIMEOUT``; other runs in flight on it raise :class:`ContainerCrashed`;
- the container dies (``os._exit``, out of memory, someone ran ``docker kill``) → runs
  in flight raise :class:`ContainerCrashed` naming the exit code, and ``alive`` turns
  false even if nothing was running;
- the engine stops answering → docker commands fail after ``DOCKER_OP_TIMEOUT_S``.

Every container carries the labels ``broker-sched=1`` and ``broker-sched.runtime=<id>``;
``close`` removes everything with this runtime's label, including containers whose
creation was interrupted, so nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue

import broker_sched
from broker_sched.errors import ConfigError
from broker_sched.model import Action, Start, Status
from broker_sched.runtime.action_server import EXIT_ADDRESS_IN_USE
from broker_sched.runtime.base import (
    Container,
    ContainerCrashed,
    ContainerTimings,
    RunOutcome,
    Runtime,
    StemCell,
    completed,
)

if TYPE_CHECKING:
    from broker_sched.config import Settings

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "broker-sched/action-python:latest"
"""Built by ``compose/images/build.sh action-python``; see ``compose/images/images.env``."""
HOST = "127.0.0.1"
LABEL = "broker-sched"
RUNTIME_LABEL = "broker-sched.runtime"
CODE_DIR_IN_CONTAINER = "/opt/broker-sched/code"
DEFAULT_MAX_CONCURRENT_OPS = 8
DOCKER_OP_TIMEOUT_S = 60.0
"""A docker command that takes longer means the engine is stuck; the command is killed."""
EXIT_GRACE_S = 2.0
"""How long a run that lost its connection waits for the die event naming the exit code."""
PORT_ATTEMPTS = 3
FIRST_PROBE_DELAY_S = 0.002
MAX_PROBE_DELAY_S = 0.05


class DockerError(Exception):
    """A docker command failed; ``stderr`` holds the engine's message."""

    def __init__(self, args: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.command = tuple(args)
        self.returncode = returncode
        self.stderr = stderr.strip()
        detail = self.stderr or f"exit code {returncode}"
        super().__init__(f"docker {' '.join(self.command[:1])}: {detail}")

    @property
    def no_such_container(self) -> bool:
        return "No such container" in self.stderr


class Docker:
    """The docker CLI, with at most ``max_concurrent_ops`` commands running at once."""

    def __init__(self, path: str, max_concurrent_ops: int = DEFAULT_MAX_CONCURRENT_OPS) -> None:
        self.path = path
        self._slots = asyncio.Semaphore(max_concurrent_ops)

    async def __call__(
        self, *args: str, timeout_s: float = DOCKER_OP_TIMEOUT_S, merge_stderr: bool = False
    ) -> str:
        """Run ``docker ARGS``; returns its stdout, raises :class:`DockerError` on failure."""
        async with self._slots:
            try:
                process = await asyncio.create_subprocess_exec(
                    self.path,
                    *args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
                )
            except OSError as exc:
                raise DockerError(args, None, str(exc)) from exc
            try:
                async with asyncio.timeout(timeout_s):
                    stdout, stderr = await process.communicate()
            except TimeoutError as exc:
                await _reap(process)
                raise DockerError(args, None, f"no answer within {timeout_s:g} s") from exc
            except BaseException:
                await _reap(process)
                raise
        if process.returncode != 0:
            raise DockerError(args, process.returncode, (stderr or stdout).decode(errors="replace"))
        return stdout.decode(errors="replace")

    async def remove(self, *containers: str) -> None:
        """``docker rm -f``; a container that is already gone is not an error."""
        try:
            await self("rm", "-f", *containers)
        except DockerError as exc:
            if not exc.no_such_container:
                raise


async def _reap(process: asyncio.subprocess.Process) -> None:
    """Never leave a docker command running behind a timeout or a cancellation."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


class ExitWatch:
    """One ``docker events`` stream reporting the exit code of every container that dies.

    Containers are watched by name, registered before ``docker run``, and ``--since`` the
    moment the watch started replays what happened before the stream connected, so no
    death is missed, not even one during ``docker run``. If the stream itself ends (the
    engine restarted) deaths are only noticed through failed runs.
    """

    def __init__(self, docker_path: str, label: str) -> None:
        self._docker_path = docker_path
        self._label = label
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._exits: dict[str, asyncio.Future[int]] = {}
        self._starting = asyncio.Lock()
        self._closing = False

    async def start(self) -> None:
        async with self._starting:
            if self._process is None:
                self._process = await self._spawn()
                self._reader = asyncio.create_task(
                    self._read(self._process), name="docker-exit-watch"
                )

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            self._docker_path, "events",
            "--since", f"{time.time() - 1:.3f}",
            "--filter", "type=container",
            "--filter", "event=die",
            "--filter", f"label={self._label}",
            "--format", "{{json .}}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    def watch(self, name: str) -> asyncio.Future[int]:
        """Resolves with the exit code when the container called ``name`` dies."""
        future = self._exits.get(name)
        if future is None:
            future = self._exits[name] = asyncio.get_running_loop().create_future()
        return future

    def forget(self, name: str) -> None:
        self._exits.pop(name, None)

    async def close(self) -> None:
        self._closing = True
        if self._process is not None:
            await _reap(self._process)
        if self._reader is not None:
            await self._reader

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            try:
                attributes = json.loads(line)["Actor"]["Attributes"]
                name, code = str(attributes["name"]), int(attributes["exitCode"])
            except (ValueError, KeyError, TypeError):
                continue
            future = self._exits.get(name)
            if future is not None and not future.done():
                future.set_result(code)
        if not self._closing:
            log.warning("docker events stream ended; container deaths show up only in runs")


def free_port() -> int:
    """A loopback port nobody listens on now; the server reports (98) if it is taken later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def describe_exit(code: int) -> str:
    if code == 137:
        return "the container was killed (exit code 137: SIGKILL, e.g. out of memory)"
    return f"the container exited with code {code}"


class DockerRuntime(Runtime):
    """Runs each container as a Docker container of ``image`` (see the module docstring).

    ``code_paths`` are host directories mounted read-only and put on the container's
    ``PYTHONPATH`` so handlers import; by default the directory holding ``broker_sched``.
    ``init_timeout_s`` bounds the start and the ``/init`` of a container each (default:
    the scheduler's ``create_timeout_s``), as a stem cell's happen far apart.
    ``memory_limit`` applies ``--memory <action.memory_mb>m``.
    """

    name = "docker"
    makes_stem_cells = True

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        image: str = DEFAULT_IMAGE,
        code_paths: Sequence[Path | str] | None = None,
        init_timeout_s: float | None = None,
        max_concurrent_ops: int = DEFAULT_MAX_CONCURRENT_OPS,
        memory_limit: bool = True,
        docker: str = "docker",
    ) -> None:
        path = shutil.which(docker)
        if path is None:
            raise ConfigError(f"runtime 'docker' needs the docker CLI, and {docker!r} is not found")
        if init_timeout_s is None:
            init_timeout_s = settings.scheduler.create_timeout_s if settings else 30.0
        if code_paths is None:
            code_paths = [Path(broker_sched.__file__).resolve().parent.parent]
        self.image = image
        self.code_paths = [Path(p).resolve() for p in code_paths]
        self.init_timeout_s = init_timeout_s
        self.memory_limit = memory_limit
        self.runtime_id = secrets.token_hex(6)
        self.label = f"{RUNTIME_LABEL}={self.runtime_id}"
        self._docker = Docker(path, max_concurrent_ops)
        self._exits = ExitWatch(path, self.label)
        self._containers: set[DockerContainer] = set()
        self._abandoned: dict[str, asyncio.Task[None]] = {}
        """Containers whose ``docker run`` was interrupted, by name: their removal once
        the command has ended (and so made or not made the container)."""
        self._closed = False

    async def create(self, action: Action) -> tuple[Container, ContainerTimings]:
        container, create_ms = await self._listening(action)
        started_s = time.perf_counter()
        await self._init(container)
        return container, ContainerTimings(
            create_ms=create_ms, init_ms=(time.perf_counter() - started_s) * 1000
        )

    async def start_stem_cell(self, kind: str, memory_mb: int) -> StemCell:
        """An action server of ``image`` with no ``/init``; every kind runs this image."""
        placeholder = Action(name="stem", memory_mb=memory_mb, handler="stem:cell")
        container, create_ms = await self._listening(placeholder)
        return DockerStemCell(container, kind=kind, create_ms=create_ms)

    async def initialise(
        self, cell: StemCell, action: Action
    ) -> tuple[Container, ContainerTimings]:
        if not isinstance(cell, DockerStemCell):
            raise ContainerCrashed(f"stem cell {cell.id} is not a docker one")
        container = cell.take()
        container.action = action
        started_s = time.perf_counter()
        await self._init(container)
        return container, ContainerTimings(
            create_ms=0.0, init_ms=(time.perf_counter() - started_s) * 1000, start=Start.PREWARM
        )

    async def _listening(self, action: Action) -> tuple[DockerContainer, float]:
        """A started container whose server accepts connections, and the ms that took."""
        if self._closed:
            raise ContainerCrashed("the docker runtime is closed")
        try:
            await self._exits.start()
        except OSError as exc:
            raise ContainerCrashed(f"cannot watch containers with docker events: {exc}") from exc
        try:
            async with asyncio.timeout(self.init_timeout_s):
                for _ in range(PORT_ATTEMPTS):
                    with contextlib.suppress(_PortTaken):
                        return await self._start(action)
        except TimeoutError:
            raise ContainerCrashed(
                f"{action.handler}: the container was not ready within {self.init_timeout_s:g} s"
            ) from None
        raise ContainerCrashed(f"no free loopback port after {PORT_ATTEMPTS} tries")

    async def _init(self, container: DockerContainer) -> None:
        """``/init`` within the init timeout; the container is removed if it fails."""
        try:
            async with asyncio.timeout(self.init_timeout_s):
                await container.init()
        except TimeoutError:
            await container.remove()
            raise ContainerCrashed(
                f"{container.action.handler}: /init took over {self.init_timeout_s:g} s"
            ) from None
        except BaseException:
            await container.remove()
            raise

    async def close(self) -> None:
        self._closed = True
        await asyncio.gather(*(container.remove() for container in list(self._containers)))
        await asyncio.gather(*self._abandoned.values(), return_exceptions=True)
        try:
            leftovers = (await self._docker("ps", "-aq", "--filter", f"label={self.label}")).split()
            if leftovers:
                await self._docker.remove(*leftovers)
        except DockerError as exc:
            log.error("docker runtime: cannot remove containers labelled %s: %s", self.label, exc)
        await self._exits.close()

    async def _start(self, action: Action) -> tuple[DockerContainer, float]:
        port = free_port()
        name = f"bs-{action.namespace}-{action.name}-{secrets.token_hex(4)}"
        exit_code = self._exits.watch(name)
        started_s = time.perf_counter()
        # Shielded: killing `docker run` does not stop the engine from making the
        # container, so an interrupted one (the create timeout on a loaded machine) is
        # left to end, and what it made is removed after (`_abandon`).
        run = asyncio.ensure_future(self._docker(*self._run_args(action, name, port)))
        try:
            docker_id = (await asyncio.shield(run)).strip()
        except DockerError as exc:
            # `docker run` may have created the container before it failed.
            self._exits.forget(name)
            with contextlib.suppress(DockerError):
                await self._docker.remove(name)
            raise ContainerCrashed(self._explain_run_failure(exc)) from exc
        except BaseException:
            self._exits.forget(name)
            self._abandon(name, run)
            raise
        container = DockerContainer(
            action,
            name=name,
            docker_id=docker_id,
            port=port,
            docker=self._docker,
            exit_code=exit_code,
            on_removed=self._forget,
        )
        self._containers.add(container)
        try:
            await container.wait_until_listening()
        except BaseException:
            await container.remove()
            raise
        return container, (time.perf_counter() - started_s) * 1000

    def _abandon(self, name: str, run: asyncio.Future[str]) -> None:
        """Remove container ``name`` once its interrupted ``docker run`` has ended; until
        then it counts among :attr:`abandoned`, and ``close`` waits for it."""

        async def remove() -> None:
            with contextlib.suppress(DockerError):
                await run
            try:
                await self._docker.remove(name)
            except DockerError as exc:
                log.error("docker runtime: cannot remove abandoned container %s: %s", name, exc)
            finally:
                self._abandoned.pop(name, None)

        self._abandoned[name] = asyncio.create_task(remove())

    @property
    def abandoned(self) -> int:
        """Containers whose creation was interrupted and that are not removed yet."""
        return len(self._abandoned)

    def _run_args(self, action: Action, name: str, port: int) -> list[str]:
        mounts: list[str] = []
        python_path: list[str] = []
        for index, host_path in enumerate(self.code_paths):
            in_container = f"{CODE_DIR_IN_CONTAINER}/{index}"
            mounts += ["-v", f"{host_path}:{in_container}:ro"]
            python_path.append(in_container)
        memory = ["--memory", f"{action.memory_mb}m"] if self.memory_limit else []
        return [
            "run", "--detach", "--pull", "never", "--name", name, "--network", "host",
            "--label", f"{LABEL}=1", "--label", self.label,
            "--label", f"{LABEL}.action={action.fqn}",
            "--env", f"ACTION_HOST={HOST}", "--env", f"ACTION_PORT={port}",
            "--env", f"PYTHONPATH={':'.join(python_path)}",
            *memory, *mounts, self.image,
        ]  # fmt: skip

    def _explain_run_failure(self, exc: DockerError) -> str:
        if "No such image" in exc.stderr or "Unable to find image" in exc.stderr:
            return (
                f"image {self.image} is not built on this engine: run compose/images/build.sh "
                "(nothing is pulled from a registry)"
            )
        return f"cannot start a container of {self.image}: {exc}"

    def _forget(self, container: DockerContainer) -> None:
        self._containers.discard(container)
        self._exits.forget(container.id)


class DockerStemCell(StemCell):
    """A listening action server that has had no ``/init`` yet."""

    def __init__(self, container: DockerContainer, *, kind: str, create_ms: float) -> None:
        self.id = container.id
        self.kind = kind
        self.memory_mb = container.action.memory_mb
        self.create_ms = create_ms
        self._container: DockerContainer | None = container

    @property
    def alive(self) -> bool:
        return self._container is not None and self._container.alive

    def take(self) -> DockerContainer:
        container, self._container = self._container, None
        if container is None or not container.alive:
            raise ContainerCrashed(f"stem cell {self.id} was used, removed, or died")
        return container

    async def remove(self) -> float:
        container, self._container = self._container, None
        return 0.0 if container is None else await container.remove()


class _PortTaken(Exception):
    """The action server could not listen on the port chosen for it."""


class _ServerGone(Exception):
    """The connection to the action server failed or closed before a whole reply."""


class DockerContainer(Container):
    def __init__(
        self,
        action: Action,
        *,
        name: str,
        docker_id: str,
        port: int,
        docker: Docker,
        exit_code: asyncio.Future[int],
        on_removed: Callable[[DockerContainer], None],
    ) -> None:
        self.id = name
        self.action = action
        self.paused = False
        self.docker_id = docker_id
        self.port = port
        self._docker = docker
        self._exit_code = exit_code
        self._on_removed = on_removed
        self._alive = True
        self._death: str | None = None
        self._removed = False
        self._remove_lock = asyncio.Lock()
        exit_code.add_done_callback(self._exited)

    @property
    def alive(self) -> bool:
        return self._alive

    async def wait_until_listening(self) -> None:
        """Probe the port with growing pauses until the server accepts a connection.

        Each pause ends early if the container dies, so a server that cannot start fails
        the cold start at once, with the end of its log.
        """
        delay_s = FIRST_PROBE_DELAY_S
        while True:
            if self._exit_code.done():
                code = self._exit_code.result()
                if code == EXIT_ADDRESS_IN_USE:
                    await self.remove()
                    raise _PortTaken
                raise ContainerCrashed(
                    f"{describe_exit(code)} during start; its log ends:\n{await self._log_tail()}"
                )
            try:
                _, writer = await asyncio.open_connection(HOST, self.port)
            except OSError:
                await asyncio.wait([self._exit_code], timeout=delay_s)
                delay_s = min(2 * delay_s, MAX_PROBE_DELAY_S)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def init(self) -> None:
        """``POST /init`` with the handler; a refusal means the action cannot run here."""
        env: dict[str, JsonValue] = {
            "__OW_NAMESPACE": self.action.namespace,
            "__OW_ACTION_NAME": f"/{self.action.fqn}",
        }
        if self.action.concurrency > 1:
            env["__OW_ALLOW_CONCURRENT"] = "true"
        value: dict[str, JsonValue] = {
            "name": self.action.name,
            "main": self.action.main if self.action.code else self.action.handler,
            "code": self.action.code,
            "binary": self.action.binary,
            "env": env,
        }
        try:
            status, body = await _post_json(self.port, "/init", {"value": value})
        except _ServerGone as exc:
            raise ContainerCrashed(
                f"{self.action.handler}: {await self._crash_reason(exc)}"
            ) from exc
        if status != 200:
            raise ContainerCrashed(f"{self.action.handler}: {_error_text(status, body)}")

    async def run(self, payload: JsonValue, timeout_s: float) -> RunOutcome:
        if not self._alive:
            raise ContainerCrashed(self._death or "the container is not alive")
        message = {
            "value": payload,
            "namespace": self.action.namespace,
            "action_name": f"/{self.action.fqn}",
            "deadline": str(int((time.time() + timeout_s) * 1000)),
        }
        started_s = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                status, body = await _post_json(self.port, "/run", message)
        except TimeoutError:
            run_ms = (time.perf_counter() - started_s) * 1000
            self._death = self._death or f"killed: a run exceeded its time limit of {timeout_s:g} s"
            await self.remove()
            return RunOutcome(
                Status.TIMEOUT,
                None,
                f"the action exceeded its time limit of {timeout_s:g} s",
                run_ms,
            )
        except _ServerGone as exc:
            raise ContainerCrashed(await self._crash_reason(exc)) from exc
        run_ms = (time.perf_counter() - started_s) * 1000
        if status != 200:
            return RunOutcome(Status.ACTION_ERROR, None, _error_text(status, body), run_ms)
        result: JsonValue = body
        return completed(result, run_ms)

    async def pause(self) -> float:
        """A pause that fails leaves the container running; a dead one shows up in ``alive``."""
        if self.paused or not self._alive:
            return 0.0
        started_s = time.perf_counter()
        try:
            await self._docker("pause", self.docker_id)
        except DockerError as exc:
            log.warning("container %s: pause failed: %s", self.id, exc)
        else:
            self.paused = True
        return (time.perf_counter() - started_s) * 1000

    async def resume(self) -> float:
        if not self.paused:
            return 0.0
        started_s = time.perf_counter()
        try:
            await self._docker("unpause", self.docker_id)
        except DockerError as exc:
            self._alive = False
            self._death = self._death or f"cannot unpause the container: {exc}"
            raise ContainerCrashed(self._death) from exc
        finally:
            self.paused = False
        return (time.perf_counter() - started_s) * 1000

    async def remove(self) -> float:
        """``docker rm -f`` (a paused container too); if the engine refuses, the runtime's
        ``close`` tries again by label."""
        async with self._remove_lock:
            if self._removed:
                return 0.0
            started_s = time.perf_counter()
            self._alive = False
            self._death = self._death or "the container was removed"
            try:
                await self._docker.remove(self.docker_id)
            except DockerError as exc:
                log.warning("container %s: remove failed: %s", self.id, exc)
            self.paused = False
            self._removed = True
            self._on_removed(self)
            return (time.perf_counter() - started_s) * 1000

    def _exited(self, exit_code: asyncio.Future[int]) -> None:
        if self._alive and not exit_code.cancelled():
            self._alive = False
            self._death = describe_exit(exit_code.result())

    async def _crash_reason(self, exc: _ServerGone) -> str:
        """Why the connection broke: our own kill, else the exit code if it comes soon."""
        if self._death is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exit_code), EXIT_GRACE_S)
        self._alive = False
        self._death = self._death or f"lost the action server: {exc}"
        return self._death

    async def _log_tail(self) -> str:
        try:
            return await self._docker("logs", "--tail", "20", self.docker_id, merge_stderr=True)
        except DockerError as exc:
            return f"(no log: {exc})"


def _error_text(status: int, body: Any) -> str:
    if isinstance(body, dict) and "error" in body:
        error = body["error"]
        return error if isinstance(error, str) else json.dumps(error)
    return f"HTTP {status}: {str(body)[:500]}"


async def _post_json(port: int, path: str, body: object) -> tuple[int, Any]:
    """One HTTP/1.1 POST with a JSON body to the action server; returns status and JSON.

    A connection per request: on loopback it costs microseconds, and a run that times out
    or a container that dies then never leaves a half-read connection behind.
    """
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError as exc:
        raise _ServerGone(f"cannot connect to port {port}: {exc}") from exc
    try:
        writer.write(head + data)
        await writer.drain()
        status = int((await reader.readline()).split(None, 2)[1])
        length: int | None = None
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        reply = await reader.readexactly(length) if length is not None else await reader.read()
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        raise _ServerGone(f"the connection broke: {type(exc).__name__}: {exc}") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    try:
        return status, json.loads(reply)
    except ValueError:
        return status, reply.decode(errors="replace")
