"""The OpenAI-compatible provider: OpenAI, vLLM, Ollama, llama.cpp, DeepSeek, Groq, ...

One connection pool per provider (:mod:`providers.http1`, an httpx transport, used directly
with a request head encoded once). A streaming client's request streams from the upstream
with usage always asked for (a client that did not ask for usage never sees the usage chunk:
the gateway drops it); a non-streaming client's request is one upstream call, whose answer
(usage included) is yielded as chunks all the same. Transport and upstream failures are
mapped here, once, into :mod:`providers.errors`.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from providers.base import ChatRequest, Chunk, ProviderConfig
from providers.errors import (
    ProviderError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeout,
)
from providers.http1 import PoolTransport, RawResponse
from providers.sse import SSEDecoder

_MAX_ERROR_BODY = 64 * 1024
_TOKENISH = re.compile(r"\b(?:sk|pk|key|tok|token|gsk|xai)[-_][A-Za-z0-9_\-]{6,}", re.I)


class OpenAICompatProvider:
    def __init__(self, config: ProviderConfig) -> None:
        self.name = config.name
        self.models = config.models
        url = httpx.URL(str(config.options["base_url"]).rstrip("/") + "/chat/completions")
        api_key = config.options.get("api_key")
        self._secret = str(api_key) if api_key else None
        self._secret_pieces = _pieces_pattern(self._secret) if self._secret else None
        headers = [
            (b"host", url.netloc),
            (b"content-type", b"application/json"),
            (b"accept", b"text/event-stream, application/json"),
            (b"accept-encoding", b"identity"),
            (b"user-agent", b"llm-gateway"),
        ]
        if self._secret:
            headers.append((b"authorization", b"Bearer " + _header_value(self._secret)))
        # Everything but the body's length is the same for every request: encoded once.
        self._head = (
            b"POST "
            + url.raw_path
            + b" HTTP/1.1\r\n"
            + b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        )
        self._connect_timeout = config.timeouts.connect
        self._transport = PoolTransport(
            max_connections=int(config.options.get("max_connections", 1024)),
            ca_bundle=config.options.get("ca_bundle"),
        )
        self._origin = self._transport.origin(url)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        body = request.body.copy()
        body["model"] = request.model
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        content = orjson.dumps(body)
        head = self._head + b"content-length: " + str(len(content)).encode() + b"\r\n\r\n"
        try:
            response = await self._transport.exchange(
                self._origin, head, content, connect_timeout=self._connect_timeout
            )
        except httpx.TimeoutException:
            raise UpstreamTimeout(
                f"connecting to the upstream of provider '{self.name}' timed out", phase="connect"
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamConnectError(
                f"the upstream of provider '{self.name}' is unreachable ({exc.__class__.__name__})"
            ) from None
        try:
            if response.status != 200:
                raise await self._status_error(response)
            content_type = response.header(b"content-type") or ""
            if content_type.startswith("application/json"):
                # A non-streamed answer (asked for, or an upstream that ignores stream=true).
                for chunk in _completion_to_chunks(await self._read_json(response)):
                    yield chunk
                return
            # Read, decode and check in one loop: this runs once per streamed chunk.
            decoder = SSEDecoder()
            unfinished: set[int] = set()
            finished = False
            while True:
                try:
                    data = await response.read()
                except httpx.HTTPError as exc:
                    raise _mid_response_error(exc) from None
                for event in decoder.feed(data) if data else decoder.flush():
                    if event == b"[DONE]":
                        return
                    chunk = self._parse(event)
                    for choice in chunk.choices:
                        if choice.get("finish_reason"):
                            unfinished.discard(choice.get("index", 0))
                            finished = True
                        else:
                            unfinished.add(choice.get("index", 0))
                    yield chunk
                if not data:
                    break
            if not finished or unfinished:
                raise UpstreamProtocolError(
                    "the upstream closed the stream before it finished", code="upstream_truncated"
                )
        finally:
            await response.aclose()

    def _parse(self, event: bytes) -> Chunk:
        try:
            data = orjson.loads(event)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                "the upstream sent an event that is not valid JSON", code="upstream_malformed"
            ) from None
        if not isinstance(data, dict):
            raise UpstreamProtocolError(
                "the upstream sent an event that is not a JSON object", code="upstream_malformed"
            )
        error = data.get("error")
        if error is not None:
            detail = error.get("message") if isinstance(error, dict) else error
            raise UpstreamStreamError(
                "the upstream reported an error mid-stream: " + self._redact(str(detail))
            )
        choices = data.get("choices") or []
        if not isinstance(choices, list):
            raise UpstreamProtocolError(
                "the upstream sent a chunk whose choices are not a list",
                code="upstream_malformed",
            )
        return Chunk(
            choices=choices,
            usage=data.get("usage"),
            system_fingerprint=data.get("system_fingerprint"),
        )

    async def _read_json(self, response: RawResponse) -> dict[str, Any]:
        try:
            raw = await _read_limited(response, limit=None)
        except httpx.HTTPError as exc:
            raise _mid_response_error(exc) from None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise UpstreamProtocolError(
                "the upstream answered with JSON that is not a chat completion",
                code="upstream_malformed",
            )
        return data

    async def _status_error(self, response: RawResponse) -> UpstreamStatusError:
        status = response.status
        try:
            raw = await _read_limited(response)
        except httpx.HTTPError:
            raw = b""
        retry_after = _retry_after(response.header(b"retry-after"))
        if status in (400, 404, 409, 413, 422):
            detail = _upstream_message(raw)
            message = f"the upstream rejected the request (HTTP {status})"
            if detail:
                message += ": " + self._redact(detail)
        elif status in (401, 403):
            message = (
                f"the upstream of provider '{self.name}' refused the gateway's credentials "
                f"(HTTP {status}); check the provider's API key"
            )
        elif status == 429:
            message = f"the upstream of provider '{self.name}' is rate limiting (HTTP 429)"
        else:
            message = f"the upstream of provider '{self.name}' failed (HTTP {status})"
        return UpstreamStatusError(message, status=status, retry_after=retry_after)

    def _redact(self, text: str) -> str:
        """Upstream text without our key: whole, in part (12+ characters), in any case."""
        if self._secret_pieces is not None:
            text = self._secret_pieces.sub("[redacted]", text)
        return _TOKENISH.sub("[redacted]", text)[:500]

    async def aclose(self) -> None:
        await self._transport.aclose()


def _mid_response_error(exc: httpx.HTTPError) -> ProviderError:
    """A transport failure after the upstream's response head arrived."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout("reading from the upstream timed out", phase="idle")
    return UpstreamProtocolError(
        f"the upstream connection broke mid-response ({exc.__class__.__name__})",
        code="upstream_truncated",
    )


