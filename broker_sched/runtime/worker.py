"""The container side of the process runtime: ``python -m broker_sched.runtime.worker``.

Usage: ``python -m broker_sched.runtime.worker [--concurrency N] [--parent-pid PID]
[--stdout-fd FD] [module:function]``.

The worker imports the handler, then answers requests until its stdin closes. Started
without a handler it is a stem cell (a prewarmed container): the interpreter is up and
waits for the first line to name its handler, so becoming an action's container costs
only that import. The protocol is JSON lines over the process's original stdin and
stdout:

    worker → parent   {"stem": true}                        stem cell only: up, no handler
    parent → worker   {"init": "module:function", "concurrency": 4}   stem cell only
                      {"init": "", "code": "...", "binary": false, "main": "main",
                       "name": "hello", "concurrency": 1}      an action with its own code
    worker → parent   {"ready": true}                       handler imported
                      {"ready": false, "error": "..."}      import failed; exit code 1
    parent → worker   {"id": 7, "payload": <json>}
    worker → parent   {"id": 7, "ok": true, "result": <json>}
                      {"id": 7, "ok": false, "error": "ValueError: ..."}

Handler code must not be able to corrupt that stream, so before anything is imported
the protocol moves to private file descriptors: fd 1 becomes ``--stdout-fd`` (a pipe the
parent reads as the handler's stdout; without it, a copy of stderr), so prints, even
from C code or child processes, end up in the container's log, and fd 0 reads
``/dev/null``. Tracebacks go to stderr too; replies carry only ``Type: message``. Before
each reply the worker writes :data:`RUN_END_MARKER` and the request id as a line on
both fd 1 and fd 2, so the parent can tell which output belongs to which run (its
activation logs).

A handler runs as it would on its own. With ``--concurrency 1`` a sync handler runs in
the process's main thread, as OpenWhisk's Python runtime runs an action: libraries that
keep state per thread (a C extension's random number generator seeded through
``random.seed``, ``signal.signal``, an sqlite connection, a plotting backend) see the
thread they would see when called directly. The protocol's reading then moves to a
thread of its own, and the main thread only runs handlers and writes their replies.
With a higher concurrency, sync handlers run in a pool of ``--concurrency`` threads
(state a library keeps per thread is then per pool thread, not per run), and
``async def`` handlers always run on the worker's event loop in the main thread; either
way at most ``--concurrency`` run at once.

An action's own code (OpenWhisk's ``exec.code``) is Python source, run as a module of
its own, or a base64 zip of pure-Python files with ``__main__.py``, extracted to a
temporary directory put first on ``sys.path`` (so its other modules import); either
way ``main`` names the function to run.

This module imports nothing outside the standard library so a cold start pays only for
the interpreter and the handler's own imports.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import importlib
import inspect
import json
import os
import queue
import signal
import stat
import sys
import threading
import traceback
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import reduce
from typing import Any, BinaryIO

LINE_LIMIT_BYTES = 64 * 1024 * 1024
"""Longest protocol line either side accepts; a longer result becomes an action error."""

RUN_END_MARKER = "\x1ebroker-sched:end-of-run:"
"""Written, followed by the request id and a newline, to stdout and stderr after each
run: what came before it on that stream since the previous marker is that run's output.
A last line without a newline ends up before the marker on the marker's line."""

PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal this process gets when its parent thread exits."""

Handler = Callable[[Any], Any]


def load_handler(spec: str) -> Handler:
    """Resolve ``module:function`` (the function part may be dotted, e.g. ``Class.method``)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"handler must look like 'module:function', got {spec!r}")
    module = importlib.import_module(module_name)
    handler = reduce(getattr, attribute.split("."), module)
    if not callable(handler):
        raise TypeError(f"{spec} is a {type(handler).__name__}, not a function")
    return handler


@dataclass(frozen=True, slots=True)
class Init:
    """What a worker is to run: a handler reference, or an action's own code."""

    spec: str
    concurrency: int = 1
    code: str = ""
    binary: bool = False
    main: str = "main"
    name: str = "action"

    def describe(self) -> str:
        return f"{self.name}'s {self.main}" if self.code else f"handler {self.spec!r}"


def load(init: Init) -> Handler:
    """The function ``init`` names; its import or load error as raised."""
    if not init.code:
        return load_handler(init.spec)
    module = _zip_module(init) if init.binary else _source_module(init)
    handler = getattr(module, init.main, None)
    if handler is None:
        raise AttributeError(f"the action's code defines no {init.main!r}")
    if not callable(handler):
        raise TypeError(f"{init.main} is a {type(handler).__name__}, not a function")
    loaded: Handler = handler
    return loaded


