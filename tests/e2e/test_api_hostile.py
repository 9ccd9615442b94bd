"""Hostile clients: each gets a 4xx or a closed connection within a bound, and the API
keeps answering everyone else meanwhile.

Raw sockets, because a well-behaved HTTP client cannot send what these send.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest
from embedded import embedded_settings, stack_with

from broker_sched.api import Api
from broker_sched.api_keys import Credential, Keyring, digest
from broker_sched.api_server import ApiServer
from broker_sched.model import Action

pytestmark = pytest.mark.slow

READ_TIMEOUT_S = 1.0
BOUND_S = READ_TIMEOUT_S + 4.0
"""How long any hostile client may hold a connection before it must be answered or closed."""
AUTH = "Authorization: Basic " + base64.b64encode(b"u1:k1").decode()
INVOKE = "/api/v1/namespaces/guest/actions/echo?blocking=true"


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    settings = embedded_settings(
        max_payload_bytes=4096,
        api={"read_timeout_s": READ_TIMEOUT_S, "max_header_bytes": 8192, "keep_alive_s": 2},
    )
    actions = [Action(name="echo", handler="broker_sched.samples:echo")]
    async with stack_with(actions, settings=settings) as stack:
        assert stack.controller is not None
        keyring = Keyring([Credential("u1", "guest", digest("k1"))])
        async with await Api(stack.controller, keyring).start("127.0.0.1", 0) as running:
            yield running


def post(body: bytes, *headers: str) -> bytes:
    head = [f"POST {INVOKE} HTTP/1.1", "Host: x", AUTH, *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def exchange(port: int, raw: bytes) -> tuple[int | None, bytes]:
    """Send ``raw``; the status of the answer (None: closed unanswered) and its bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(BOUND_S):
            answer = await _response(reader)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return (int(answer.split()[1]) if answer else None), answer


async def _response(reader: asyncio.StreamReader) -> bytes:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial
    except ConnectionError:
        return b""
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    return head + await reader.readexactly(length)


async def healthy(port: int) -> bool:
    status, _ = await exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    return status == 200


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="no-method-or-version"),
        pytest.param(b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", id="unknown-version"),
        pytest.param(b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", id="nul-in-target"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), id="tls-hello"),
        pytest.param(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", id="header-without-colon"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65_536 + b"\r\n\r\n", id="huge-header"
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-H: v\r\n" * 4000 + b"\r\n", id="many-headers"
        ),
        pytest.param(post(b"{}", "Content-Length: abc"), id="length-not-a-number"),
        pytest.param(post(b"{}", "Content-Length: -1"), id="length-negative"),
        pytest.param(post(b"{}", "Content-Length: 2", "Content-Length: 3"), id="length-twice"),
        pytest.param(post(b"{}", "Content-Length: 99999999999"), id="length-oversize"),
        pytest.param(
            post(b"zz\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), id="chunk-size-not-hex"
        ),
        pytest.param(
            post(
                b"1000\r\n" + b"x" * 4096 + b"\r\n1000\r\n" + b"x" * 4096 + b"\r\n0\r\n\r\n",
                "Transfer-Encoding: chunked",
            ),
            id="chunked-oversize",
        ),
        pytest.param(post(b"{nope", "Content-Length: 5"), id="invalid-json"),
        pytest.param(post(b'"\xff\xfe"', "Content-Length: 4"), id="invalid-utf8"),
        pytest.param(
            post(b"{}", "Content-Length: 2").replace(AUTH.encode(), b"Authorization: Basic !!!"),
            id="bad-auth",
        ),
        pytest.param(b"GET /%ff%fe/../../etc HTTP/1.1\r\nHost: x\r\n\r\n", id="odd-path"),
    ],
)
async def test_a_malformed_request_gets_4xx_or_a_closed_connection(
    server: ApiServer, raw: bytes
) -> None:
    status, answer = await exchange(server.port, raw)
    assert status is None or 400 <= status < 500, answer[:200]
    assert await healthy(server.port)


async def test_a_chunked_body_is_the_payload_and_the_connection_stays_in_step(
    server: ApiServer,
) -> None:
    body = json.dumps({"x": 1}).encode()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for _ in range(2):
            writer.write(post(chunked, "Transfer-Encoding: chunked"))
            await writer.drain()
            async with asyncio.timeout(BOUND_S):
                answer = await _response(reader)
            assert answer.split()[1] == b"200", answer[:200]
            activation = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            assert activation["response"]["result"] == {"x": 1}
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"POST /api/v1/namesp", id="half-a-request-line"),
        pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\n", id="headers-never-end"),
        pytest.param(post(b'{"x":', "Content-Length: 100"), id="body-never-ends"),
    ],
)
async def test_slow_partial_requests_are_closed_and_others_are_served(
    server: ApiServer, partial: bytes
) -> None:
    clients = 200
    connections = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(clients)]
    try:
        for _, writer in connections:
            writer.write(partial)
        started_s = time.monotonic()
        assert await healthy(server.port), "served while 200 clients hold connections"

        async def closed(reader: asyncio.StreamReader) -> None:
            with contextlib.suppress(ConnectionError):
                while await reader.read(65_536):
                    pass

        async with asyncio.timeout(BOUND_S):
            await asyncio.gather(*(closed(reader) for reader, _ in connections))
        assert time.monotonic() - started_s >= READ_TIMEOUT_S * 0.9, "closed by the deadline"
    finally:
        for _, writer in connections:
            writer.close()
    assert await healthy(server.port)


async def test_a_client_dribbling_bytes_is_still_cut_off_at_the_deadline(
    server: ApiServer,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started_s = time.monotonic()
    try:
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(BOUND_S):
                for byte in b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    if reader.at_eof() or writer.is_closing():
                        break
                await reader.read()
    finally:
        writer.close()
    assert time.monotonic() - started_s < BOUND_S
    assert await healthy(server.port)
