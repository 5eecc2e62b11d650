"""A stand-in Gemini API on loopback, as a raw ASGI app that records what it receives.

``POST /<version>/models/<scenario>:<action>`` (version ``v1beta``, or ``v1``: the google-genai
SDK's default since 3.0), action ``streamGenerateContent`` (SSE with
``?alt=sse``, one JSON array without, as the real API), ``generateContent`` (the scenario's
events folded into one response) or ``batchEmbedContents``. The key must come as the
``x-goog-api-key`` header and be :data:`KEY`; any other key gets Google's own 400
``API_KEY_INVALID``. Every request body is checked against the google-genai SDK's types
(``Content``, ``Tool``, ``ToolConfig``, ``GenerationConfig``) and every event sent against
``GenerateContentResponse`` / ``EmbedContentResponse``, unknown enum values included, so neither
side of the fake can drift from the wire: a request that does not validate gets a 400 naming
the problem. Scenarios (see ``SCENARIOS``):

* ``text``, ``crlf``, ``split`` (frames cut across writes) - "Hello world", then STOP;
  ``slow`` - the same, with a pause of 10 s before the second event (until the client leaves)
* ``thoughts`` - two thought parts, then the answer
* ``parallel-tools`` - three functionCalls in one event, the first signed; STOP with them
* ``noarg-tool`` - a functionCall without args
* ``trailing-stop`` - a functionCall event, then ``{text: ""}`` with STOP in an event of its own
* ``usage`` - four events, each with the cumulative usageMetadata so far
* ``blocked`` - promptFeedback.blockReason SAFETY and no candidates
* ``safety``, ``max-tokens``, ``malformed-call`` - text, then that finishReason
* ``signature`` - a signed functionCall; when the request replays it, "signature ok" if the
  signature came back on the functionCall part, else Gemini 3's 400
* ``truncate`` - text without a finishReason, then a clean end; ``cut`` - then a dropped
  connection; ``stream-error`` - text, then an ``{"error": ...}`` event
* ``rate-limited`` - 429 with ``RetryInfo`` 30s; ``flaky-429`` - 429 with ``retry-after: 0``
  the first time after :meth:`reset`, then ``text``
* ``bad-request`` - 400 INVALID_ARGUMENT whose message quotes the key
* ``batchEmbedContents``: per text a deterministic vector (``outputDimensionality`` or 8
  long); model ``embed-counted`` also reports usageMetadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.genai import types

from tests.support import sse_frames
from tests.support.records import RecordedRequest, Recorder
from tests.support.servers import Receive, Scope, Send, serve_in_thread

__all__ = [
    "KEY",
    "SCENARIOS",
    "SIGNATURE",
    "GeminiCall",
    "GeminiUpstream",
    "checked",
    "request_problem",
    "serve_gemini",
    "vector",
    "whole",
]

KEY = "AIzaSyCanary-0123456789abcdefghijklmn"
SIGNATURE = "c2lnbmVkLXRob3VnaHQtc3RhdGU="  # base64 of b"signed-thought-state"
_SSE = [(b"content-type", b"text/event-stream")]
_JSON = [(b"content-type", b"application/json; charset=UTF-8")]
_REQUEST_KEYS = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}


@dataclass(frozen=True)
class GeminiCall:
    """One request as received: ``query`` is the raw query string."""

    request: RecordedRequest
    query: str
    version: str
    model: str
    action: str


def _text(text: str, **extra: Any) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, **extra}]}


def _parts(*parts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": list(parts)}, **extra}]}


def _usage(prompt: int, answer: int, thoughts: int = 0, cached: int = 0) -> dict[str, int]:
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": answer,
        "totalTokenCount": prompt + answer + thoughts,
    }
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    if cached:
        usage["cachedContentTokenCount"] = cached
    return usage


def _call(name: str, args: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    call: dict[str, Any] = {"name": name}
    if args is not None:
        call["args"] = args
    return {"functionCall": call, **extra}


_STOP = {"finishReason": "STOP", "index": 0}
_HELLO = [_text("Hello"), {**_text(" world", **_STOP), "usageMetadata": _usage(4, 2)}]
SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "text": _HELLO,
    "slow": _HELLO,
    "crlf": _HELLO,
    "split": _HELLO,
    "thoughts": [
        _parts({"text": "Let me think. ", "thought": True}),
        _parts({"text": "Still thinking.", "thought": True}),
        {**_text("Answer.", **_STOP), "usageMetadata": _usage(5, 2, thoughts=7)},
    ],
    "parallel-tools": [
        {
            **_parts(
                _call("get_weather", {"city": "Paris"}, thoughtSignature=SIGNATURE),
                _call("get_weather", {"city": "Rome"}),
                _call("get_time", {"tz": "CET"}),
                **_STOP,
            ),
            "usageMetadata": _usage(20, 15, thoughts=30),
        }
    ],
    "noarg-tool": [{**_parts(_call("now"), **_STOP), "usageMetadata": _usage(8, 3)}],
    "trailing-stop": [
        _parts(_call("lookup", {"q": "gemini"}, thoughtSignature=SIGNATURE)),
        {**_text("", **_STOP), "usageMetadata": _usage(9, 4, thoughts=11)},
    ],
    "usage": [
        {**_text(word), "usageMetadata": _usage(10, n, thoughts=5, cached=4)}
        for n, word in enumerate(["one ", "two ", "three "], start=1)
    ]
    + [{**_text("four", **_STOP), "usageMetadata": _usage(10, 4, thoughts=5, cached=4)}],
    "blocked": [
        {
            "promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {"promptTokenCount": 6, "totalTokenCount": 6},
        }
    ],
    "safety": [
        _text("Here is"),
        {"candidates": [{"finishReason": "SAFETY", "index": 0}], "usageMetadata": _usage(3, 2)},
    ],
    "max-tokens": [
        _text("Cut"),
        {"candidates": [{"finishReason": "MAX_TOKENS", "index": 0}], "usageMetadata": _usage(3, 1)},
    ],
    "malformed-call": [
        {"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL", "finishMessage": "bad"}]}
    ],
    "signature": [
        _parts(_call("lookup", {"q": "signed"}, thoughtSignature=SIGNATURE), **_STOP),
    ],
    "truncate": [_text("Hello"), _text(" wor")],
    "cut": [_text("Hello"), _text(" wor")],
    "stream-error": [_text("Hello")],
}
_SIGNATURE_OK = [{**_text("signature ok", **_STOP), "usageMetadata": _usage(30, 2)}]


def checked(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` after validating it as the SDK reads the wire (base64 bytes, enums strict)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the SDK only warns on an unknown enum value
        types.GenerateContentResponse.model_validate_json(json.dumps(event))
    return event


def _google_error(code: int, status: str, message: str, *details: Any) -> bytes:
    error = {"code": code, "message": message, "status": status, "details": list(details)}
    return json.dumps({"error": error}).encode()


def request_problem(action: str, body: Any) -> str | None:
    """Why a request body is not one the real API would parse, or None."""
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            if action == "batchEmbedContents":
                for request in body["requests"]:
                    assert set(request) <= {"model", "content", "outputDimensionality"}
                    assert request["model"].startswith("models/")
                    types.Content.model_validate_json(json.dumps(request["content"]))
                return None
            assert set(body) <= _REQUEST_KEYS, f"unknown fields {set(body) - _REQUEST_KEYS}"
            system = [body["systemInstruction"]] if "systemInstruction" in body else []
            for content in [*body["contents"], *system]:
                assert content["parts"], "a content without parts"
                types.Content.model_validate_json(json.dumps(content))
            for tool in body.get("tools", []):
                types.Tool.model_validate_json(json.dumps(tool))
            types.ToolConfig.model_validate_json(json.dumps(body.get("toolConfig", {})))
            types.GenerationConfig.model_validate_json(json.dumps(body.get("generationConfig", {})))
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
    return None


def _replayed_signature(body: dict[str, Any]) -> str | None:
    """None if the request replays no signed call, else the signature it carries ("" if none)."""
    for content in body.get("contents", []):
        for part in content.get("parts", []):
            if part.get("functionCall", {}).get("name") == "lookup":
                return str(part.get("thoughtSignature", ""))
    return None


def whole(events: list[dict[str, Any]]) -> dict[str, Any]:
    """A stream's events as the one response ``generateContent`` gives."""
    parts: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    candidate: dict[str, Any] = {}
    for event in events:
        for c in event.get("candidates", []):
            for part in c.get("content", {}).get("parts", []):
                last = parts[-1] if parts else {}
                if part.get("text") == "":
                    continue
                if "text" in last and "text" in part and last.get("thought") == part.get("thought"):
                    last["text"] += part["text"]
                else:
                    parts.append(dict(part))
            candidate.update({k: v for k, v in c.items() if k != "content"})
        out.update({k: v for k, v in event.items() if k != "candidates"})
    if candidate or parts:
        if parts:
            candidate["content"] = {"role": "model", "parts": parts}
        out["candidates"] = [candidate]
    return checked(out)


