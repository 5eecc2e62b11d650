"""An OpenAI-compatible upstream that misbehaves on purpose, as a raw ASGI app.

``POST /v1/chat/completions`` picks a behaviour from the request's ``model``, with optional
parameters after colons (``stall:2``, ``status:429:3``).  The normal answer echoes the last
user message (string content, or its text parts joined with ``"\\n"``) in word-sized pieces.
"N chunks" counts stream events (content chunks, then the finish chunk, then the usage
chunk if asked for); an N past the end means "just before ``data: [DONE]``".  Behaviours
(see ``BEHAVIOURS``); non-stream requests get the JSON counterpart noted in brackets:

* ``ok``, ``crlf``, ``cr``, ``nospace``, ``multiline``, ``comments``, ``split``, ``slow:MS``,
  ``no-done`` - SSE framing variants [a normal ``chat.completion``]
* ``error-frame:N`` - N chunks, an ``{"error": ...}`` frame, clean end [HTTP 500 + error]
* ``status:CODE[:SECS]`` - HTTP CODE with an OpenAI error body; ``Retry-After: SECS``
  (default 1 for 429, otherwise only if given)
* ``stall:N`` - N chunks, then silence until the client goes away [no headers ever]
* ``slow-first:SECS`` - wait before the headers; ``slow-first-byte:SECS`` - headers at
  once, then wait before the first event [before the body]
* ``reset:N`` - N chunks, then a TCP RST; the client reads the N chunks, then gets
  ``httpx.ReadError`` (ECONNRESET) [half the JSON, then RST]
* ``truncate:N`` - N chunks, then a plain close (FIN) without the terminating zero-size
  chunk; httpx raises ``RemoteProtocolError`` (incomplete chunked read) [same, half JSON]
* ``close-without-finish:N`` - N content chunks, then a clean end of body: no
  finish_reason, no [DONE] [half the JSON body, cleanly ended]
* ``malformed`` - one good chunk, ``data: {not json``, then the rest as normal
  [body ``{not json``]
* ``malformed-choices`` - valid JSON of the wrong shape: ``{"choices": [1]}`` [the same body]
* ``tools`` - a streamed tool call, finish_reason ``tool_calls``
* ``reasoning`` - ``reasoning_content`` chunks before the answer [``message.reasoning_content``]
* ``echo-request`` - one content chunk holding the raw request body text
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

from tests.support import sse_frames as sse
from tests.support.records import Disconnect, RecordedRequest, Recorder
from tests.support.servers import Message, Receive, Scope, Send, serve_in_thread

__all__ = ["BEHAVIOURS", "Disconnect", "FaultUpstream", "RecordedRequest", "serve_fault_upstream"]

BEHAVIOURS = (
    *sse.FRAMINGS,
    *("slow", "no-done", "error-frame", "status", "stall", "slow-first", "slow-first-byte"),
    *("reset", "truncate", "close-without-finish", "malformed", "malformed-choices", "tools"),
    *("reasoning", "echo-request"),
)
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
_JSON_HEADERS = [(b"content-type", b"application/json")]
_MID_STREAM_FAULTS = ("stall", "reset", "truncate", "error-frame", "close-without-finish")


class _ClientGone(Exception):
    pass


class _Call:
    """One chat request in flight: sends with disconnect tracking."""

    def __init__(self, owner: FaultUpstream, send: Send, req: RecordedRequest) -> None:
        self.owner, self._send, self.req = owner, send, req
        self.gone = asyncio.Event()
        self.done = False  # response finished (or ended by us): disconnects no longer count
        self.events = 0

    def mark_gone(self, how: str) -> None:
        if not self.gone.is_set() and not self.done:
            self.gone.set()
            now = time.monotonic()
            self.owner._record(Disconnect(self.req.path, self.req.model, now, self.events, how))

    async def watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.mark_gone("http.disconnect")

    async def send(self, message: Message) -> None:
        if self.gone.is_set():
            raise _ClientGone
        try:
            await self._send(message)
        except OSError as exc:  # servers that raise instead of dropping (uvicorn drops)
            self.mark_gone("send-failed")
            raise _ClientGone from exc
        await asyncio.sleep(0)  # let the disconnect watcher run
        if self.gone.is_set():
            raise _ClientGone

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def write(self, data: bytes, *, count: bool = True) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": True})
        self.events += count

    async def finish(self, data: bytes = b"") -> None:
        self.done = True
        await self._send({"type": "http.response.body", "body": data, "more_body": False})

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.gone.wait(), seconds)
            raise _ClientGone

    async def json(
        self, status: int, obj: object, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        await self.start(status, _JSON_HEADERS + (headers or []))
        await self.finish(json.dumps(obj).encode())

    async def end_connection(self, *, reset: bool) -> None:
        """Close the TCP connection mid-body: RST if ``reset``, else FIN (no final chunk)."""
        self.done = True
        await asyncio.sleep(0.05)  # let what was written reach the client first
        transport = getattr(getattr(self._send, "__self__", None), "transport", None)
        if transport is None:  # not uvicorn: returning early makes most servers close
            return
        sock = transport.get_extra_info("socket")
        if reset and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if reset:
            transport.abort()
        else:
            transport.close()
        await asyncio.sleep(0.01)  # uvicorn marks the cycle disconnected: no error log


def _error(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class FaultUpstream(Recorder):
    """The ASGI app; what it saw is readable from any thread (see :class:`Recorder`)."""

    # -- ASGI ------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        req = await self.accept(scope, receive, send)
        if req is None:
            return
        call = _Call(self, send, req)
        watcher = asyncio.create_task(call.watch(receive))
        try:
            await self._route(call)
        except _ClientGone:
            pass
        finally:
            call.done = True
            watcher.cancel()

    async def _route(self, call: _Call) -> None:
        req, model = call.req, call.req.model
        if (req.method, req.path) == ("GET", "/v1/models"):
            owner = {"object": "model", "created": 0, "owned_by": "fault-upstream"}
            models = [{"id": b, **owner} for b in BEHAVIOURS]
            return await call.json(200, {"object": "list", "data": models})
        if (req.method, req.path) != ("POST", "/v1/chat/completions") or model is None:
            message = f"cannot serve {req.method} {req.path} with model={model!r}"
            return await call.json(404, _error(message, "invalid_request_error"))
        behaviour, *args = model.split(":")
        try:
            nums = [float(a) for a in args]
        except ValueError:
            behaviour = "bad parameter"
        if behaviour not in BEHAVIOURS:
            message = f"unknown model {model!r}"
            return await call.json(404, _error(message, "invalid_request_error", "model_not_found"))
        await self._chat(call, req.body, behaviour, nums)

    async def _chat(
        self, call: _Call, body: dict[str, Any], behaviour: str, nums: list[float]
    ) -> None:
        arg = nums[0] if nums else 0.0
        stream = bool(body.get("stream"))
        if behaviour == "status":
            code = int(arg or 500)
            retry = nums[1] if len(nums) > 1 else 1 if code == 429 else None
            extra = [] if retry is None else [(b"retry-after", b"%d" % retry)]
            kind = (
                "requests"
                if code == 429
                else "server_error"
                if code >= 500
                else "invalid_request_error"
            )
            ecode = "rate_limit_exceeded" if code == 429 else None
            return await call.json(
                code, _error(f"fault upstream: status {code}", kind, ecode), extra
            )
        if behaviour == "slow-first":
            await call.sleep(arg)
        if behaviour == "stall" and not stream:
            await call.gone.wait()
            return
        if not stream:
            return await self._whole(call, body, behaviour, arg)
        echo = call.req.raw_body.decode("utf-8", "replace") if behaviour == "echo-request" else None
        events = sse.stream_events(
            body, tools=behaviour == "tools", echo=echo, reasoning=behaviour == "reasoning"
        )
        framing = behaviour if behaviour in sse.FRAMINGS else "ok"
        fault_at = min(int(arg), len(events))
        if behaviour == "close-without-finish":
            fault_at = min(int(arg), len(events) - 1 - sse.wants_usage(body))
        await call.start(200, _SSE_HEADERS)
        if behaviour == "slow-first-byte":
            await call.sleep(arg)
        for i in range(len(events) + 1):
            if i == fault_at and behaviour in _MID_STREAM_FAULTS:
                return await self._fault(call, behaviour)
            if i == len(events):
                break
            if behaviour == "malformed" and i == 1:
                await call.write(sse.frame("{not json", framing))
            if behaviour == "malformed-choices" and i == 0:
                await call.write(sse.frame('{"choices": [1]}', framing))
            if behaviour == "slow" and i > 0:
                await call.sleep(arg / 1000)
            await self._event(call, sse.frame(json.dumps(events[i]), framing), behaviour)
        if behaviour != "no-done":
            await self._event(call, sse.frame("[DONE]", framing), behaviour)
        await call.finish()

    async def _event(self, call: _Call, data: bytes, behaviour: str) -> None:
        if behaviour != "split":
            return await call.write(data)
        cuts = [0, 1, len(data) // 2, len(data) - 1, len(data)]
        for a, b in itertools.pairwise(cuts):
            await call.write(data[a:b], count=b == len(data))
            await asyncio.sleep(0.01)  # separate TCP segments, separate reads

    async def _fault(self, call: _Call, behaviour: str) -> None:
        if behaviour == "stall":
            await call.gone.wait()
        elif behaviour in ("reset", "truncate"):
            await call.end_connection(reset=behaviour == "reset")
        elif behaviour == "error-frame":
            await call.write(
                sse.frame(json.dumps(_error("upstream exploded", "server_error")), "ok")
            )
            await call.finish()
        else:  # close-without-finish
            await call.finish()

    async def _whole(self, call: _Call, body: dict[str, Any], behaviour: str, arg: float) -> None:
        if behaviour == "error-frame":
            return await call.json(500, _error("upstream exploded", "server_error"))
        if behaviour in ("malformed", "malformed-choices"):
            await call.start(200, _JSON_HEADERS)
            return await call.finish(
                b"{not json" if behaviour == "malformed" else b'{"choices":[1]}'
            )
        echo = call.req.raw_body.decode("utf-8", "replace") if behaviour == "echo-request" else None
        answer = sse.completion(
            body, tools=behaviour == "tools", echo=echo, reasoning=behaviour == "reasoning"
        )
        data = json.dumps(answer).encode()
        await call.start(200, _JSON_HEADERS)
        if behaviour == "slow-first-byte":
            await call.sleep(arg)
        if behaviour in ("reset", "truncate", "close-without-finish"):
            await call.write(data[: len(data) // 2])
            if behaviour == "close-without-finish":
                return await call.finish()
            return await call.end_connection(reset=behaviour == "reset")
        await call.finish(data)


@contextlib.contextmanager
def serve_fault_upstream(**uvicorn_config_kwargs: Any) -> Iterator[tuple[str, FaultUpstream]]:
    """Run a fresh :class:`FaultUpstream` in a thread; yield ``("http://127.0.0.1:P/v1", app)``."""
    upstream = FaultUpstream()
    with serve_in_thread(upstream, **uvicorn_config_kwargs) as base_url:
        yield f"{base_url}/v1", upstream
