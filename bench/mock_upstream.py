"""A cheap mock OpenAI upstream: raw asyncio.Protocol + httptools + uvloop.

It must never be the bottleneck of the bench, so it avoids any framework:
requests are parsed by httptools, responses are pre-encoded bytes cached per
(model, chunks, usage) and written with one ``transport.write`` per response
(unpaced) or per chunk (paced, driven by ``loop.call_at`` callbacks, no tasks).

Routes:
  POST /v1/chat/completions  non-stream -> one ``chat.completion`` JSON
                             stream     -> N ``chat.completion.chunk`` SSE events,
                                           a finish_reason chunk, a usage chunk if
                                           ``stream_options.include_usage``, ``[DONE]``
  GET  /v1/models            the advertised models
  GET  /health               200

The stream shape is chosen by the model name, because a gateway forwards the
model but not custom headers: ``mock`` (non-stream size / 50 chunks), ``mock-N``
(N chunks), ``mock-N-paced-D`` (N chunks, D ms apart). A ``provider/`` prefix is
ignored, so ``mock/mock-50`` works when the bench talks to the mock directly.
Headers ``x-mock-chunks`` and ``x-mock-delay-ms`` override the model name.

Run: ``python bench/mock_upstream.py --port 9100``
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import socket
import time
from typing import Any, cast

import httptools
import orjson
import uvloop

DEFAULT_CHUNKS = 50
MODELS = ["mock", "mock-50", "mock-50-paced-20"]
_MODEL_RE = re.compile(r"^mock(?:-(\d+))?(?:-paced-(\d+))?$")
_CREATED = int(time.time())
_TEXT = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)
_LAST_CHUNK = b"0\r\n\r\n"


def _http(status: int, body: bytes, ctype: bytes = b"application/json") -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(status, b"Error")
    return _TEXT % (status, reason, ctype, len(body)) + body


def _frame(payload: bytes) -> bytes:
    """One SSE event as one HTTP/1.1 chunk."""
    event = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def parse_model(model: str) -> tuple[int, float]:
    """Return (chunks, delay seconds) for a model name like ``mock-50-paced-20``."""
    m = _MODEL_RE.match(model.rsplit("/", 1)[-1])
    if m is None:
        return DEFAULT_CHUNKS, 0.0
    chunks = int(m.group(1)) if m.group(1) else DEFAULT_CHUNKS
    delay = int(m.group(2)) / 1000.0 if m.group(2) else 0.0
    return chunks, delay


_nonstream_cache: dict[str, bytes] = {}
_stream_cache: dict[tuple[str, int, bool], list[bytes]] = {}
_MODELS_RESP = _http(
    200,
    orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": _CREATED, "owned_by": "mock"}
                for m in MODELS
            ],
        }
    ),
)
_HEALTH_RESP = _http(200, b'{"status":"ok"}')
_NOT_FOUND = _http(404, b'{"error":{"message":"not found","type":"invalid_request_error"}}')
_BAD_REQUEST = _http(400, b'{"error":{"message":"bad json","type":"invalid_request_error"}}')


def nonstream_response(model: str) -> bytes:
    resp = _nonstream_cache.get(model)
    if resp is None:
        body = orjson.dumps(
            {
                "id": "chatcmpl-mock",
                "object": "chat.completion",
                "created": _CREATED,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hello from the mock."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
            }
        )
        resp = _nonstream_cache[model] = _http(200, body)
    return resp


def stream_frames(model: str, chunks: int, usage: bool) -> list[bytes]:
    """Pre-encoded HTTP chunks: N content events, finish, [usage], [DONE] + last chunk."""
    key = (model, chunks, usage)
    frames = _stream_cache.get(key)
    if frames is not None:
        return frames

    def chunk(delta: dict[str, str], finish: str | None) -> bytes:
        obj = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return _frame(orjson.dumps(obj))

    frames = [chunk({"role": "assistant", "content": "tok0"}, None)]
    frames += [chunk({"content": f" tok{i}"}, None) for i in range(1, chunks)]
    tail = chunk({}, "stop")
    if usage:
        u = {"prompt_tokens": 5, "completion_tokens": chunks, "total_tokens": chunks + 5}
        obj = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": model,
            "choices": [],
            "usage": u,
        }
        tail += _frame(orjson.dumps(obj))
    tail += _frame(b"[DONE]") + _LAST_CHUNK
    frames.append(tail)
    if len(_stream_cache) < 1024:
        _stream_cache[key] = frames
    return frames


class MockProtocol(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_close_after",
        "_headers",
        "_loop",
        "_paced",
        "_parser",
        "_url",
        "transport",
    )

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._body: list[bytes] = []
        self._headers: dict[bytes, bytes] = {}
        self._paced: asyncio.TimerHandle | None = None
        self._close_after = False
        self.transport: asyncio.Transport | None = None

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_BAD_REQUEST)
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._paced is not None:
            self._paced.cancel()
            self._paced = None
        self.transport = None

    # -- httptools callbacks ------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []
        self._headers = {}

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname.startswith(b"x-mock-"):
            self._headers[lname] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        t = self.transport
        if t is None:
            return
        method = self._parser.get_method()
        path = self._url.split(b"?", 1)[0]
        if method == b"POST" and path.endswith(b"/chat/completions"):
            self._chat(t)
        elif path.endswith(b"/models"):
            t.write(_MODELS_RESP)
        elif path == b"/health":
            t.write(_HEALTH_RESP)
        else:
            t.write(_NOT_FOUND)
        if not self._parser.should_keep_alive():
            if self._paced is None:
                t.close()
            else:
                self._close_after = True

    # -- handlers -----------------------------------------------------------
    def _chat(self, t: asyncio.Transport) -> None:
        try:
            req: Any = orjson.loads(b"".join(self._body))
            model = str(req.get("model", "mock"))
        except (orjson.JSONDecodeError, AttributeError):
            t.write(_BAD_REQUEST)
            return
        if not req.get("stream"):
            t.write(nonstream_response(model))
            return
        chunks, delay = parse_model(model)
        if b"x-mock-chunks" in self._headers:
            chunks = int(self._headers[b"x-mock-chunks"])
        if b"x-mock-delay-ms" in self._headers:
            delay = float(self._headers[b"x-mock-delay-ms"]) / 1000.0
        opts = req.get("stream_options") or {}
        usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
        frames = stream_frames(model, max(1, chunks), usage)
        if delay <= 0:
            t.write(_SSE_HEAD + b"".join(frames))
            return
        # Paced: event j at start + j*delay (no drift); the tail rides with the last event.
        paced = [*frames[:-2], frames[-2] + frames[-1]]
        t.write(_SSE_HEAD + paced[0])
        if len(paced) > 1:
            start = self._loop.time()
            self._paced = self._loop.call_at(start + delay, self._pace, paced, 1, start, delay)

    def _pace(self, frames: list[bytes], j: int, start: float, delay: float) -> None:
        self._paced = None
        t = self.transport
        if t is None:
            return
        t.write(frames[j])
        j += 1
        if j < len(frames):
            self._paced = self._loop.call_at(start + j * delay, self._pace, frames, j, start, delay)
        elif self._close_after:
            t.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MockProtocol, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"mock upstream listening on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9100)
    args = ap.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