def vector(text: str, size: int) -> list[float]:
    """The stand-in's embedding of ``text``: deterministic, ``size`` long."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round((digest[i % 32] - 128) / 128, 6) for i in range(size)]


class GeminiUpstream(Recorder):
    """The ASGI app; what it received is readable from any thread (:attr:`calls`)."""

    def __init__(self) -> None:
        super().__init__()
        self._calls: list[GeminiCall] = []
        self._lock = threading.Lock()

    @property
    def calls(self) -> list[GeminiCall]:
        with self._lock:
            return list(self._calls)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._calls.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = await self.accept(scope, receive, send)
        if request is None:
            return
        version, _, rest = request.path.removeprefix("/").partition("/models/")
        model, _, action = rest.partition(":")
        query = scope.get("query_string", b"").decode("latin-1")
        with self._lock:
            self._calls.append(GeminiCall(request, query, version, model, action))
            earlier = sum(c.model == model for c in self._calls) - 1
        if request.headers.get("x-goog-api-key") != KEY:
            info = {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
            }
            message = "API key not valid. Please pass a valid API key."
            return await _send(
                send, 400, _JSON, _google_error(400, "INVALID_ARGUMENT", message, info)
            )
        if version not in ("v1beta", "v1") or request.method != "POST":
            message = f"stand-in: no such method {request.method} {request.path}"
            return await _send(send, 404, _JSON, _google_error(404, "NOT_FOUND", message))
        problem = request_problem(action, request.body)
        if problem is not None:
            message = f"stand-in: not a request the Gemini API accepts: {problem}"
            return await _send(send, 400, _JSON, _google_error(400, "INVALID_ARGUMENT", message))
        if model == "rate-limited" or (model == "flaky-429" and earlier == 0):
            retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}
            headers = _JSON if model == "rate-limited" else [*_JSON, (b"retry-after", b"0")]
            body = _google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", retry)
            return await _send(send, 429, headers, body)
        if action == "batchEmbedContents":
            return await self._embed(send, model, request.body)
        if model == "stream-error" and action == "generateContent":
            message = f"Internal error encountered ({KEY})."
            return await _send(send, 500, _JSON, _google_error(500, "INTERNAL", message))
        if model == "bad-request":
            message = f"Invalid value at 'generation_config' (key {KEY} was used)"
            return await _send(send, 400, _JSON, _google_error(400, "INVALID_ARGUMENT", message))
        events = SCENARIOS.get("text" if model == "flaky-429" else model)
        if events is None:
            message = f"models/{model} is not found for API version {version}"
            return await _send(send, 404, _JSON, _google_error(404, "NOT_FOUND", message))
        if model == "signature" and (replayed := _replayed_signature(request.body)) is not None:
            if replayed != SIGNATURE:
                message = "Function call is missing a thought_signature in functionCall parts."
                body = _google_error(400, "INVALID_ARGUMENT", message)
                return await _send(send, 400, _JSON, body)
            events = _SIGNATURE_OK
        events = [checked(e) for e in events]
        if action == "generateContent":
            return await self._whole(send, model, whole(events))
        if "alt=sse" not in query.split("&"):
            return await _send(send, 200, _JSON, json.dumps(events).encode())
        await self._stream(send, receive, model, events)

    async def _stream(
        self, send: Send, receive: Receive, model: str, events: list[dict[str, Any]]
    ) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        framing = model if model in ("crlf", "split") else "ok"
        for n, event in enumerate(events):
            if model == "slow" and n == 1:
                with contextlib.suppress(TimeoutError):  # the client leaving ends the wait
                    await asyncio.wait_for(_disconnected(receive), 10.0)
            data = sse_frames.frame(json.dumps(event), "crlf" if framing == "crlf" else "ok")
            cuts = [0, 3, len(data) // 2, len(data) - 1] if framing == "split" else [0]
            for a, b in itertools.pairwise([*cuts, len(data)]):
                await send({"type": "http.response.body", "body": data[a:b], "more_body": True})
                await asyncio.sleep(0.005)  # separate writes, separate reads
        if model == "stream-error":
            error = _google_error(500, "INTERNAL", f"Internal error encountered ({KEY}).")
            await send({"type": "http.response.body", "body": b"data: " + error + b"\r\n\r\n"})
        elif model == "cut":
            await _drop(send)
        else:
            await send({"type": "http.response.body", "body": b""})

    async def _whole(self, send: Send, model: str, response: dict[str, Any]) -> None:
        data = json.dumps(response).encode()
        if model != "cut":
            return await _send(send, 200, _JSON, data)
        await send({"type": "http.response.start", "status": 200, "headers": _JSON})
        await send({"type": "http.response.body", "body": data[:10], "more_body": True})
        await _drop(send)

    async def _embed(self, send: Send, model: str, body: dict[str, Any]) -> None:
        requests = body["requests"]
        embeddings = [
            {"values": vector(r["content"]["parts"][0]["text"], r.get("outputDimensionality", 8))}
            for r in requests
        ]
        out: dict[str, Any] = {"embeddings": embeddings}
        if model == "embed-counted":
            out["usageMetadata"] = {"promptTokenCount": 3 * len(requests)}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            types.EmbedContentResponse.model_validate_json(json.dumps(out))
        await _send(send, 200, _JSON, json.dumps(out).encode())


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _drop(send: Send) -> None:
    """Close the connection mid-body (no terminating chunk), as a crashed upstream would."""
    await asyncio.sleep(0.05)  # let what was written reach the client first
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None:  # uvicorn's protocol; elsewhere returning early closes it
        transport.close()
    await asyncio.sleep(0.01)


@contextlib.contextmanager
def serve_gemini(**uvicorn_config_kwargs: Any) -> Iterator[tuple[str, GeminiUpstream]]:
    """Run a fresh :class:`GeminiUpstream` in a thread; yield ``("http://127.0.0.1:P", app)``."""
    upstream = GeminiUpstream()
    with serve_in_thread(upstream, **uvicorn_config_kwargs) as base_url:
        yield base_url, upstream
