"""The echo provider: replies with the last user message, word by word, with no network."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from providers.base import ChatRequest, Chunk, Delta, Usage
from providers.spec import ProviderContext, ProviderType

# A piece is a word with the whitespace that follows it; leading whitespace is a piece of its own.
_PIECE = re.compile(r"\s+|\S+\s*")


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def split_pieces(text: str) -> list[str]:
    """Word-sized pieces whose concatenation is exactly ``text``."""
    pieces = _PIECE.findall(text)
    if pieces and pieces[0].isspace() and len(pieces) > 1:
        pieces[1] = pieces[0] + pieces[1]
        del pieces[0]
    return pieces


def count_tokens(text: str) -> int:
    """A cheap stand-in for a tokenizer: one token per word-sized piece."""
    return len(split_pieces(text))


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chunk_delay_ms: float = Field(default=0.0, ge=0, description="pause before each piece")


class EchoProvider:
    """Streams the last user message back; ``chunk_delay_ms`` paces the stream."""

    def __init__(self, context: ProviderContext, options: Options) -> None:
        self.name = context.name
        self.models = context.models
        self._delay = options.chunk_delay_ms / 1000.0

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        messages: list[dict[str, Any]] = request.body["messages"]
        text = next(
            (message_text(m.get("content")) for m in reversed(messages) if m["role"] == "user"),
            "",
        )
        pieces = split_pieces(text)
        limit = request.body.get("max_completion_tokens") or request.body.get("max_tokens")
        finish = "stop"
        if isinstance(limit, int) and len(pieces) > limit:
            pieces, finish = pieces[:limit], "length"
        choices = range(int(request.body.get("n") or 1))
        delay = self._delay

        for piece in pieces:
            if delay:
                await asyncio.sleep(delay)
            yield Chunk(deltas=[Delta(choice=i, text=piece) for i in choices])
        yield Chunk(
            deltas=[Delta(choice=i, finish_reason=finish, stop_reason=finish) for i in choices]
        )
        prompt_tokens = sum(count_tokens(message_text(m.get("content"))) for m in messages)
        yield Chunk(
            deltas=[],
            usage=Usage(input_tokens=prompt_tokens, output_tokens=len(pieces) * len(choices)),
        )

    async def aclose(self) -> None:
        return None


SPEC = ProviderType(
    name="echo",
    options=Options,
    create=EchoProvider,
    capabilities=frozenset({"chat"}),
    default_models=("echo",),
)
