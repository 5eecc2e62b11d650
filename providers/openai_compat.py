"""The OpenAI-compatible provider: OpenAI, vLLM, Ollama, llama.cpp, DeepSeek, Groq, ...

Requests go through the gateway's connection pool (:mod:`providers.http1`) with a request head
encoded once. A streaming client's request streams from the upstream with usage always asked
for; a non-streaming client's request is one upstream call, whose answer is yielded as chunks
all the same. Upstream chunks are checked for shape and turned into the normalized stream here
(:mod:`providers.openai_chunks`); transport failures are mapped by :mod:`providers.upstream`,
and statuses by :func:`providers.errors.status_error`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any, Literal

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from providers import http1, openai_endpoints, upstream
from providers.base import ChatRequest, Chunk, CompletionRequest, EmbeddingRequest, Embeddings
from providers.errors import UpstreamStatusError, UpstreamStreamError, malformed
from providers.openai_chunks import ChunkReader, completion_to_chunks
from providers.spec import ProviderContext, ProviderType
from providers.sse import SSEDecoder, SSEError

_NOT_JSON = "the upstream sent an event that is not valid JSON"


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="the upstream's OpenAI API root, e.g. http://host/v1")
    api_key: SecretStr | None = None
    system_messages: Literal["as_sent", "leading"] = Field(
        "as_sent",
        description=(
            "'leading': every system and developer message joins one system message at the "
            "start, for chat templates that refuse one anywhere else (Qwen, Llama and others "
            "behind vLLM or Ollama; Claude Code and Codex send them mid-conversation)"
        ),
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        upstream.check_base_url(value)
        return value

    @field_validator("api_key")
    @classmethod
    def _header_safe(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            upstream.header_value(value.get_secret_value())
        return value


class OpenAICompatProvider:
    def __init__(self, context: ProviderContext, options: Options) -> None:
        self.name = context.name
        self.models = context.models
        url = httpx.URL(options.base_url.rstrip("/") + "/chat/completions")
        self._secret = options.api_key.get_secret_value() if options.api_key else None
        self._redact = upstream.Redactor(self._secret)
        headers = []
        if self._secret:
            headers.append((b"authorization", b"Bearer " + upstream.header_value(self._secret)))
        self._upstream = upstream.Upstream(context, url, headers)
        self._chat_path = url.raw_path
        base = url.raw_path.removesuffix(b"/chat/completions")
        self._paths = {name: base + b"/" + name for name in (b"embeddings", b"completions")}
        self._leading_system = options.system_messages == "leading"

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        body = request.body.copy()
        body["model"] = request.model
        if self._leading_system:
            body["messages"] = leading_system(body.get("messages"))
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        response = await self._upstream.post(
            self._chat_path,
            orjson.dumps(body),
            request_id=request.request_id,
            on_queue=request.on_queue,
        )
        try:
            if response.status != 200:
                raise await self._status_error(response)
            content_type = response.header(b"content-type") or ""
            if content_type.startswith("application/json"):
                # A non-streamed answer (asked for, or an upstream that ignores stream=true).
                with self._mapped(before_head=False):
                    raw = await upstream.read_whole(response)
                for chunk in completion_to_chunks(_json_object(raw)):
                    yield chunk
                return
            # Read, decode and convert in one loop: this runs once per streamed chunk.
            decoder = SSEDecoder()
            reader = ChunkReader()
            while True:
                try:  # not a `with`: this runs once per streamed chunk
                    data = await response.read()
                except http1.TransportError as exc:
                    raise upstream.transport_error(
                        exc, provider=self.name, before_head=False
                    ) from exc
                try:
                    events = decoder.feed(data) if data else decoder.flush()
                except SSEError as exc:
                    raise malformed(str(exc)) from exc
                for event in events:
                    if event == b"[DONE]":
                        return
                    try:
                        parsed = orjson.loads(event)
                    except orjson.JSONDecodeError:
                        raise malformed(_NOT_JSON) from None
                    if type(parsed) is not dict or "error" in parsed:
                        parsed = self._checked(parsed)
                    yield reader.read(parsed)
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
        """A streamed event's JSON object (see ``stream``'s loop for the inlined common case)."""
        try:
            data = orjson.loads(event)
        except orjson.JSONDecodeError:
            raise malformed(_NOT_JSON) from None
        return data if type(data) is dict and "error" not in data else self._checked(data)

    def _checked(self, data: Any) -> dict[str, Any]:
        """An event's JSON that is not a plain object: an error report, or not an object."""
        if type(data) is not dict:
            raise malformed("the upstream sent an event that is not a JSON object")
        error = data.get("error")
        if error is not None:
            detail = error.get("message") if isinstance(error, dict) else error
            raise UpstreamStreamError(
                "the upstream reported an error mid-stream: " + self._redact(str(detail))
            )
        return data

    def _mapped(self, *, before_head: bool) -> contextlib.AbstractContextManager[None]:
        return upstream.mapped(self.name, before_head=before_head)

    async def _status_error(self, response: http1.RawResponse) -> UpstreamStatusError:
        return await upstream.status_failure(response, provider=self.name, redact=self._redact)

    async def aclose(self) -> None:
        return None  # the transport is the gateway's


def leading_system(messages: Any) -> Any:
    """``messages`` with every system and developer message's text joined, in order, into one
    system message at the start; the others keep their order. Unchanged when there is none."""
    if not isinstance(messages, list):
        return messages
    texts: list[str] = []
    rest: list[Any] = []
    for message in messages:
        if isinstance(message, dict) and message.get("role") in ("system", "developer"):
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts.extend(
                    part["text"]
                    for part in content
                    if isinstance(part, dict) and isinstance(part.get("text"), str)
                )
        else:
            rest.append(message)
    if len(rest) == len(messages):
        return messages
    return [{"role": "system", "content": "\n\n".join(t for t in texts if t)}, *rest]


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if type(data) is not dict:
        raise malformed("the upstream answered with JSON that is not a chat completion")
    return data


SPEC = ProviderType(
    name="openai",
    options=Options,
    create=OpenAICompatProvider,
    capabilities=frozenset({"chat", "tools", "vision", "reasoning", "embeddings", "completions"}),
)
