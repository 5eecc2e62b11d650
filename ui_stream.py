"""What the playground knows about one streamed reply, and how it shows it.

``Progress.read`` consumes a chat completion stream from the gateway; ``Progress.render`` turns
what was read into chat messages: the text, then a line that tells how the stream went
(``echo/echo · TTFT 12 ms · 85 tok/s · 12+40 tokens``) with a mark when it failed or was
stopped. ``describe_error`` is the one place where SDK errors become words for the visitor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import openai
from gradio.components.chatbot import MetadataDict
from openai.types.chat import ChatCompletionMessageParam

ERROR_MARK = "⚠ error"


@dataclass
class Progress:
    """One reply so far. Times are ``time.monotonic()`` seconds."""

    model: str
    started: float = field(default_factory=time.monotonic)
    text: str = ""
    first_token: float | None = None
    ended: float | None = None
    chunks: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(
        self,
        client: openai.AsyncOpenAI,
        *,
        messages: list[ChatCompletionMessageParam],
        temperature: float | None,
        max_tokens: int | None,
    ) -> None:
        """Stream the reply from the gateway into ``self``, setting ``changed`` on new text."""
        self.started = time.monotonic()
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
                if chunk.usage is not None:
                    self.prompt_tokens = chunk.usage.prompt_tokens
                    self.completion_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    if choice.finish_reason:
                        self.finish_reason = choice.finish_reason
                    if choice.delta.content:
                        if self.first_token is None:
                            self.first_token = time.monotonic()
                        self.text += choice.delta.content
                        self.chunks += 1
                        self.changed.set()
        self.ended = time.monotonic()

    def stats(self) -> str:
        """``TTFT 12 ms · 85 tok/s · 12+40 tokens``: what is known so far."""
        if self.first_token is None:
            return "no tokens" if self.ended else "waiting for the first token"
        parts = [f"TTFT {_duration(self.first_token - self.started)}"]
        tokens = self.completion_tokens
        if self.ended is not None:
            generating = self.ended - self.first_token
            # Without usage in the stream, each content chunk counts as a token.
            count = tokens if tokens is not None else self.chunks
            approx = "" if tokens is not None else "≈"
            if generating > 0 and count > 1:
                parts.append(f"{approx}{count / generating:.0f} tok/s")
        if self.finish_reason == "length":
            parts.append("cut at max tokens")
        if tokens is not None and self.prompt_tokens is not None:
            parts.append(f"{self.prompt_tokens}+{tokens} tokens")
        elif self.ended is not None:
            parts.append(f"{self.chunks} chunks, no usage reported")
        return " · ".join(parts)

    def render(self, *, error: str | None = None) -> list[gr.ChatMessage]:
        """The reply as chat messages: its text, then how its stream went.

        While streaming, the second message is ``pending`` (Gradio shows a spinner); the Stop
        button's handler looks for that status to mark the reply as stopped.
        """
        metadata: MetadataDict = {"title": self.model, "log": self.stats()}
        if error is not None:
            metadata["title"] = f"{ERROR_MARK}: {error}"
            started = self.first_token is not None
            metadata["log"] = f"{self.model} · {self.stats()}" if started else self.model
        elif self.ended is None:
            metadata["status"] = "pending"
        else:
            metadata["status"] = "done"
        footer = gr.ChatMessage(content=self._details(error), metadata=metadata)
        return [gr.ChatMessage(content=self.text), footer] if self.text else [footer]

    def _details(self, error: str | None) -> str:
        if error is not None:
            return error
        if self.ended is None:
            return ""
        total = _duration(self.ended - self.started)
        return f"finish reason: {self.finish_reason or 'none'} · {self.chunks} chunks · {total}"


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def describe_error(error: openai.OpenAIError, *, model: str) -> str:
    """Words for the visitor about a failed call to the gateway."""
    match error:
        case openai.AuthenticationError():
            return "the gateway refused the key — enter a valid API key"
        case openai.PermissionDeniedError():
            return f"this API key may not use {model!r}"
        case openai.NotFoundError():
            return f"unknown model {model!r} — pick one from the list (↻ refreshes it)"
        case openai.RateLimitError():
            return "too many requests — try again in a moment"
        case openai.APITimeoutError():
            return "the gateway did not answer in time"
        case openai.APIConnectionError():
            return "cannot reach the gateway"
        case openai.APIStatusError():
            return f"the gateway answered {error.status_code}: {_body_message(error)}"
        case openai.APIError():
            # A `data: {"error": …}` frame: the stream failed after it had started.
            return f"the stream failed: {_body_message(error)}"
        case _:
            return str(error)


def _body_message(error: openai.APIError) -> str:
    body = error.body
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])
    return error.message


def to_openai_messages(
    message: str,
    history: Sequence[Mapping[str, Any]],
    *,
    system_prompt: str = "",
) -> list[ChatCompletionMessageParam]:
    """The conversation in OpenAI's shape, from Gradio's history and the new message.

    History comes in two shapes: content as a plain string (gradio_client calls) or as a list of
    ``{"type": "text", "text": …}`` blocks (the browser). Messages with a title in their metadata
    (the stream lines this UI adds) are not part of the conversation, nor are files.
    """
    messages: list[ChatCompletionMessageParam] = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt})
    for item in history:
        metadata = item.get("metadata") or {}
        role = item.get("role")
        if metadata.get("title") or role not in ("user", "assistant"):
            continue
        text = _text(item.get("content"))
        if text and role == "user":
            messages.append({"role": "user", "content": text})
        elif text:
            messages.append({"role": "assistant", "content": text})
    messages.append({"role": "user", "content": message})
    return messages


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        text = content.get("text") if content.get("type", "text") == "text" else None
        return text if isinstance(text, str) else ""
    if isinstance(content, Sequence):
        return "".join(_text(part) for part in content)
    return ""
