"""The upstream transport: keep-alive reuse, stale connections, chunked bodies, failures."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from providers.http1 import PoolTransport
from tests.support.servers import free_port, serve_in_thread


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/chunked":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"a" * 10, b"b" * 70_000, b"c"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b"x" * 300_000 if scope["path"] == "/big" else scope["path"].encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def request_head(path: str, port: int) -> bytes:
    return f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-length: 2\r\n\r\n".encode()


def test_sequential_requests_reuse_one_connection() -> None:
    with serve_in_thread(app) as url:
        port = int(url.rsplit(":", 1)[1])

        async def run() -> tuple[list[bytes], int]:
            transport = PoolTransport()
            pool = transport.origin(url)
            bodies = []
            for i in range(5):
                response = await transport.exchange(pool, request_head(f"/r{i}", port), b"{}")
                bodies.append(b"".join([c async for c in response.aiter_raw()]))
                await response.aclose()
            count = len(pool.connections)
            await transport.aclose()
            return bodies, count

        bodies, connections = asyncio.run(run())
    assert bodies == [f"/r{i}".encode() for i in range(5)]
    assert connections == 1


def test_a_connection_the_server_closed_while_idle_is_replaced_transparently() -> None:
    with serve_in_thread(app, timeout_keep_alive=0.2) as url:
        port = int(url.rsplit(":", 1)[1])

        async def run() -> list[bytes]:
            transport = PoolTransport()
            pool = transport.origin(url)
            bodies = []
            for i in range(2):
                response = await transport.exchange(pool, request_head(f"/s{i}", port), b"{}")
                bodies.append(b"".join([c async for c in response.aiter_raw()]))
                await response.aclose()
                await asyncio.sleep(0.5)  # the server's keep-alive timeout closes it
            await transport.aclose()
            return bodies

        assert asyncio.run(run()) == [b"/s0", b"/s1"]


def test_a_connection_released_with_unread_paused_bytes_serves_the_next_request() -> None:
    # A 300 KB answer passes the read buffer's high-water mark, so reading pauses; released
    # after one read (as an error body read up to its limit is), the connection goes back to
    # the pool and must read again for the next request.
    with serve_in_thread(app) as url:
        port = int(url.rsplit(":", 1)[1])

        async def run() -> tuple[list[bytes], int]:
            transport = PoolTransport()
            pool = transport.origin(url)
            bodies = []
            for _ in range(5):
                big = await transport.exchange(pool, request_head("/big", port), b"{}")
                await asyncio.sleep(0.05)  # the whole answer arrives
                await big.read()
                await big.aclose()
                small = await asyncio.wait_for(
                    transport.exchange(pool, request_head("/small", port), b"{}"), 5
                )
                bodies.append(b"".join([c async for c in small.aiter_raw()]))
                await small.aclose()
            count = len(pool.connections)
            await transport.aclose()
            return bodies, count

        bodies, connections = asyncio.run(run())
    assert bodies == [b"/small"] * 5
    assert connections == 1


def test_chunked_bodies_arrive_whole_through_httpx() -> None:
    with serve_in_thread(app) as url:

        async def run() -> bytes:
            async with httpx.AsyncClient(transport=PoolTransport()) as client:
                response = await client.post(url + "/chunked", content=b"{}")
                return response.content

        assert asyncio.run(run()) == b"a" * 10 + b"b" * 70_000 + b"c"


def test_refused_connection_is_httpx_connect_error() -> None:
    async def run() -> None:
        transport = PoolTransport()
        pool = transport.origin(f"http://127.0.0.1:{free_port()}")
        try:
            await transport.exchange(pool, b"GET / HTTP/1.1\r\n\r\n", b"")
        finally:
            await transport.aclose()

    started = time.monotonic()
    with pytest.raises(httpx.ConnectError):
        asyncio.run(run())
    assert time.monotonic() - started < 5
