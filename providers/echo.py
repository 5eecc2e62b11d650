"""The echo provider: replies with the last user message, word by word, with no network; and
deterministic embeddings, for tests."""

from __future__ import annotations

import array
import asyncio
import hashlib
import math
import re
from collections.abc import AsyncGenerator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from providers.base import ChatRequest, Chunk, Delta, EmbeddingRequest, Embeddings, Usage
from providers.errors import status_error
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


EMBEDDING_DIMENSIONS = 256
# Values per request (inputs x dimensions): echo computes them on the event loop.
MAX_EMBEDDING_VALUES = 1 << 20


def embedding(key: bytes, dimensions: int) -> list[float]:
    """A unit vector that only ``key`` gives: hash bytes as int16s, normalised."""
    raw = array.array("h", hashlib.shake_256(key).digest(2 * dimensions))
    norm = math.sqrt(math.fsum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def _embedding_keys(request: EmbeddingRequest) -> tuple[list[bytes], int]:
    """The hash keys of the inputs (texts, or token arrays: never equal to a text's) and
    their estimated token count."""
    if request.inputs:
        keys = [b"text:" + text.encode("utf-8", "surrogatepass") for text in request.inputs]
        return keys, sum(count_tokens(text) for text in request.inputs)
    given = request.body.get("input") or []
    arrays: list[list[int]] = [given] if given and isinstance(given[0], int) else given
    keys = [b"tokens:" + ",".join(map(str, ids)).encode() for ids in arrays]
    return keys, sum(len(ids) for ids in arrays)


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

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Deterministic embeddings: the same input always gets the same unit vector, other
        inputs other ones; ``dimensions`` of them (default 256); usage estimated."""
        dimensions = request.body.get("dimensions") or EMBEDDING_DIMENSIONS
        keys, tokens = _embedding_keys(request)
        if len(keys) * dimensions > MAX_EMBEDDING_VALUES:
            raise status_error(
                400,
                provider=self.name,
                detail=f"echo computes at most {MAX_EMBEDDING_VALUES} values (inputs x "
                "dimensions) per request",
            )
        vectors = [embedding(key, dimensions) for key in keys]
        return Embeddings(vectors=vectors, usage=Usage(input_tokens=tokens, source="estimated"))

    async def aclose(self) -> None:
        return None


SPEC = ProviderType(
    name="echo",
    options=Options,
    create=EchoProvider,
    capabilities=frozenset({"chat", "embeddings"}),
    default_models=("echo",),
)
