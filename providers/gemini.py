"""The native Google Gemini provider (``TYPE=gemini``): the Gemini API's own wire format.

``POST {BASE_URL}/v1beta/models/{model}:streamGenerateContent?alt=sse`` for a streaming
client, ``:generateContent`` for the others, ``:batchEmbedContents`` for embeddings, through
the gateway's connection pool (:mod:`providers.http1`). The request mapping lives in
:mod:`providers.gemini_request`, the answer's in :mod:`providers.gemini_response`.

``BASE_URL`` is the API's root (default ``https://generativelanguage.googleapis.com``);
``/v1beta`` (every feature used here; the google-genai SDK 3.x defaults to ``/v1``) is appended
unless it already ends in a version (``.../v1beta``, ``.../v1``), so a proxy that mounts the API
under a path of its own works either way. The key goes only in the
``x-goog-api-key`` header: never in a URL, where it would end up in access logs and
tracebacks; a BASE_URL with a query string is refused for that reason.

Upstream errors arrive as Google's ``{"error": {"code", "message", "status", "details"}}``
(sometimes inside a one-element array): the message is redacted before a client sees it,
``google.rpc.RetryInfo`` counts as a ``Retry-After``, and a 400 that Google uses for a bad key
(``API_KEY_INVALID``) is the 401 it means.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator, Callable
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from providers import http1, upstream
from providers.base import ChatRequest, Chunk, EmbeddingRequest, Embeddings, Usage
from providers.errors import (
    UnsupportedRequest,
    UpstreamStatusError,
    UpstreamStreamError,
    malformed,
    status_error,
)
from providers.gemini_errors import AUTH_REASONS, google_error
from providers.gemini_request import chat_request, embed_requests
from providers.gemini_response import ResponseReader
from providers.spec import ProviderContext, ProviderType
from providers.sse import SSEDecoder, SSEError

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
_VERSIONED = re.compile(rb"/v\d+(?:alpha|beta)?\d*$")


class Options(BaseModel):
    """The variables of a ``TYPE=gemini`` provider block."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="the Gemini API root; /v1beta is appended unless it ends in a version",
    )
    api_key: SecretStr = Field(description="sent only as the x-goog-api-key header")
    include_thoughts: bool = Field(
        default=True,
        description="ask for thought summaries (reasoning_content); false for models that "
        "cannot think",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a valid URL ({exc})") from None
        if url.query or url.fragment:
            raise ValueError("must not have a query or fragment (the key goes in API_KEY)")
        return value

    @field_validator("api_key")
    @classmethod
    def _header_safe(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        upstream.header_value(value.get_secret_value())
        return value


class GeminiProvider:
    """Chat (streamed or whole) and embeddings from the Gemini API."""

    def __init__(self, context: ProviderContext, options: Options) -> None:
        self.name = context.name
        self.models = context.models
        url = httpx.URL(options.base_url.rstrip("/"))
        path = url.raw_path.rstrip(b"/")
        self._root = path if _VERSIONED.search(path) else path + b"/v1beta"
        secret = options.api_key.get_secret_value()
        self._redact = upstream.Redactor(secret)
        self._include_thoughts = options.include_thoughts
        self._upstream = upstream.Upstream(
            context, url, [(b"x-goog-api-key", upstream.header_value(secret))]
        )
        self._logger = context.logger

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        body = chat_request(
            request.body, model=request.model, include_thoughts=self._include_thoughts
        )
        action = ":streamGenerateContent?alt=sse" if request.stream else ":generateContent"
        response = await self._post(
            request.model, action, body, request_id=request.request_id, on_queue=request.on_queue
        )
        try:
            reader = ResponseReader(log=self._logger)
            content_type = response.header(b"content-type") or ""
            if not content_type.startswith("text/event-stream"):
                # A whole answer: generateContent's object, or the JSON array the stream
                # endpoint sends when alt=sse is lost on the way (a proxy).
                data = await self._json(response)
                for event in data if type(data) is list else [data]:
                    for chunk in reader.read(self._event(event)):
                        yield chunk
                reader.check_finished()
                return
            decoder = SSEDecoder()
            while True:
                with self._mapped(before_head=False):
                    raw = await response.read()
                try:
                    events = decoder.feed(raw) if raw else decoder.flush()
                except SSEError as exc:
                    raise malformed(str(exc)) from exc
                for event in events:
                    try:
                        data = orjson.loads(event)
                    except orjson.JSONDecodeError:
                        raise malformed("the upstream sent an event that is not JSON") from None
                    for chunk in reader.read(self._event(data)):
                        yield chunk
                if not raw:
                    break
            reader.check_finished()  # no [DONE] in Gemini's SSE: the end is the body's end
        finally:
            await response.aclose()

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """One ``batchEmbedContents`` call per 100 inputs; usage estimated if none is given."""
        if not request.inputs:
            raise UnsupportedRequest(
                f"provider '{self.name}' (Gemini) embeds text only, not token arrays"
            )
        vectors: list[list[float]] = []
        tokens: int | None = 0  # None once a batch came without a count
        for body in embed_requests(request.model, request.inputs, request.body):
            response = await self._post(
                request.model,
                ":batchEmbedContents",
                body,
                request_id=request.request_id,
                on_queue=request.on_queue,
            )
            try:
                data = self._event(await self._json(response))
            finally:
                await response.aclose()
            batch = _vectors(data, len(body["requests"]))
            vectors.extend(batch)
            usage = data.get("usageMetadata")
            count = usage.get("promptTokenCount") if type(usage) is dict else None
            tokens = tokens + count if type(count) is int and tokens is not None else None
        if tokens is not None:
            return Embeddings(vectors=vectors, usage=Usage(input_tokens=tokens))
        # Gemini does not count embedding tokens: about four characters a token.
        estimate = sum(max(1, (len(text) + 3) // 4) for text in request.inputs)
        return Embeddings(vectors=vectors, usage=Usage(input_tokens=estimate, source="estimated"))

    async def aclose(self) -> None:
        return None  # the transport is the gateway's

    async def _post(
        self,
        model: str,
        action: str,
        body: dict[str, Any],
        *,
        request_id: str | None,
        on_queue: Callable[[bool], None] | None,
    ) -> http1.RawResponse:
        """Send one request; return the response once its head arrived with status 200."""
        content = orjson.dumps(body)
        name = model if model.startswith(("models/", "tunedModels/")) else "models/" + model
        # quote(): no character of a model name can end the path or the request line ("/"
        # stays, for tunedModels/...).
        path = self._root + b"/" + quote(name, safe="/").encode() + action.encode()
        response = await self._upstream.post(
            path, content, request_id=request_id, on_queue=on_queue
        )
        if response.status != 200:
            try:
                raise await self._status_error(response)
            finally:
                await response.aclose()
        return response

    async def _json(self, response: http1.RawResponse) -> Any:
        with self._mapped(before_head=False):
            raw = await upstream.read_whole(response)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise malformed("the upstream answered with a body that is not JSON") from None

    def _event(self, data: Any) -> dict[str, Any]:
        """A response object, or the error the upstream reported in its place."""
        if type(data) is not dict:
            raise malformed("the upstream sent a response that is not a JSON object")
        error = data.get("error")
        if error is not None:
            message, _, _ = google_error(data)
            raise UpstreamStreamError(
                "the upstream reported an error mid-stream: " + self._redact(message)
            )
        return data

    def _mapped(self, *, before_head: bool) -> contextlib.AbstractContextManager[None]:
        return upstream.mapped(self.name, before_head=before_head)

    async def _status_error(self, response: http1.RawResponse) -> UpstreamStatusError:
        try:
            data = orjson.loads(await upstream.read_error_body(response))
        except orjson.JSONDecodeError:
            data = None
        message, retry_delay, reason = google_error(data)
        status = 401 if response.status == 400 and reason in AUTH_REASONS else response.status
        retry_after = upstream.retry_after(response.header(b"retry-after"))
        return status_error(
            status,
            provider=self.name,
            detail=self._redact(message),
            retry_after=retry_after if retry_after is not None else retry_delay,
        )


def _vectors(data: dict[str, Any], expected: int) -> list[list[float]]:
    embeddings = data.get("embeddings")
    if type(embeddings) is not list or len(embeddings) != expected:
        raise malformed("the upstream answered with the wrong number of embeddings")
    vectors: list[list[float]] = []
    for embedding in embeddings:
        values = embedding.get("values") if type(embedding) is dict else None
        if type(values) is not list or not all(type(v) in (int, float) for v in values):
            raise malformed("the upstream sent an embedding that is not a list of numbers")
        vectors.append([float(v) for v in values])
    return vectors


SPEC = ProviderType(
    name="gemini",
    options=Options,
    create=GeminiProvider,
    capabilities=frozenset({"chat", "tools", "vision", "reasoning", "embeddings"}),
)
