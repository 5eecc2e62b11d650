"""The provider interface and the normalized types it speaks; no I/O here.

A provider turns a :class:`ChatRequest` into an async iterator of :class:`Chunk`. Streaming and
non-streaming answers go through the same iterator: the gateway aggregates it when the client did
not ask for a stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class ChatRequest:
    """A validated chat request, addressed to one upstream model.

    ``body`` is the client's JSON body (an OpenAI ``CreateChatCompletionRequest``) without
    ``model``, ``stream`` and ``stream_options``; adapters that speak OpenAI pass it through.
    ``stream`` says whether the client reads the answer as it comes: when it does not, an
    adapter may fetch the whole answer at once, and still yields it as chunks.
    """

    model: str
    body: dict[str, Any]
    stream: bool = True


@dataclass(slots=True)
class Chunk:
    """One step of a completion, in OpenAI ``chat.completion.chunk`` terms.

    ``choices`` holds OpenAI chunk choices (``index``, ``delta``, ``finish_reason``,
    ``logprobs``); a usage-only chunk has no choices and ``usage`` set.
    """

    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None
    system_fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; ``None`` means no limit."""

    connect: float | None = 10.0
    first_token: float | None = 60.0
    idle: float | None = 60.0
    total: float | None = 600.0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """What every adapter is built from; type-specific settings live in ``options``."""

    name: str
    models: tuple[str, ...]
    timeouts: Timeouts = field(default_factory=Timeouts)
    options: Mapping[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    """A source of completions."""

    name: str
    models: tuple[str, ...]

    def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        """Yield the completion's chunks; raise :class:`providers.errors.ProviderError`."""
        ...

    async def aclose(self) -> None:
        """Release pooled resources (connections)."""
        ...
