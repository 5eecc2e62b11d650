"""The echo provider: replies with the last user message, word by word, with no network."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

from providers.base import ChatRequest, Chunk, ProviderConfig

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


class EchoProvider:
    """Streams the last user message back; ``chunk_delay_ms`` paces the stream."""

    def __init__(self, config: ProviderConfig) -> None:
        self.name = config.name
        self.models = config.models or ("echo",)
        self._delay = float(config.options.get("chunk_delay_ms", 0.0)) / 1000.0

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
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

        role_sent = False
        for piece in pieces:
            if delay:
                await asyncio.sleep(delay)
            delta: dict[str, Any] = {"content": piece}
            if not role_sent:
                delta = {"role": "assistant", "content": piece}
                role_sent = True
            yield Chunk(
                choices=[
                    {"index": i, "delta": delta, "finish_reason": None, "logprobs": None}
                    for i in choices
                ]
            )
        last: dict[str, Any] = {} if role_sent else {"role": "assistant", "content": ""}
        yield Chunk(
            choices=[
                {"index": i, "delta": last, "finish_reason": finish, "logprobs": None}
                for i in choices
            ]
        )
        prompt_tokens = sum(count_tokens(message_text(m.get("content"))) for m in messages)
        completion_tokens = len(pieces) * len(choices)
        yield Chunk(
            choices=[],
            usage={
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        )

    async def aclose(self) -> None:
        return None
