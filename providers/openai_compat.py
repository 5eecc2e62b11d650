"""The OpenAI-compatible provider: OpenAI, vLLM, Ollama, llama.cpp, DeepSeek, Groq, ...

Requests go through the gateway's connection pool (:mod:`providers.http1`) with a request head
encoded once. A streaming client's request streams from the upstream with usage always asked
for; a non-streaming client's request is one upstream call, whose answer is yielded as chunks
all the same. Upstream chunks are checked for shape and turned into the normalized stream here
(:mod:`providers.openai_chunks`); transport failures are mapped once, in :func:`_mapped`, and
statuses by :func:`providers.errors.status_error`.
"""

from __future__ import annotations

import contextlib
import email.utils
import re
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from providers import http1, openai_endpoints
from providers.base import ChatRequest, Chunk, CompletionRequest, EmbeddingRequest, Embeddings
from providers.errors import (
    PoolExhausted,
    ProviderError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeout,
    status_error,
)
from providers.openai_chunks import ChunkReader, completion_to_chunks, malformed
from providers.spec import ProviderContext, ProviderType
from providers.sse import SSEDecoder, SSEError

_MAX_ERROR_BODY = 64 * 1024
_MAX_JSON_BODY = 64 * 1024 * 1024
_TOKENISH = re.compile(r"\b(?:sk|pk|key|tok|token|gsk|xai)[-_][A-Za-z0-9_\-]{6,}", re.I)


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="the upstream's OpenAI API root, e.g. http://host/v1")
    api_key: SecretStr | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        try:
            httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a valid URL ({exc})") from None
        return value

    @field_validator("api_key")
    @classmethod
    def _header_safe(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _header_value(value.get_secret_value())
        return value


class OpenAICompatProvider:
    def __init__(self, context: ProviderContext, options: Options) -> None:
        self.name = context.name
        self.models = context.models
        url = httpx.URL(options.base_url.rstrip("/") + "/chat/completions")
        self._secret = options.api_key.get_secret_value() if options.api_key else None
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
        # Everything but the body's length and the request id is the same for every request.
        self._head = (
            b"POST "
            + url.raw_path
            + b" HTTP/1.1\r\n"
            + b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        )
        self._heads = openai_endpoints.heads(url.raw_path, self._head)  # the other endpoints
        self._transport = context.transport
        self._connect_timeout = context.connect_timeout
        self._pool_timeout = context.pool_timeout
        self._origin = self._transport.origin(url)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        body = request.body.copy()
        body["model"] = request.model
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        content = orjson.dumps(body)
        head = self._head + b"content-length: " + str(len(content)).encode() + b"\r\n"
        if request.request_id:
            head += b"x-request-id: " + request.request_id.encode("latin-1") + b"\r\n"
        with self._mapped(before_head=True):
            response = await self._transport.exchange(
                self._origin,
                head + b"\r\n",
                content,
                connect_timeout=self._connect_timeout,
                pool_timeout=self._pool_timeout,
                on_queue=request.on_queue,
            )
        try:
            if response.status != 200:
                raise await self._status_error(response)
            content_type = response.header(b"content-type") or ""
            if content_type.startswith("application/json"):
                # A non-streamed answer (asked for, or an upstream that ignores stream=true).
                with self._mapped(before_head=False):
                    raw = await _read_limited(response, limit=_MAX_JSON_BODY)
                for chunk in completion_to_chunks(_json_object(raw)):
                    yield chunk
                return
            # Read, decode and convert in one loop: this runs once per streamed chunk.
            decoder = SSEDecoder()
            reader = ChunkReader()
            while True:
                with self._mapped(before_head=False):
                    data = await response.read()
                try:
                    events = decoder.feed(data) if data else decoder.flush()
                except SSEError as exc:
                    raise malformed(str(exc)) from exc
                for event in events:
                    if event == b"[DONE]":
                        return
                    yield reader.read(self._event(event))
                if not data:
                    break
            reader.check_finished()
        finally:
            await response.aclose()

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """``POST {base}/embeddings`` (see :mod:`providers.openai_endpoints`)."""
        return await openai_endpoints.embed(self, request)

    def complete(self, request: CompletionRequest) -> AsyncGenerator[dict[str, Any], None]:
        """``POST {base}/completions``, the legacy API (see :mod:`providers.openai_endpoints`)."""
        return openai_endpoints.complete(self, request)

    def _event(self, event: bytes) -> dict[str, Any]:
        try:
            data = orjson.loads(event)
        except orjson.JSONDecodeError:
            raise malformed("the upstream sent an event that is not valid JSON") from None
        if type(data) is not dict:
            raise malformed("the upstream sent an event that is not a JSON object")
        error = data.get("error")
        if error is not None:
            detail = error.get("message") if isinstance(error, dict) else error
            raise UpstreamStreamError(
                "the upstream reported an error mid-stream: " + self._redact(str(detail))
            )
        return data

    @contextlib.contextmanager
    def _mapped(self, *, before_head: bool) -> Iterator[None]:
        """Transport failures -> the provider error tree, keeping the cause."""
        try:
            yield
        except http1.TransportError as exc:
            raise self._transport_error(exc, before_head=before_head) from exc

    def _transport_error(self, exc: http1.TransportError, *, before_head: bool) -> ProviderError:
        where = f"the upstream of provider '{self.name}'"
        if isinstance(exc, http1.ConnectTimedOut):
            return UpstreamTimeout(f"connecting to {where} timed out", phase="connect")
        if isinstance(exc, http1.ConnectFailed):
            return UpstreamConnectError(f"{where} is unreachable")
        if isinstance(exc, http1.PoolTimedOut):
            return PoolExhausted(
                f"every connection to {where} stayed busy; try again later or raise the "
                "provider's MAX_CONNECTIONS"
            )
        if isinstance(exc, http1.MalformedResponse):
            return UpstreamProtocolError(
                f"{where} sent a malformed HTTP response", code="upstream_malformed"
            )
        if before_head:  # the request went out; the upstream may have acted on it: no replay
            return UpstreamProtocolError(
                f"{where} closed the connection without answering", code="upstream_disconnected"
            )
        return UpstreamProtocolError(
            f"{where} broke the connection mid-response", code="upstream_truncated"
        )

    async def _status_error(self, response: http1.RawResponse) -> UpstreamStatusError:
        try:
            raw = await _read_limited(response, limit=_MAX_ERROR_BODY)
        except http1.TransportError:
            raw = b""
        return status_error(
            response.status,
            provider=self.name,
            detail=self._redact(_upstream_message(raw)),
            retry_after=_retry_after(response.header(b"retry-after")),
        )

    def _redact(self, text: str) -> str:
        """Upstream text without our key: whole, in part (12+ characters), in any case."""
        if self._secret_pieces is not None:
            text = self._secret_pieces.sub("[redacted]", text)
        return _TOKENISH.sub("[redacted]", text)[:500]

    async def aclose(self) -> None:
        return None  # the transport is the gateway's


async def _read_limited(response: http1.RawResponse, *, limit: int) -> bytes:
    """The body, or its first ``limit`` bytes (an error body), or malformed past ``limit``."""
    parts: list[bytes] = []
    size = 0
    async for part in response.aiter_raw():
        parts.append(part)
        size += len(part)
        if size >= limit:
            if limit == _MAX_JSON_BODY:
                raise malformed("the upstream's answer is larger than the gateway accepts")
            break
    return b"".join(parts)[:limit]


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if type(data) is not dict:
        raise malformed("the upstream answered with JSON that is not a chat completion")
    return data


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
        raise ValueError("must not contain line breaks")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("must be Latin-1 text") from None


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


SPEC = ProviderType(
    name="openai",
    options=Options,
    create=OpenAICompatProvider,
    capabilities=frozenset({"chat", "tools", "vision", "reasoning", "embeddings", "completions"}),
)
