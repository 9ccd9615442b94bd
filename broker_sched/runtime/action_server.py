"""The in-container side of the docker runtime: OpenWhisk's action protocol over HTTP.

Usage: ``python3 action_server.py [--host HOST] [--port PORT]`` (defaults: ``$ACTION_HOST``
or 127.0.0.1, ``$ACTION_PORT`` or 8080). The ``broker-sched/action-python`` image runs
this file; the runtime picks a free loopback port for each container.

    POST /init  {"value": {"name": ..., "main": "module:function", "code": "", "binary": false,
                           "env": {...}}}
        200 {"ok": true}
        502 {"error": ...}   the handler cannot be loaded (the container is useless)
        403 {"error": ...}   a second /init: a container runs one action for its life
    POST /run   {"value": <payload>, ...}
        200 <the handler's JSON result>   (a dict with "error" is the handler's own failure)
        502 {"error": "Type: message"}    the handler raised, or returned something not JSON

As in OpenWhisk, ``code`` may carry the source text instead, with ``main`` naming the
function in it (default ``main``); broker-sched itself never sends code, since messages
name actions and the handler's module is mounted read-only on ``PYTHONPATH``. Zipped
(``binary``) actions are not supported.

A handler runs as it would on its own: unless ``/init``'s ``env`` has
``__OW_ALLOW_CONCURRENT`` (the runtime sets it for an action with concurrency > 1),
the action is loaded and every run runs in the process's main thread, one at a time,
while the HTTP server answers from threads of its own; so libraries that keep state per
thread or need the main thread behave as when called directly. A concurrent action's
runs each run on their request's thread, so they can overlap (``async def`` handlers
get an event loop per run). Tracebacks go to stderr, which is the
container's log; replies carry only ``Type: message``. A port already taken makes the
process exit with code 98 (EADDRINUSE) so the runtime can retry on another port.

Standard library only: the image has nothing but ``python3``.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import inspect
import json
import os
import queue
import sys
import threading
import traceback
from collections.abc import Callable
from functools import reduce
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

EXIT_ADDRESS_IN_USE = 98

Handler = Callable[[Any], Any]


class InitError(Exception):
    """The action cannot be loaded; reported as 502 to ``/init``."""


def load_handler(init: dict[str, Any]) -> Handler:
    """The handler named by an ``/init`` value: inline ``code``, else ``module:function``."""
    if init.get("binary"):
        raise InitError("zipped (binary) actions are not supported by this runtime")
    main = str(init.get("main") or "main")
    code = init.get("code") or ""
    try:
        if code:
            namespace: dict[str, Any] = {"__name__": "__action__"}
            exec(compile(code, f"<action {init.get('name', '')}>", "exec"), namespace)
            handler = namespace[main]
        else:
            module_name, _, attribute = main.partition(":")
            if not module_name or not attribute:
                raise InitError(f"main must look like 'module:function', got {main!r}")
            handler = reduce(getattr, attribute.split("."), importlib.import_module(module_name))
    except InitError:
        raise
    except BaseException as exc:  # SystemExit from a module body is a load failure too
        traceback.print_exc()
        raise InitError(f"cannot load {main!r}: {type(exc).__name__}: {exc}") from exc
    if not callable(handler):
        raise InitError(f"{main} is a {type(handler).__name__}, not a function")
    loaded: Handler = handler
    return loaded


class MainThread:
    """Runs calls in the process's main thread on behalf of the server's threads."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]] = (
            queue.SimpleQueue()
        )

    def call(self, function: Callable[[], Any]) -> Any:
        """``function()`` run in the main thread; blocks the calling thread until done."""
        answer: list[Any] = []
        done = threading.Event()
        self._calls.put((function, answer, done))
        done.wait()
        return answer[0]

    def serve(self) -> None:
        """The main thread's loop; never returns."""
        while True:
            function, answer, done = self._calls.get()
            answer.append(function())
            done.set()


class Action:
    """The one action this container serves, set by the first successful ``/init``."""

    def __init__(self, main_thread: MainThread) -> None:
        self.handler: Handler | None = None
        self.concurrent = False
        self._main_thread = main_thread
        self._lock = threading.Lock()

    def init(self, value: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            if self.handler is not None:
                return 403, {"error": "Cannot initialize the action more than once."}
            env = value.get("env")
            env = {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}
            concurrent = "__OW_ALLOW_CONCURRENT" in env
            try:
                if concurrent:
                    handler = load_handler(value)
                else:
                    handler = self._main_thread.call(lambda: _loaded(value))
                    if isinstance(handler, InitError):
                        raise handler
            except InitError as exc:
                return 502, {"error": str(exc)}
            os.environ.update(env)
            self.concurrent = concurrent
            self.handler = handler
            return 200, {"ok": True}

    def run(self, payload: Any) -> tuple[int, Any]:
        if self.handler is not None and not self.concurrent:
            answer: tuple[int, Any] = self._main_thread.call(lambda: self._run(payload))
            return answer
        return self._run(payload)

    def _run(self, payload: Any) -> tuple[int, Any]:
        handler = self.handler
        if handler is None:
            return 502, {"error": "Cannot invoke an uninitialized action."}
        try:
            result = handler(payload)
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
            json.dumps(result)
        except BaseException as exc:  # a handler's SystemExit must not end the server
            traceback.print_exc()
            return 502, {"error": f"{type(exc).__name__}: {exc}"}
        return 200, result


def _loaded(value: dict[str, Any]) -> Handler | InitError:
    """The handler, or the error loading it, for a call across threads."""
    try:
        return load_handler(value)
    except InitError as exc:
        return exc


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, address: tuple[str, int], action: Action) -> None:
        super().__init__(address, RequestHandler)
        self.action = action


class RequestHandler(BaseHTTPRequestHandler):
    server: Server

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
            message = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(message, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            self._reply(400, {"error": f"bad request: {exc}"})
            return
        action = self.server.action
        if self.path == "/init":
            value = message.get("value")
            self._reply(*action.init(value if isinstance(value, dict) else {}))
        elif self.path == "/run":
            self._reply(*action.run(message.get("value")))
        else:
            self._reply(404, {"error": f"no such endpoint {self.path}"})

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """One log line per request would flood the container log; errors still print."""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="action_server.py")
    parser.add_argument("--host", default=os.environ.get("ACTION_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ACTION_PORT", "8080")))
    args = parser.parse_args(argv)
    main_thread = MainThread()
    try:
        server = Server((args.host, args.port), Action(main_thread))
    except OSError as exc:
        print(f"action server: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_ADDRESS_IN_USE if exc.errno == errno.EADDRINUSE else 1
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    main_thread.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