def _source_module(init: Init) -> types.ModuleType:
    module = types.ModuleType("__action__")
    module.__file__ = f"<action {init.name}>"
    sys.modules["__action__"] = module
    exec(compile(init.code, module.__file__, "exec"), module.__dict__)
    return module


def _zip_module(init: Init) -> types.ModuleType:
    """Extract the zip and import its ``__main__.py`` as module ``__action__``.

    Imported here: most workers never load a zip, and every import is cold-start time.
    """
    import base64
    import importlib.util
    import io
    import tempfile
    import zipfile

    directory = tempfile.mkdtemp(prefix=f"action-{init.name}-")
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(init.code, validate=True))) as archive:
        archive.extractall(directory)
    entry = os.path.join(directory, "__main__.py")
    if not os.path.isfile(entry):
        raise FileNotFoundError("the action's zip has no __main__.py")
    sys.path.insert(0, directory)
    spec = importlib.util.spec_from_file_location("__action__", entry)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["__action__"] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker_sched.runtime.worker")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--stdout-fd", type=int)
    parser.add_argument("handler", nargs="?")
    args = parser.parse_args(argv)
    if args.parent_pid is not None and not _die_with_parent(args.parent_pid):
        return 1
    stdin_mode = os.fstat(0).st_mode
    if not (stat.S_ISFIFO(stdin_mode) or stat.S_ISSOCK(stdin_mode)):
        print("worker: stdin must be a pipe; the process runtime starts this", file=sys.stderr)
        return 2
    protocol_in, protocol_out = _take_protocol_fds(args.stdout_fd)
    init = Init(args.handler or "", args.concurrency)
    if args.handler is None:
        os.write(protocol_out, _encode({"stem": True}))
        try:
            init = _await_init(protocol_in)
        except (ValueError, KeyError, TypeError) as exc:
            print(f"worker: a stem cell needs an init line first: {exc}", file=sys.stderr)
            return 2
    concurrency = init.concurrency
    with open(protocol_in, "rb") as pipe_in, open(protocol_out, "wb") as out:
        try:
            handler = load(init)
        except (Exception, SystemExit) as exc:
            traceback.print_exc()
            error = f"cannot load {init.describe()}: {type(exc).__name__}: {exc}"
            _write(out, _encode({"ready": False, "error": error}))
            return 1
        _write(out, _encode({"ready": True}))
        try:
            if concurrency <= 1 and not inspect.iscoroutinefunction(handler):
                _serve_in_main_thread(handler, pipe_in, out)
            else:
                asyncio.run(_serve(handler, max(1, concurrency), pipe_in, out))
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        except (ValueError, KeyError, TypeError):
            traceback.print_exc()
            print("worker: the parent broke the protocol", file=sys.stderr)
            return 2
    return 0


