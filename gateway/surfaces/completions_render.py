"""Upstream ``text_completion`` objects in the gateway's words: SSE chunks, or one answer.

Every object gets the gateway's id, ``created`` and ``model`` (the model id that answered);
choices pass through as the provider checked them. Streamed or whole, the legacy API's
objects share one shape, so the aggregate is the chunks' choices joined per index.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.ids import random_hex
from gateway.surfaces.chat_render import render_usage
from providers.base import Usage


class CompletionRenderer:
    """Pre-encodes what every chunk of one answer shares, so a chunk costs one dumps."""

    __slots__ = ("_prefix", "created", "id", "model")

    def __init__(self, *, model: str) -> None:
        self.id = "cmpl-" + random_hex()
        self.created = int(time.time())
        self.model = model
        head = orjson.dumps(
            {"id": self.id, "object": "text_completion", "created": self.created, "model": model}
        )
        self._prefix = b"data: " + head[:-1] + b',"choices":'

    def render(self, data: dict[str, Any]) -> bytes:
        """The SSE event for an upstream object's choices; ``b""`` when it has none."""
        choices = data["choices"]
        if not choices:
            return b""
        body = orjson.dumps(choices)
        fingerprint = data.get("system_fingerprint")
        if type(fingerprint) is str:
            body += b',"system_fingerprint":' + orjson.dumps(fingerprint)
        return self._prefix + body + b"}\n\n"

    def render_usage(self, usage: Usage) -> bytes:
        """The last chunk for ``stream_options.include_usage``: no choices, the usage."""
        return self._prefix + b'[],"usage":' + orjson.dumps(render_usage(usage)) + b"}\n\n"


_LOGPROB_LISTS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


class CompletionAggregator:
    """Joins the choices of an answer's objects: text appended, the last finish reason."""

    __slots__ = ("_choices", "_texts", "system_fingerprint")

    def __init__(self) -> None:
        self._choices: dict[int, dict[str, Any]] = {}
        self._texts: dict[int, list[str]] = {}
        self.system_fingerprint: str | None = None

    def add(self, data: dict[str, Any]) -> None:
        fingerprint = data.get("system_fingerprint")
        if type(fingerprint) is str:
            self.system_fingerprint = fingerprint
        for choice in data["choices"]:
            index = choice["index"]
            state = self._choices.get(index)
            if state is None:
                self._choices[index] = {**choice, "logprobs": _copy_logprobs(choice["logprobs"])}
                self._texts[index] = [choice["text"]]
                continue
            self._texts[index].append(choice["text"])
            for key, value in choice.items():
                if key == "logprobs":
                    state["logprobs"] = _join_logprobs(state["logprobs"], value)
                elif key != "text" and value is not None:
                    state[key] = value

    def completion(self, *, renderer: CompletionRenderer, usage: Usage | None) -> dict[str, Any]:
        choices = []
        for index in sorted(self._choices):
            choice = self._choices[index]
            choice["text"] = "".join(self._texts[index])
            choice["finish_reason"] = choice["finish_reason"] or "stop"
            choices.append(choice)
        result: dict[str, Any] = {
            "id": renderer.id,
            "object": "text_completion",
            "created": renderer.created,
            "model": renderer.model,
            "choices": choices,
        }
        if self.system_fingerprint:
            result["system_fingerprint"] = self.system_fingerprint
        if usage is not None:
            result["usage"] = render_usage(usage)
        return result


def _copy_logprobs(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {k: list(v) if isinstance(v, list) else v for k, v in value.items()}


def _join_logprobs(
    current: dict[str, Any] | None, more: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Streamed logprobs come per chunk: their lists concatenate."""
    if more is None:
        return current
    if current is None:
        return _copy_logprobs(more)
    for key in _LOGPROB_LISTS:
        if isinstance(more.get(key), list):
            current[key] = [*(current.get(key) or []), *more[key]]
    return current
