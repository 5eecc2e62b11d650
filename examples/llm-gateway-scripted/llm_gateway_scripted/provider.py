"""The scripted provider: answers each request with the first turn of its script that matches
the conversation's last message, through the gateway's normalized stream."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from providers.base import ChatRequest, Chunk, Delta, ToolCallDelta, Usage
from providers.errors import status_error
from providers.spec import ProviderContext
from pydantic import BaseModel, ConfigDict, PlainValidator

from llm_gateway_scripted.script import Script, Turn, load_script

# A piece is a word with the whitespace around it; their concatenation is the whole text.
_PIECE = re.compile(r"\s*\S+\s*")


class Options(BaseModel):
    """``GATEWAY_PROVIDERS__<NAME>__SCRIPT``: the path of the script, read at start."""

    model_config = ConfigDict(extra="forbid")

    script: Annotated[Script, PlainValidator(load_script)]


class ScriptedProvider:
    """Streams reasoning, then content, then tool calls, then the finish and usage."""

    def __init__(self, context: ProviderContext, options: Options) -> None:
        self.name = context.name
        self.models = context.models
        self._script = options.script

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        messages: list[dict[str, Any]] = request.body.get("messages") or []
        turn = self._script.answer(text_of(messages[-1]) if messages else "")
        if turn is None:
            raise status_error(
                400, provider=self.name, detail="no turn of the script matches the last message"
            )
        delay = turn.delay_ms / 1000.0
        steps = _steps(turn, first_call=sum(len(m.get("tool_calls") or ()) for m in messages))
        for n, delta in enumerate(steps):
            if delay and n:
                await asyncio.sleep(delay)
            yield Chunk(deltas=[delta])
        if delay and steps:
            await asyncio.sleep(delay)
        if turn.error is not None:
            raise status_error(turn.error, provider=self.name, detail="scripted error")
        finish = "tool_calls" if turn.tool_calls else "stop"
        yield Chunk(deltas=[Delta(finish_reason=finish, stop_reason=finish)])
        output = sum(_words(d.text or d.reasoning or "") for d in steps) + sum(
            _words(c.arguments) for d in steps for c in d.tool_calls or ()
        )
        yield Chunk(
            deltas=[],
            usage=Usage(
                input_tokens=sum(_words(text_of(m)) for m in messages),
                output_tokens=output,
                reasoning_tokens=_words(turn.reasoning or ""),
                source="estimated",
            ),
        )

    async def aclose(self) -> None:
        return None


def text_of(message: dict[str, Any]) -> str:
    """A message's text: its content as a string, or its text parts joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _steps(turn: Turn, *, first_call: int) -> list[Delta]:
    """The turn's deltas before its finish. Tool call ids go on from the calls already in the
    conversation (``call_0``, ``call_1``, ...), so that they stay unique across a dialogue."""
    steps = [Delta(reasoning=piece) for piece in _pieces(turn.reasoning)]
    steps += [Delta(text=piece) for piece in _pieces(turn.content)]
    for index, call in enumerate(turn.tool_calls or ()):
        start = ToolCallDelta(index=index, id=f"call_{first_call + index}", name=call.name)
        steps.append(Delta(tool_calls=[start]))
        for piece in _pieces(json.dumps(call.arguments)):
            steps.append(Delta(tool_calls=[ToolCallDelta(index=index, arguments=piece)]))
    return steps


def _pieces(text: str | None) -> list[str]:
    if not text:
        return []
    return _PIECE.findall(text) or [text]


def _words(text: str) -> int:
    return len(text.split())
