"""Rendering chunks as SSE bytes, and aggregating them into a non-streamed completion."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from providers.base import Chunk

DONE = b"data: [DONE]\n\n"


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


class ChunkRenderer:
    """Pre-encodes what every chunk of one completion shares, so a chunk costs one dumps."""

    __slots__ = ("_prefix", "created", "id", "model")

    def __init__(self, *, model: str) -> None:
        self.id = completion_id()
        self.created = int(time.time())
        self.model = model
        head = orjson.dumps(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": model,
            }
        )
        self._prefix = b"data: " + head[:-1] + b',"choices":'

    def render(self, chunk: Chunk) -> bytes:
        body = orjson.dumps(chunk.choices)
        if chunk.system_fingerprint:
            body += b',"system_fingerprint":' + orjson.dumps(chunk.system_fingerprint)
        return self._prefix + body + b"}\n\n"

    def render_usage(self, usage: dict[str, Any]) -> bytes:
        return self._prefix + b'[],"usage":' + orjson.dumps(usage) + b"}\n\n"


def error_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class Aggregator:
    """Folds chunk deltas into whole messages, per choice index."""

    __slots__ = ("_choices", "system_fingerprint", "usage")

    def __init__(self) -> None:
        self._choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None
        self.system_fingerprint: str | None = None

    def add(self, chunk: Chunk) -> None:
        if chunk.usage:
            self.usage = chunk.usage
        if chunk.system_fingerprint:
            self.system_fingerprint = chunk.system_fingerprint
        for choice in chunk.choices:
            index = choice.get("index", 0)
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = {
                    "content": [],
                    "refusal": [],
                    "tool_calls": {},
                    "function_call": None,
                    "finish_reason": None,
                    "logprobs": None,
                    "extra": {},
                }
            delta = choice.get("delta") or {}
            for key, value in delta.items():
                if value is None or key == "role":
                    continue
                if key == "content":
                    state["content"].append(value)
                elif key == "refusal":
                    state["refusal"].append(value)
                elif key == "tool_calls":
                    _merge_tool_calls(state["tool_calls"], value)
                elif key == "function_call":
                    state["function_call"] = _merge_function(state["function_call"], value)
                else:
                    state["extra"][key] = value  # e.g. reasoning_content, audio, annotations
            if choice.get("finish_reason"):
                state["finish_reason"] = choice["finish_reason"]
            logprobs = choice.get("logprobs")
            if logprobs:
                merged = state["logprobs"] or {"content": None, "refusal": None}
                for part in ("content", "refusal"):
                    if logprobs.get(part):
                        merged[part] = (merged[part] or []) + logprobs[part]
                state["logprobs"] = merged

    def completion(self, *, renderer: ChunkRenderer) -> dict[str, Any]:
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(state["content"]) if state["content"] else None,
                "refusal": "".join(state["refusal"]) if state["refusal"] else None,
            }
            if state["tool_calls"]:
                message["tool_calls"] = [
                    state["tool_calls"][i] for i in sorted(state["tool_calls"])
                ]
            if state["function_call"]:
                message["function_call"] = state["function_call"]
            if (
                message["content"] is None
                and not state["tool_calls"]
                and not state["function_call"]
            ):
                message["content"] = ""
            for key, value in state["extra"].items():
                message.setdefault(key, value)
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "finish_reason": state["finish_reason"] or "stop",
                    "logprobs": state["logprobs"],
                }
            )
        result: dict[str, Any] = {
            "id": renderer.id,
            "object": "chat.completion",
            "created": renderer.created,
            "model": renderer.model,
            "choices": choices,
        }
        if self.system_fingerprint:
            result["system_fingerprint"] = self.system_fingerprint
        if self.usage:
            result["usage"] = self.usage
        return result


def _merge_tool_calls(calls: dict[int, dict[str, Any]], deltas: Any) -> None:
    if not isinstance(deltas, list):
        return
    for delta in deltas:
        if not isinstance(delta, dict):
            continue
        index = delta.get("index", len(calls))
        call = calls.setdefault(
            index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if delta.get("id"):
            call["id"] = delta["id"]
        if delta.get("type"):
            call["type"] = delta["type"]
        function = delta.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]


def _merge_function(current: dict[str, str] | None, delta: Any) -> dict[str, str]:
    merged = current or {"name": "", "arguments": ""}
    if isinstance(delta, dict):
        merged["name"] += delta.get("name") or ""
        merged["arguments"] += delta.get("arguments") or ""
    return merged
