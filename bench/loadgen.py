"""A lean closed-loop load generator for OpenAI-style chat completions.

asyncio.Protocol + httptools response parser + uvloop; one keep-alive
connection per virtual user (VU), each VU sends its next request as soon as the
previous one completes. Bounded by a request count AND a time limit: no request
starts after ``--duration``, and in-flight requests are cut (counted as
``timeout`` errors) ``--grace`` seconds later.

Per request: latency (send -> full response), TTFT for streams (send -> first
SSE ``data:`` event with non-empty ``delta.content``), content chunk count and
errors (non-200, ``error`` frames, bad JSON, streams without ``[DONE]``, lost
connections, timeouts). Prints one JSON object with the aggregate.

Run: ``python bench/loadgen.py --url http://127.0.0.1:9100 --model mock-50 --stream -c 64``
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import orjson
import uvloop
from loadstats import Stats, pct
from procstats import tree_cpu_seconds

PATH = "/v1/chat/completions"


def build_request(host: str, port: int, model: str, stream: bool, api_key: str) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    raw = orjson.dumps(body)
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {api_key}\r\nContent-Length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self, stream: bool) -> None:
        self.stream = stream
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.fut: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self._reset(0.0)

    def _reset(self, t0: float) -> None:
        self.t0 = t0
        self.status = 0
        self.buf = b""
        self.body: list[bytes] = []
        self.ttft: float | None = None
        self.latency = 0.0
        self.chunks = 0
        self.done = False
        self.error: str | None = None
        self.detail = b""

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._finish(f"http_parse: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._finish("connection_lost")

    # -- request ------------------------------------------------------------
    async def request(self, raw: bytes, limit: float) -> None:
        assert self.transport is not None
        self._reset(time.perf_counter())
        self.fut = self.loop.create_future()
        self.timer = self.loop.call_later(limit, self._timeout)
        self.transport.write(raw)
        await self.fut

    def _timeout(self) -> None:
        self.timer = None
        self._finish("timeout")
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, error: str | None) -> None:
        fut = self.fut
        if fut is None or fut.done():
            return
        self.latency = time.perf_counter() - self.t0
        if error is not None and self.error is None:
            self.error = error
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        fut.set_result(None)

    # -- httptools callbacks ------------------------------------------------
    def on_status(self, status: bytes) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, data: bytes) -> None:
        if not self.stream or self.status != 200:
            self.body.append(data)
            return
        buf = self.buf + data if self.buf else data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        pos = 0
        while True:
            end = buf.find(b"\n\n", pos)
            if end < 0:
                break
            self._event(buf[pos:end])
            pos = end + 2
        self.buf = buf[pos:]

    def _event(self, block: bytes) -> None:
        lines = [ln[5:].lstrip() for ln in block.split(b"\n") if ln.startswith(b"data:")]
        if not lines:
            return
        payload = lines[0] if len(lines) == 1 else b"\n".join(lines)
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.error = self.error or "bad_sse_json"
            return
        if not isinstance(obj, dict):
            return
        if obj.get("error") is not None:
            self.error = self.error or "error_frame"
            self.detail = self.detail or payload[:300]
            return
        choices = obj.get("choices")
        if choices:
            delta = choices[0].get("delta") or {}
            if delta.get("content"):
                self.chunks += 1
                if self.ttft is None:
                    self.ttft = time.perf_counter() - self.t0

    def on_message_complete(self) -> None:
        error: str | None = None
        if self.status != 200:
            error = f"http_{self.status}"
            self.detail = b"".join(self.body)[:300]
        elif self.stream:
            if not self.done:
                error = "truncated"
        else:
            try:
                obj = orjson.loads(b"".join(self.body))
                if not obj["choices"][0]["message"]["content"]:
                    error = "empty_content"
            except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
                error = "bad_json"
        if not self.parser.should_keep_alive():
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        self._finish(error)


class Runner:
    def __init__(self, a: argparse.Namespace) -> None:
        u = urlsplit(a.url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.a = a
        self.raw = build_request(self.host, self.port, a.model, a.stream, a.api_key)
        self.issued = 0
        self.deadline = 0.0
        self.grace = a.grace
        self.stats: Stats | None = None

    async def _connect(self) -> Conn | None:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await loop.create_connection(
                lambda: Conn(self.a.stream), self.host, self.port
            )
        except OSError:
            return None
        return proto

    async def vu(self, conn: Conn | None, count: int | None) -> Conn | None:
        """Send requests back to back: ``count`` of them (warm-up) or until the bounds."""
        done = 0
        while True:
            now = time.perf_counter()
            if now >= self.deadline:
                return conn
            if count is not None:
                if done >= count:
                    return conn
                done += 1
            elif self.issued >= self.a.requests:
                return conn
            else:
                self.issued += 1
            if conn is None or conn.closed:
                conn = await self._connect()
                if conn is None:
                    if self.stats is not None:
                        self.stats.errors["connect"] = self.stats.errors.get("connect", 0) + 1
                    await asyncio.sleep(0.05)
                    continue
            limit = max(0.001, min(self.a.timeout, self.deadline + self.grace - now))
            await conn.request(self.raw, limit)
            if self.stats is not None:
                self.stats.add(conn)

    async def run(self) -> dict[str, Any]:
        a = self.a
        conns: list[Conn | None] = [None] * a.concurrency
        if a.warmup > 0:  # unmeasured: opens the connections, warms caches
            self.deadline, self.grace = time.perf_counter() + a.warmup_duration, 0.0
            conns = list(await asyncio.gather(*(self.vu(None, a.warmup) for _ in conns)))
            self.grace = a.grace
            if a.cpu_pid:  # let the target finish what the warm-up cut short
                await settle(a.cpu_pid[0], a.settle)
        self.stats = st = Stats()
        cpu0 = [tree_cpu_seconds(p) for p in a.cpu_pid]
        own0 = time.process_time()
        t0 = time.perf_counter()
        self.deadline = t0 + a.duration
        final = await asyncio.gather(*(self.vu(c, None) for c in conns))
        wall = time.perf_counter() - t0
        own = time.process_time() - own0
        cpu = [tree_cpu_seconds(p) - c0 for p, c0 in zip(a.cpu_pid, cpu0, strict=True)]
        for c in final:
            if c is not None:
                c.close()
        n = st.ok + sum(st.errors.values())
        return {
            "model": a.model,
            "stream": a.stream,
            "concurrency": a.concurrency,
            "requests": n,
            "ok": st.ok,
            "errors": sum(st.errors.values()),
            "error_kinds": st.errors,
            "error_samples": st.samples,
            "wall_s": round(wall, 3),
            "rps": round(st.ok / wall, 2) if wall > 0 else 0.0,
            "latency_ms": {"p50": pct(st.latencies, 50), "p99": pct(st.latencies, 99)},
            "ttft_ms": {"p50": pct(st.ttfts, 50), "p99": pct(st.ttfts, 99)},
            "ttft_censored": st.ttft_censored,
            "chunks": st.chunks,
            "chunks_per_s": round(st.chunks / wall, 1) if wall > 0 else 0.0,
            "cpu_s": [round(c, 3) for c in cpu],
            "cpu_ms_per_req": [round(c * 1000.0 / n, 4) if n else None for c in cpu],
            "cpu_pct": [round(100.0 * c / wall, 1) if wall > 0 else None for c in cpu],
            "loadgen_cpu_pct": round(100.0 * own / wall, 1) if wall > 0 else None,
        }


async def settle(pid: int, limit: float) -> None:
    """Wait until ``pid``'s tree uses < 5 % CPU over 0.25 s, at most ``limit`` seconds."""
    end = time.perf_counter() + limit
    while time.perf_counter() < end:
        c0 = tree_cpu_seconds(pid)
        await asyncio.sleep(0.25)
        if tree_cpu_seconds(pid) - c0 < 0.0125:
            return


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--url", default="http://127.0.0.1:9100", help="base URL of the target")
    ap.add_argument("--model", default="mock")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("-c", "--concurrency", type=int, default=1, help="VUs = connections")
    ap.add_argument("-n", "--requests", type=int, default=1000, help="max measured requests")
    ap.add_argument("-d", "--duration", type=float, default=5.0, help="max seconds to start")
    ap.add_argument("--grace", type=float, default=10.0, help="seconds to finish in-flight")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured requests per VU")
    ap.add_argument("--warmup-duration", type=float, default=5.0, help="max warm-up seconds")
    ap.add_argument("--settle", type=float, default=10.0, help="max s to wait for idle")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, s")
    ap.add_argument("--api-key", default="sk-bench")
    ap.add_argument(
        "--cpu-pid", type=int, action="append", default=[], help="measure this process tree"
    )
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    result = uvloop.run(Runner(args).run())
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
