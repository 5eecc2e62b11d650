"""What the UI knows about one streamed reply, read from the gateway's chat completion stream.

``Progress.read`` consumes the stream: answer text, reasoning (``reasoning_content``, which the
openai SDK keeps in ``delta.model_extra``), tool calls, usage and how the stream ended.
``follow`` redraws one or several replies at a bounded rate while they stream. Each page renders
a ``Progress`` its own way; ``stats`` and ``outcome`` are the words they share.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field

import openai
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from webui.errors import describe_error

UPDATE_INTERVAL = 1 / 20
"""Streamed replies are redrawn at most this often: Gradio sends every yield to the browser,
and twenty visitors streaming at once must not flood the server's two cores or their tabs."""


@dataclass
class ToolCall:
    """One streamed tool call; its arguments arrive as JSON text in pieces."""

    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class Progress:
    """One reply so far. Times are ``time.monotonic()`` seconds."""

    model: str
    started: float = field(default_factory=time.monotonic)
    text: str = ""
    reasoning: str = ""
    tool_calls: dict[int, ToolCall] = field(default_factory=dict)
    first_token: float | None = None
    reasoning_ended: float | None = None
    ended: float | None = None
    chunks: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    stopped: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(
        self,
        client: openai.AsyncOpenAI,
        *,
        messages: list[ChatCompletionMessageParam],
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> None:
        """Stream the reply from the gateway into ``self``, setting ``changed`` on news.

        A failure the SDK reports (HTTP status, broken stream, no connection) ends up in
        ``error`` as words for the visitor; anything else is a bug and propagates.
        """
        self.started = time.monotonic()
        try:
            stream = await client.chat.completions.create(
                model=self.model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                temperature=openai.omit if temperature is None else temperature,
                max_tokens=openai.omit if max_tokens is None else max_tokens,
            )
            async with stream:  # closes the HTTP stream when the reply is stopped
                async for chunk in stream:
                    self._take(chunk)
        except openai.OpenAIError as error:
            self.error = describe_error(error, model=self.model)
        finally:
            self.ended = time.monotonic()
            self.changed.set()

    def _take(self, chunk: ChatCompletionChunk) -> None:
        if chunk.usage is not None:
            self.prompt_tokens = chunk.usage.prompt_tokens
            self.completion_tokens = chunk.usage.completion_tokens
            cost = (chunk.usage.model_extra or {}).get("cost")
            if isinstance(cost, int | float) and not isinstance(cost, bool):
                self.cost = float(cost)
        for choice in chunk.choices:
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
            delta = choice.delta
            reasoning = (delta.model_extra or {}).get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                self._token()
                self.reasoning += reasoning
            if delta.content:
                self._token()
                if self.reasoning and self.reasoning_ended is None:
                    self.reasoning_ended = time.monotonic()
                self.text += delta.content
            for call in delta.tool_calls or ():
                self._token()
                known = self.tool_calls.setdefault(call.index, ToolCall())
                known.id = call.id or known.id
                if call.function is not None:
                    known.name += call.function.name or ""
                    known.arguments += call.function.arguments or ""
        self.changed.set()

    def _token(self) -> None:
        if self.first_token is None:
            self.first_token = time.monotonic()
        self.chunks += 1

    @property
    def streaming(self) -> bool:
        return self.ended is None and not self.stopped

    @property
    def thinking(self) -> bool:
        """Reasoning is streaming and the answer has not started yet."""
        return bool(self.reasoning) and self.reasoning_ended is None and self.streaming

    def thought_seconds(self) -> float | None:
        if not self.reasoning or self.first_token is None:
            return None
        end = self.reasoning_ended or self.ended or time.monotonic()
        return max(0.0, end - self.first_token)

    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started

    def tokens_per_second(self) -> tuple[float, bool] | None:
        """Output speed once the reply has ended, and whether it is an estimate (no usage)."""
        if self.first_token is None or self.ended is None:
            return None
        generating = self.ended - self.first_token
        count = self.completion_tokens if self.completion_tokens is not None else self.chunks
        if generating <= 0 or count < 2:
            return None
        return count / generating, self.completion_tokens is None

    def outcome(self) -> str:
        """How the stream ended, in a few words (empty while it streams)."""
        if self.stopped:
            return "stopped"
        if self.error is not None:
            return f"error: {self.error}"
        if self.ended is None:
            return ""
        match self.finish_reason:
            case "stop":
                return "finished"
            case "length":
                return "cut at max tokens"
            case "tool_calls":
                return "tool calls"
            case "content_filter":
                return "cut by a content filter"
            case None:
                return "ended without a finish reason"
            case other:
                return f"finish: {other}"

    def stats(self) -> str:
        """``TTFT 12 ms · 85 tok/s · 12+40 tokens``: what is known so far."""
        ttft = self.ttft()
        if ttft is None:
            return "no tokens" if self.ended or self.stopped else "waiting for the first token"
        parts = [f"TTFT {duration(ttft)}"]
        speed = self.tokens_per_second()
        if speed is not None:
            parts.append(f"{'≈' if speed[1] else ''}{speed[0]:.0f} tok/s")
        if self.completion_tokens is not None and self.prompt_tokens is not None:
            parts.append(f"{self.prompt_tokens}+{self.completion_tokens} tokens")
        elif self.ended is not None:
            parts.append(f"{self.chunks} chunks, no usage reported")
        if self.cost is not None:
            parts.append(f"${self.cost:.6f}".rstrip("0").rstrip("."))
        return " · ".join(parts)

    def footer(self) -> str:
        """The stats, then how the stream ended: the line under a finished reply."""
        return " · ".join(p for p in (self.stats(), self.outcome()) if p)


def duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


async def follow(
    readers: Sequence[tuple[Progress, Awaitable[None]]], *, interval: float = UPDATE_INTERVAL
) -> AsyncIterator[None]:
    """Yield whenever the replies should be redrawn: at most once per ``interval`` while they
    stream, and once more when all have ended.

    Each reader runs in a task of its own, so text that arrives between two redraws shows within
    ``interval`` even when the next chunk is slow. Cancelling or closing this generator (Stop, a
    closed tab) cancels the tasks, which closes their HTTP streams to the gateway.
    """
    changed = asyncio.Event()
    for progress, _ in readers:
        progress.changed = changed
    tasks = [asyncio.ensure_future(reader) for _, reader in readers]
    loop = asyncio.get_running_loop()
    next_at = 0.0
    try:
        yield
        while not all(task.done() for task in tasks):
            waiter = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait({*tasks, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if (delay := next_at - loop.time()) > 0:
                await asyncio.sleep(delay)
            changed.clear()
            if all(task.done() for task in tasks):
                break
            yield
            next_at = loop.time() + interval
        for task in tasks:
            if (error := task.exception()) is not None:
                raise error
        yield
    finally:
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)
