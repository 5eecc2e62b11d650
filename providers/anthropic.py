"""The native Anthropic provider: the Messages API (``POST /v1/messages``) over the gateway's
own transport.

The client's chat request is put in Anthropic's terms by :mod:`providers.anthropic_request`
(refusing, with a 400 and before anything is sent, what has no Anthropic equivalent); the
answer's events become the normalized stream in :mod:`providers.anthropic_stream`. A streaming
client's request streams; a non-streaming client's is one ``stream: false`` call, yielded as
chunks all the same. The client's headers are never forwarded: the upstream gets the
configured ``x-api-key``, ``anthropic-version`` and ``anthropic-beta``, and the request id.

Transport failures are mapped once, in :meth:`AnthropicProvider._mapped`; statuses by
:func:`providers.errors.status_error` (429 and 529 are retried, honouring ``retry-after``), with
Anthropic's error message, key redacted, shown when the request itself was refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, Iterator
from typing import Annotated, Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from providers import http1
from providers.anthropic_request import SAMPLING_MODELS, RequestPolicy, messages_body
from providers.anthropic_stream import EventReader, malformed, message_to_chunks, stream_error
from providers.base import ChatRequest, Chunk
from providers.errors import (
    PoolExhausted,
    ProviderError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    status_error,
)

# Shared with the openai provider, so that key redaction and header checks cannot drift apart.
from providers.openai_compat import (
    _MAX_ERROR_BODY,
    _MAX_JSON_BODY,
    _TOKENISH,
    _header_value,
    _pieces_pattern,
    _read_limited,
    _retry_after,
)
from providers.spec import ProviderContext, ProviderType
from providers.sse import SSEDecoder, SSEError

_BETA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# After message_stop only the body's end should follow; wait this long for it, so that the
# connection can be reused, then give up on reuse rather than hold the client's [DONE].
_DRAIN_SECONDS = 1.0


class Options(BaseModel):
    """``GATEWAY_PROVIDERS__<NAME>__*`` variables of TYPE ``anthropic``."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        "https://api.anthropic.com", description="the API root; /v1/messages is appended"
    )
    api_key: SecretStr = Field(description="sent as x-api-key")
    anthropic_version: str = "2023-06-01"
    betas: list[str] = Field(default_factory=list, description="sent as anthropic-beta: a,b")
    max_tokens: Annotated[int, Field(ge=1)] = Field(
        4096, description="max_tokens when the client gives none (Anthropic requires one)"
    )
    max_tokens_by_model: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="per upstream model, instead of max_tokens"
    )
    sampling_models: list[str] = Field(
        default_factory=lambda: list(SAMPLING_MODELS),
        description="model patterns (fnmatch) that are sent temperature and top_p",
    )
    no_top_p_with_temperature: list[str] = Field(
        default_factory=lambda: ["*"],
        description="model patterns (fnmatch) that get no top_p when temperature is set",
    )
    adaptive_thinking_models: list[str] = Field(
        default_factory=list,
        description="model patterns whose reasoning_effort becomes adaptive thinking + effort",
    )

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
    def _key_header_safe(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        _header_value(value.get_secret_value())
        return value

    @field_validator("anthropic_version")
    @classmethod
    def _version_header_safe(cls, value: str) -> str:
        _header_value(value)
        return value

    @field_validator("betas")
    @classmethod
    def _beta_names(cls, value: list[str]) -> list[str]:
        for beta in value:
            if not _BETA.fullmatch(beta):
                raise ValueError(f"{beta[:40]!r} is not a beta name (letters, digits, . _ -)")
        return value


class AnthropicProvider:
    """A provider in front of one Anthropic Messages API root."""

    def __init__(self, context: ProviderContext, options: Options) -> None:
        self.name = context.name
        self.models = context.models
        root = options.base_url.rstrip("/")
        url = httpx.URL(root + ("/messages" if root.endswith("/v1") else "/v1/messages"))
        self._secret = options.api_key.get_secret_value()
        self._secret_pieces = _pieces_pattern(self._secret)
        headers = [
            (b"host", url.netloc),
            (b"content-type", b"application/json"),
            (b"accept", b"text/event-stream, application/json"),
            (b"accept-encoding", b"identity"),
            (b"user-agent", b"llm-gateway"),
            (b"x-api-key", _header_value(self._secret)),
            (b"anthropic-version", _header_value(options.anthropic_version)),
        ]
        if options.betas:
            headers.append((b"anthropic-beta", ",".join(options.betas).encode()))
        # Everything but the body's length and the request id is the same for every request.
        self._head = (
            b"POST "
            + url.raw_path
            + b" HTTP/1.1\r\n"
            + b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        )
        self._policy = RequestPolicy(
            max_tokens=options.max_tokens,
            max_tokens_by_model=dict(options.max_tokens_by_model),
            sampling_models=tuple(options.sampling_models),
            no_top_p_with_temperature=tuple(options.no_top_p_with_temperature),
            adaptive_thinking_models=tuple(options.adaptive_thinking_models),
        )
        self._transport = context.transport
        self._connect_timeout = context.connect_timeout
        self._pool_timeout = context.pool_timeout
        self._origin = self._transport.origin(url)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        """Yield the answer's chunks; see the module docstring."""
        body = messages_body(
            request.body, model=request.model, stream=request.stream, policy=self._policy
        )
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
                with self._mapped(before_head=False):
                    raw = await _read_limited(response, limit=_MAX_JSON_BODY)
                message = _json_object(raw)
                if message.get("type") == "error":  # a 200 that is an error all the same
                    raise stream_error(message.get("error"), redact=self._redact)
                for whole in message_to_chunks(message):
                    yield whole
                return
            decoder = SSEDecoder()
            reader = EventReader(redact=self._redact)
            while not reader.finished:
                with self._mapped(before_head=False):
                    data = await response.read()
                try:
                    events = decoder.feed(data) if data else decoder.flush()
                except SSEError as exc:
                    raise malformed(str(exc)) from exc
                for event in events:
                    chunk = reader.read(_json_object(event))
                    if chunk is not None:
                        yield chunk
                    if reader.finished:
                        break  # what might follow message_stop is of no interest
                if not data and not reader.finished:
                    raise UpstreamProtocolError(
                        f"the upstream of provider '{self.name}' ended the stream before "
                        "message_stop",
                        code="upstream_truncated",
                    )
            await _drain(response)
        finally:
            await response.aclose()

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
            detail=self._redact(_error_message(raw)),
            retry_after=_retry_after(response.header(b"retry-after")),
        )

    def _redact(self, text: str) -> str:
        """Upstream text without our key: whole, in part (12+ characters), in any case."""
        return _TOKENISH.sub("[redacted]", self._secret_pieces.sub("[redacted]", text))[:500]

    async def aclose(self) -> None:
        return None  # the transport is the gateway's


def _json_object(raw: bytes) -> dict[str, Any]:
    """An event or a whole answer, as a JSON object."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise malformed("the upstream sent an event that is not valid JSON") from None
    if type(data) is not dict:
        raise malformed("the upstream sent an event that is not a JSON object")
    return data


async def _drain(response: http1.RawResponse) -> None:
    """Read to the body's end (briefly), so that the connection goes back to the pool."""
    with contextlib.suppress(TimeoutError, http1.TransportError):
        async with asyncio.timeout(_DRAIN_SECONDS):
            while await response.read():
                pass


def _error_message(raw: bytes) -> str:
    """The ``error.message`` of Anthropic's error body ``{"type": "error", "error": {...}}``."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return ""


SPEC = ProviderType(
    name="anthropic",
    options=Options,
    create=AnthropicProvider,
    capabilities=frozenset({"chat", "tools", "vision", "reasoning"}),
)

__all__ = ["SPEC", "AnthropicProvider", "Options"]
