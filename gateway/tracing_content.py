"""Prompts and completions on a request's server span: only with ``GATEWAY_TRACE_CONTENT=true``.

Content is personal data and often large, so it is opt-in (as the GenAI conventions say) and
bounded: the first :data:`LIMIT` bytes of the request body and of the answer are kept, and
turned into ``gen_ai.input.messages`` and ``gen_ai.output.messages`` (JSON text, the
conventions' shape: role and text parts) once the request is over. Never on by default, so the
per-chunk copy below costs nothing unless asked for.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import Message, Receive, Send

LIMIT = 256 * 1024


class Capture:
    """The request body and answer of one request, as far as :data:`LIMIT` allows."""

    __slots__ = ("answer", "request", "sse")

    def __init__(self) -> None:
        self.request = bytearray()
        self.answer = bytearray()
        self.sse = False

    def wrap(self, receive: Receive, send: Send) -> tuple[Receive, Send]:
        async def receive_copy() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(self.request) < LIMIT:
                self.request += message.get("body", b"")[: LIMIT - len(self.request)]
            return message

        async def send_copy(message: Message) -> None:
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", ()):
                    if name == b"content-type":
                        self.sse = value.startswith(b"text/event-stream")
            elif message["type"] == "http.response.body" and len(self.answer) < LIMIT:
                self.answer += message.get("body", b"")[: LIMIT - len(self.answer)]
            await send(message)

        return receive_copy, send_copy

    def attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        body = _json(bytes(self.request))
        if isinstance(body, dict):
            messages = _input_messages(body)
            if messages:
                attributes["gen_ai.input.messages"] = orjson.dumps(messages).decode()
            system = body.get("system")
            if isinstance(system, str):
                attributes["gen_ai.system_instructions"] = orjson.dumps(
                    [{"type": "text", "content": system}]
                ).decode()
        texts = self._sse_texts() if self.sse else _answer_texts(_json(bytes(self.answer)))
        if texts:
            output = [
                {"role": "assistant", "parts": [{"type": "text", "content": t}]} for t in texts
            ]
            attributes["gen_ai.output.messages"] = orjson.dumps(output).decode()
        return attributes

    def _sse_texts(self) -> list[str]:
        texts: dict[int, list[str]] = {}
        for line in bytes(self.answer).split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            event = _json(line[5:].strip())
            if not isinstance(event, dict):
                continue
            for choice in event.get("choices") or ():
                text = _choice_text(choice, "delta")
                if text is not None:
                    texts.setdefault(int(choice.get("index") or 0), []).append(text)
            delta = event.get("delta")  # Anthropic's content_block_delta
            if isinstance(delta, dict) and isinstance(delta.get("text"), str):
                texts.setdefault(0, []).append(delta["text"])
        return ["".join(parts) for _, parts in sorted(texts.items())]


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def _input_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if isinstance(messages, list):
        return [
            {"role": m.get("role"), "parts": _parts(m.get("content"))}
            for m in messages
            if isinstance(m, dict)
        ]
    prompt = body.get("prompt", body.get("input"))
    if isinstance(prompt, str):
        return [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
    if isinstance(prompt, list):
        return [{"role": "user", "parts": _parts(prompt)}]
    return []


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if isinstance(part, str):
            parts.append({"type": "text", "content": part})
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append({"type": "text", "content": part["text"]})
    return parts


def _answer_texts(answer: Any) -> list[str]:
    if not isinstance(answer, dict):
        return []
    texts: list[str] = []
    for choice in answer.get("choices") or ():
        text = _choice_text(choice, "message")
        if text is not None:
            texts.append(text)
    for block in answer.get("content") or ():  # Anthropic's message
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            texts.append(block["text"])
    return texts


def _choice_text(choice: Any, key: str) -> str | None:
    """A choice's text: its ``message`` or ``delta`` (``key``) content, or a completion's."""
    if not isinstance(choice, dict):
        return None
    inner = choice.get(key)
    text = inner.get("content") if isinstance(inner, dict) else choice.get("text")
    return text if isinstance(text, str) else None