async def _read_limited(response: RawResponse, *, limit: int | None = _MAX_ERROR_BODY) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for part in response.aiter_raw():
        parts.append(part)
        size += len(part)
        if limit is not None and size >= limit:
            break
    body = b"".join(parts)
    return body if limit is None else body[:limit]


def _upstream_message(raw: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, if there is one."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return ""


def _pieces_pattern(secret: str, size: int = 12) -> re.Pattern[str]:
    """Matches any run of ``size``+ characters of ``secret`` (ignoring case), and what follows.

    An upstream may echo a key upper-cased, masked or cut (``Incorrect API key: abcd1234...``):
    every window of the key is an alternative, and the token characters after a window go too.
    Shorter windows would also hit plain words inside a key ("upstream" in "sk-upstream-..."),
    and the 3-4 character ends that upstreams show of a masked key identify nothing.
    """
    windows = {secret[i : i + size] for i in range(max(1, len(secret) - size + 1))}
    alternatives = "|".join(re.escape(w) for w in sorted(windows, key=len, reverse=True))
    return re.compile(f"(?:{alternatives})[\\w.\\-]*", re.IGNORECASE)


def _header_value(value: str) -> bytes:
    """A configured value fit for a header line, or a ValueError naming the problem."""
    if "\r" in value or "\n" in value:
        raise ValueError("API_KEY must not contain line breaks")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("API_KEY must be Latin-1 text") from None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _completion_to_chunks(data: dict[str, Any]) -> list[Chunk]:
    choices = []
    for choice in data["choices"]:
        message = dict(choice.get("message") or {})
        if message.get("refusal") is None:
            message.pop("refusal", None)
        choices.append(
            {
                "index": choice.get("index", 0),
                "delta": message,
                "finish_reason": choice.get("finish_reason") or "stop",
                "logprobs": choice.get("logprobs"),
            }
        )
    chunks = [Chunk(choices=choices, system_fingerprint=data.get("system_fingerprint"))]
    if data.get("usage"):
        chunks.append(Chunk(choices=[], usage=data["usage"]))
    return chunks