def _die_with_parent(parent_pid: int) -> bool:
    """Have the kernel SIGKILL this worker when its parent dies; False if it already has.

    A running worker notices a dead parent by its stdin closing, but a paused one
    (SIGSTOP) cannot: without this it would stay stopped forever. Linux only; elsewhere
    the stdin rule is all there is.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return True
    return os.getppid() == parent_pid


def _await_init(protocol_in: int) -> Init:
    """Block until the parent names the handler: a stem cell's first protocol line.

    Read a byte at a time from the raw descriptor, so nothing after the line is taken
    into a buffer the request loop would never see.
    """
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = os.read(protocol_in, 1)
        if not byte:
            raise ValueError("stdin closed before the init line")
        line += byte
    message = json.loads(line)
    init = Init(
        message["init"],
        message.get("concurrency", 1),
        message.get("code", ""),
        message.get("binary", False),
        message.get("main", "main"),
        message.get("name", "action"),
    )
    if not all(isinstance(getattr(init, f), str) for f in ("spec", "code", "main", "name")) or (
        not isinstance(init.concurrency, int) or not isinstance(init.binary, bool)
    ):
        raise TypeError(f"bad init line: {bytes(line[:200])!r}")
    return init


def _take_protocol_fds(stdout_fd: int | None) -> tuple[int, int]:
    """Keep the original stdin/stdout for the protocol; point fds 0 and 1 elsewhere:
    fd 1 to ``stdout_fd`` when the parent gave one, else to stderr."""
    protocol_in = os.dup(0)
    protocol_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if stdout_fd is None:
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    else:
        os.dup2(stdout_fd, 1)
        os.close(stdout_fd)
    return protocol_in, protocol_out


def _serve_in_main_thread(handler: Handler, pipe_in: BinaryIO, out: BinaryIO) -> None:
    """Run each request's handler in this, the main, thread; a thread reads requests.

    When stdin closes the reader ends the process at once, abandoning a running
    handler, as :func:`_serve` does. A handler that calls ``sys.exit`` ends the worker.
    """
    requests: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
    reader = threading.Thread(
        target=_read_requests, args=(pipe_in, requests), name="protocol", daemon=True
    )
    reader.start()
    while True:
        request_id, payload = requests.get()
        try:
            result = handler(payload)
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
        except Exception as exc:
            traceback.print_exc()
            line = _encode({"id": request_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        else:
            line = _result_line(request_id, result)
        _end_run(request_id)
        _write(out, line)


def _read_requests(pipe_in: BinaryIO, requests: queue.SimpleQueue[tuple[int, Any]]) -> None:
    """The protocol's reader thread: queue each request; exit the process at EOF."""
    code = 0
    try:
        while line := pipe_in.readline():
            request = json.loads(line)
            requests.put((request["id"], request.get("payload")))
    except (ValueError, KeyError, TypeError):
        traceback.print_exc()
        print("worker: the parent broke the protocol", file=sys.stderr)
        code = 2
    sys.stderr.flush()
    os._exit(code)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _end_run(request_id: int) -> None:
    """Mark the end of one run's output on stdout and stderr (see :data:`RUN_END_MARKER`)."""
    marker = f"{RUN_END_MARKER}{request_id}\n".encode()
    for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
        try:
            stream.flush()
            os.write(fd, marker)
        except (OSError, ValueError):
            continue


async def _serve(handler: Handler, concurrency: int, pipe_in: BinaryIO, out: BinaryIO) -> None:
    """Answer requests until stdin closes; then return at once, abandoning running handlers.

    Stdin closes when the parent removes the container or dies; nobody is left to
    read an answer, so waiting for a stuck handler would only keep the process alive.
    A handler that calls ``sys.exit`` ends the worker: the parent sees a crash.
    """
    loop = asyncio.get_running_loop()
    requests = asyncio.StreamReader(limit=LINE_LIMIT_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(requests), pipe_in)
    slots = asyncio.Semaphore(concurrency)
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="handler")
    in_flight: set[asyncio.Task[None]] = set()
    try:
        while line := await requests.readline():
            request = json.loads(line)
            answer = _answer(handler, pool, slots, request["id"], request.get("payload"), out)
            task = asyncio.create_task(answer)
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


async def _answer(
    handler: Handler,
    pool: ThreadPoolExecutor,
    slots: asyncio.Semaphore,
    request_id: int,
    payload: Any,
    out: BinaryIO,
) -> None:
    async with slots:
        try:
            if inspect.iscoroutinefunction(handler):
                result = await handler(payload)
            else:
                result = await asyncio.get_running_loop().run_in_executor(pool, handler, payload)
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            traceback.print_exc()
            error = f"{type(exc).__name__}: {exc}"
            _end_run(request_id)
            _write(out, _encode({"id": request_id, "ok": False, "error": error}))
            return
    _end_run(request_id)
    _write(out, _result_line(request_id, result))


def _result_line(request_id: int, result: Any) -> bytes:
    try:
        line = _encode({"id": request_id, "ok": True, "result": result})
    except (TypeError, ValueError) as exc:
        error = f"the handler's result is not JSON-serializable: {type(exc).__name__}: {exc}"
        return _encode({"id": request_id, "ok": False, "error": error})
    if len(line) > LINE_LIMIT_BYTES:
        error = f"the handler's result of {len(line)} bytes exceeds {LINE_LIMIT_BYTES} bytes"
        return _encode({"id": request_id, "ok": False, "error": error})
    return line


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, allow_nan=False, separators=(",", ":")).encode() + b"\n"


def _write(out: BinaryIO, line: bytes) -> None:
    """A blocking write from the one thread that answers; the parent always reads."""
    out.write(line)
    out.flush()


if __name__ == "__main__":
    exit_code = main(sys.argv[1:])
    sys.stderr.flush()
    os._exit(exit_code)
