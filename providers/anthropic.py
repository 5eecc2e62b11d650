"""The native Anthropic provider: the Messages API (``POST /v1/messages``) over the gateway's
own transport.

The client's chat request is put in Anthropic's terms by :mod:`providers.anthropic_request`
(refusing, with a 400 and before anything is sent, what has no Anthropic equivalent); the
answer's events become the normalized stream in :mod:`providers.anthropic_stream`. A streaming
client's request streams; a non-streaming client's is one ``stream: false`` call, yielded as
chunks all the same. The client's headers are never forwarded: the upstream gets the
configured ``x-api-key``, ``anthropic-version`` and ``anthropic-beta``, and the request id.

Transport failures are mapped by :mod:`providers.upstream`, as for every HTTP provider; statuses by
:func:`providers.errors.status_error` (429 and 529 are retried, honouring ``retry-after``), with
Anthropic's error message, key redacted, shown when the request itself was refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from providers import http1, upstream
from providers.anthropic_request import SAMPLING_MODELS, RequestPolicy, messages_body
from providers.anthropic_stream import EventReader, message_to_chunks, stream_error
from providers.base import ChatRequest, Chunk
from providers.errors import UpstreamProtocolError, UpstreamStatusError, malformed
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
        upstream.check_base_url(value)
        return value

    @field_validator("api_key")
    @classmethod
    def _key_header_safe(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        upstream.header_value(value.get_secret_value())
        return value

    @field_validator("anthropic_version")
    @classmethod
    def _version_header_safe(cls, value: str) -> str:
        upstream.header_value(value)
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
        self._redact = upstream.Redactor(self._secret)
        headers = [
            (b"x-api-key", upstream.header_value(self._secret)),
            (b"anthropic-version", upstream.header_value(options.anthropic_version)),
        ]
        if options.betas:
            headers.append((b"anthropic-beta", ",".join(options.betas).encode()))
        self._upstream = upstream.Upstream(context, url, headers)
        self._path = url.raw_path
        self._policy = RequestPolicy(
            max_tokens=options.max_tokens,
            max_tokens_by_model=dict(options.max_tokens_by_model),
            sampling_models=tuple(options.sampling_models),
            no_top_p_with_temperature=tuple(options.no_top_p_with_temperature),
            adaptive_thinking_models=tuple(options.adaptive_thinking_models),
        )

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        """Yield the answer's chunks; see the module docstring."""
        body = messages_body(
            request.body, model=request.model, stream=request.stream, policy=self._policy
        )
        response = await self._upstream.post(
            self._path, orjson.dumps(body), request_id=request.request_id, on_queue=request.on_queue
        )
        try:
            if response.status != 200:
                raise await self._status_error(response)
            content_type = response.header(b"content-type") or ""
            if content_type.startswith("application/json"):
                with self._mapped(before_head=False):
                    raw = await upstream.read_whole(response)
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

    def _mapped(self, *, before_head: bool) -> contextlib.AbstractContextManager[None]:
        return upstream.mapped(self.name, before_head=before_head)

    async def _status_error(self, response: http1.RawResponse) -> UpstreamStatusError:
        return await upstream.status_failure(response, provider=self.name, redact=self._redact)

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


SPEC = ProviderType(
    name="anthropic",
    options=Options,
    create=AnthropicProvider,
    capabilities=frozenset({"chat", "tools", "vision", "reasoning"}),
)

__all__ = ["SPEC", "AnthropicProvider", "Options"]
