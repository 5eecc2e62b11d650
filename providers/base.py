"""The provider interface and the normalized stream it speaks; no I/O here.

A provider turns a :class:`ChatRequest` into an async iterator of :class:`Chunk`. Streaming and
non-streaming answers go through the same iterator: the gateway aggregates it when the client did
not ask for a stream.

The stream is richer than an OpenAI chunk, because every API surface renders it in its own
grammar (chat completions now; Anthropic's Messages and OpenAI's Responses next) and each needs
something the others drop: reasoning text with its opaque signature, tool calls keyed by the
gateway's own index, the provider's raw stop reason, cache and reasoning token counts::

    Chunk
    ├── deltas: [Delta]       one per choice that moved (``choice`` = OpenAI's ``index``)
    │   ├── text, reasoning (+ reasoning_signature, redacted_reasoning), refusal
    │   ├── tool_calls: [ToolCallDelta]   ``index`` is the gateway's, 0, 1, 2... per choice;
    │   │                                 ``id`` and ``name`` come on a call's first delta
    │   ├── finish_reason (OpenAI's words) and stop_reason (the provider's own)
    │   └── logprobs, extra (provider fields a surface may pass through as they are)
    └── usage: Usage          cumulative; the last one seen wins
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

UsageSource = Literal["provider", "estimated", "partial"]


@dataclass(slots=True)
class ChatRequest:
    """A validated chat request, addressed to one upstream model.

    ``body`` is the client's JSON body (an OpenAI ``CreateChatCompletionRequest``) without
    ``model``, ``stream`` and ``stream_options``; adapters that speak OpenAI pass it through.
    ``stream`` says whether the client reads the answer as it comes: when it does not, an
    adapter may fetch the whole answer at once, and still yields it as chunks.
    ``request_id`` is the gateway's id of the client request, for the upstream's logs.
    ``on_queue`` is called with True when the request starts waiting for a free upstream
    connection and with False when it has one, so that the wait is not charged to the upstream.
    """

    model: str
    body: dict[str, Any]
    stream: bool = True
    request_id: str | None = None
    on_queue: Callable[[bool], None] | None = None


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of one tool call. ``index`` is the gateway's per-choice call number."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    type: str = "function"
    extra: dict[str, Any] | None = None  # provider data to round-trip (Gemini's signatures)


@dataclass(slots=True)
class Delta:
    """What one choice gained in one step."""

    choice: int = 0
    text: str | None = None
    reasoning: str | None = None
    reasoning_signature: str | None = None
    redacted_reasoning: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: str | None = None
    stop_reason: str | None = None
    logprobs: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None


@dataclass(slots=True)
class Usage:
    """Token counts. ``input_tokens`` includes cached ones; ``output_tokens`` reasoning ones."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    source: UsageSource = "provider"

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Chunk:
    """One step of a completion: deltas per choice, and/or usage."""

    deltas: list[Delta]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class Provider(Protocol):
    """A source of completions."""

    name: str
    models: tuple[str, ...]

    def stream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        """Yield the completion's chunks; raise :class:`providers.errors.ProviderError`.

        Implementations are async generators: the gateway closes them (``aclose()``) when it
        stops reading, and cancels them when the client leaves or a timeout passes.
        """
        ...

    async def aclose(self) -> None:
        """Release pooled resources (connections)."""
        ...


# Optional capabilities: a provider that can do more than chat implements one of these small
# protocols as well; the gateway checks with isinstance() and answers 400 naming the provider
# when a surface needs a capability its provider lacks.


@dataclass(slots=True)
class EmbeddingRequest:
    """``inputs``: the texts to embed (an OpenAI ``input`` given as token arrays is kept in
    ``body`` for pass-through upstreams, with ``inputs`` empty). ``body`` is the client's body
    without ``model``, ``input`` and ``encoding_format`` (``dimensions``, ``user``...)."""

    model: str
    inputs: list[str]
    body: dict[str, Any]
    request_id: str | None = None
    on_queue: Callable[[bool], None] | None = None


@dataclass(slots=True)
class Embeddings:
    """One vector per input, in input order."""

    vectors: list[list[float]]
    usage: Usage | None = None


@runtime_checkable
class SupportsEmbeddings(Protocol):
    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Raise :class:`providers.errors.ProviderError` on failure."""
        ...


@dataclass(slots=True)
class CompletionRequest:
    """A legacy ``/v1/completions`` request (OpenAI ``CreateCompletionRequest`` without
    ``model``, ``stream`` and ``stream_options``), for upstreams that still serve it."""

    model: str
    body: dict[str, Any]
    stream: bool = True
    request_id: str | None = None
    on_queue: Callable[[bool], None] | None = None


@runtime_checkable
class SupportsCompletions(Protocol):
    def complete(self, request: CompletionRequest) -> AsyncGenerator[dict[str, Any], None]:
        """Yield the upstream's ``text_completion`` objects (chunks, or one whole answer),
        shape-checked; the last one seen with ``usage`` carries it."""
        ...
