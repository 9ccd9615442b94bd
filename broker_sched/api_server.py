"""The HTTP server under the API: uvicorn (h11), bound before it is handed out.

uvicorn parses HTTP/1.1 — request lines, headers, ``Content-Length``, chunked bodies —
and answers what it cannot parse with 400 and a closed connection; its header buffer
(``api.max_header_bytes``) bounds a request head, ``limit_concurrency`` the connections.
What it lacks is a deadline for a request still arriving: it waits as long as a client
cares to dribble bytes (its keep-alive timer only runs between requests). The protocol
below adds one: a connection whose request head and body are not in within
``api.read_timeout_s`` of its first byte (or of the connection) is closed.

:func:`start` binds the socket itself, so a port in use is an error here (uvicorn
would exit the process) and a caller can read the port before serving.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import TracebackType

import anyio
import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from broker_sched.config import ApiSettings
from broker_sched.errors import ConfigError

log = logging.getLogger(__name__)

_READING = (h11.IDLE, h11.SEND_BODY)
"""The client's h11 states while its request is not fully in."""

SHUTDOWN_TIMEOUT_S = 10.0
"""How long closing the server may hold up a shutdown."""


def _deadline_protocol(read_timeout_s: float) -> type[H11Protocol]:
    class DeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and self.conn.their_state in _READING:
                self._arm()
            super().data_received(data)
            if self.conn.their_state not in _READING:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(read_timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.conn.their_state in _READING and not self.transport.is_closing():
                self.transport.close()

    return DeadlineProtocol


class ApiServer:
    """A bound, serving API; ``async with`` it or :meth:`close` it."""

    def __init__(self, server: uvicorn.Server, sock: socket.socket) -> None:
        self._server = server
        self._socket = sock
        self.host, self.port = sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"

    async def serve_forever(self) -> None:
        """Serve until cancelled; the shutdown that follows is shielded from that
        cancellation, and bounded."""
        try:
            await self._server.main_loop()
        finally:
            with anyio.move_on_after(SHUTDOWN_TIMEOUT_S, shield=True):
                await self.close()

    async def close(self) -> None:
        if self._server.started:
            self._server.started = False
            self._server.should_exit = True
            await self._server.shutdown()

    async def __aenter__(self) -> ApiServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


async def start(app: ASGIApp, host: str, port: int, settings: ApiSettings) -> ApiServer:
    """Bind ``host:port`` (0 picks a free port) and start accepting."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_deadline_protocol(settings.read_timeout_s),
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=5,
        limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    sock = _bind(host, port)
    try:
        await server.startup(sockets=[sock])
    except BaseException:
        sock.close()
        raise
    await server.on_tick(0)
    running = ApiServer(server, sock)
    log.info("API listening on %s", running.url)
    return running


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY only on sockets that say so,
    # and without it a response written in two parts waits out the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"API cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock
