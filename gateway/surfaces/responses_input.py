"""A Responses request's ``instructions`` and ``input`` items as chat messages.

``instructions`` -> a leading system message; ``system``/``developer``/``user`` messages as they
are (``input_text`` -> text, ``input_image`` -> ``image_url``, ``input_file`` -> ``file``; system
and developer messages hold text only); assistant ``output_text``/``refusal`` -> the assistant's
content/refusal. A run of assistant-side items (messages, reasoning, ``function_call`` and
``custom_tool_call``) becomes one assistant message with ``tool_calls``, as chat has it; an
``*_output`` item becomes a ``tool`` message, and images in an output follow the run of tool
messages as a user message (chat's tool messages hold text). Reasoning items the gateway made
are kept by message index, for :meth:`ResponsesRequest.body_for
<gateway.surfaces.responses_request.ResponsesRequest.body_for>`; any other is dropped.
``item_reference`` needs stored items: a 400.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from gateway.errors import InvalidRequest
from gateway.surfaces import responses_reasoning
from gateway.surfaces.responses_reasoning import Reasoning
from gateway.surfaces.responses_tools import CUSTOM_INPUT, flat_name
from gateway.validation import Limits

logger = logging.getLogger("gateway")

MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})


class InputItems:
    """Folds the input items into chat messages: a run of assistant-side items (messages,
    reasoning, tool calls) becomes one assistant message, as chat has it."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.out: list[dict[str, Any]] = []
        self.reasoning: dict[int, list[Reasoning]] = {}
        self.assistant: dict[str, Any] | None = None
        self.pending_reasoning: list[Reasoning] = []
        self.images: list[dict[str, Any]] = []  # from tool outputs, for after the tool run

    def convert(
        self, body: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[int, list[Reasoning]]]:
        instructions = body.get("instructions")
        if instructions is not None:
            if not isinstance(instructions, str):
                raise InvalidRequest("instructions must be a string", param="instructions")
            if instructions:
                self.out.append({"role": "system", "content": instructions})
        items = body.get("input")
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        if not isinstance(items, list) or not items:
            raise InvalidRequest("input must be a string or a non-empty array", param="input")
        if len(items) > self.limits.max_messages:
            raise InvalidRequest(
                f"too many input items: {len(items)} (the limit is {self.limits.max_messages})",
                param="input",
                code="too_many_messages",
            )
        for i, item in enumerate(items):
            self._item(item, f"input[{i}]")
        self._end_assistant()
        self._end_tools()
        if not any(m["role"] != "system" for m in self.out):
            raise InvalidRequest("input has no message to answer", param="input")
        return self.out, self.reasoning

    def _item(self, item: Any, where: str) -> None:
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be an object", param=where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in MESSAGE_ROLES:
                raise InvalidRequest(
                    f"{where}.role must be one of {sorted(MESSAGE_ROLES)}", param=f"{where}.role"
                )
            if role == "assistant":
                self._assistant_text(item.get("content"), where)
            else:
                self._end_assistant()
                self._end_tools()
                self.out.append(
                    {"role": role, "content": _content(item.get("content"), role, where)}
                )
        elif kind in ("function_call", "custom_tool_call"):
            self._tool_call(item, kind, where)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self._tool_output(item, where)
        elif kind == "reasoning":
            self._reasoning(item, where)
        elif kind == "item_reference":
            raise InvalidRequest(
                f"{where}: item_reference needs stored items; the gateway stores none",
                param=f"{where}.type",
                code="unsupported_parameter",
            )
        else:
            raise InvalidRequest(
                f"{where}.type {kind!r} is not supported: input items are messages, "
                "function_call, custom_tool_call, their outputs and reasoning",
                param=f"{where}.type",
            )

    def _turn(self) -> dict[str, Any]:
        self._end_tools()
        if self.assistant is None:
            self.assistant = {"role": "assistant", "content": None}
        return self.assistant

    def _assistant_text(self, content: Any, where: str) -> None:
        text, refusal = _assistant_content(content, where)
        if self.assistant is not None and self.assistant.get("tool_calls"):
            self._end_assistant()  # text after the calls: a turn of its own
        turn = self._turn()
        if text:
            turn["content"] = (turn["content"] or "") + text
        if refusal:
            turn["refusal"] = (turn.get("refusal") or "") + refusal

    def _tool_call(self, item: dict[str, Any], kind: str, where: str) -> None:
        call_id = _string(item, "call_id", where)
        name = _string(item, "name", where)
        namespace = item.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise InvalidRequest(f"{where}.namespace must be a string", param=f"{where}.namespace")
        if kind == "function_call":
            arguments = item.get("arguments")
            if not isinstance(arguments, str):
                raise InvalidRequest(
                    f"{where}.arguments must be a string", param=f"{where}.arguments"
                )
        else:
            value = item.get("input")
            if not isinstance(value, str):
                raise InvalidRequest(f"{where}.input must be a string", param=f"{where}.input")
            arguments = orjson.dumps({CUSTOM_INPUT: value}).decode()
        turn = self._turn()
        turn.setdefault("tool_calls", []).append(
            {
                "id": call_id,
                "type": "function",
                "function": {"name": flat_name(name, namespace), "arguments": arguments},
            }
        )

    def _tool_output(self, item: dict[str, Any], where: str) -> None:
        call_id = _string(item, "call_id", where)
        self._end_assistant()
        output = item.get("output")
        if isinstance(output, str):
            text = output
        elif isinstance(output, list):
            texts: list[str] = []
            for j, part in enumerate(output):
                pwhere = f"{where}.output[{j}]"
                converted = _user_part(part, pwhere)
                if converted["type"] == "text":
                    texts.append(converted["text"])
                else:
                    self.images.append(converted)
            text = "\n".join(texts)
        else:
            raise InvalidRequest(
                f"{where}.output must be a string or an array of content parts",
                param=f"{where}.output",
            )
        self.out.append({"role": "tool", "tool_call_id": call_id, "content": text})

    def _reasoning(self, item: dict[str, Any], where: str) -> None:
        token = item.get("encrypted_content")
        if token is not None and not isinstance(token, str):
            raise InvalidRequest(
                f"{where}.encrypted_content must be a string", param=f"{where}.encrypted_content"
            )
        reasoning = responses_reasoning.decode(token)
        if reasoning is None or reasoning.empty():
            if token:
                logger.info("responses: dropped a reasoning item the gateway did not make")
            return  # without a carrier of ours there is nothing any upstream could verify
        self._turn()
        self.pending_reasoning.append(reasoning)

    def _end_assistant(self) -> None:
        if self.assistant is None:
            return
        turn, self.assistant = self.assistant, None
        if turn["content"] is None and not turn.get("tool_calls"):
            if not self.pending_reasoning:
                return  # a turn of nothing
            turn["content"] = ""
        if self.pending_reasoning:
            self.reasoning[len(self.out)] = self.pending_reasoning
            self.pending_reasoning = []
        self.out.append(turn)

    def _end_tools(self) -> None:
        if self.images:
            images, self.images = self.images, []
            self.out.append({"role": "user", "content": images})


def _string(item: dict[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{where}.{name} must be a non-empty string", param=f"{where}.{name}")
    return value


def _assistant_content(content: Any, where: str) -> tuple[str, str]:
    """An assistant message's text and refusal."""
    if isinstance(content, str):
        return content, ""
    if not isinstance(content, list):
        raise InvalidRequest(
            f"{where}.content must be a string or an array of content parts",
            param=f"{where}.content",
        )
    text, refusal = [], []
    for j, part in enumerate(content):
        pwhere = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("output_text", "input_text") and isinstance(part.get("text"), str):
            text.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            refusal.append(part["refusal"])
        else:
            raise InvalidRequest(
                f"{pwhere} must be an output_text part with text or a refusal part",
                param=pwhere,
            )
    return "".join(text), "".join(refusal)


def _content(content: Any, role: str, where: str) -> Any:
    """A user/system/developer message's content as chat's."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise InvalidRequest(
            f"{where}.content must be a string or a non-empty array of content parts",
            param=f"{where}.content",
        )
    parts = [_user_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]
    if role != "user":
        for j, part in enumerate(parts):
            if part["type"] != "text":
                raise InvalidRequest(
                    f"{where}.content[{j}]: a {role} message holds text only",
                    param=f"{where}.content[{j}].type",
                )
        return "".join(part["text"] for part in parts)
    return parts


def _user_part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        assert isinstance(part, dict)
        if not isinstance(part.get("text"), str):
            raise InvalidRequest(f"{where}.text must be a string", param=f"{where}.text")
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        assert isinstance(part, dict)
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise InvalidRequest(
                f"{where}.image_url must be a URL or a data: URL (file_id needs stored files, "
                "which the gateway has none of)",
                param=f"{where}.image_url",
            )
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        assert isinstance(part, dict)
        data = part.get("file_data")
        if not isinstance(data, str) or not data:
            raise InvalidRequest(
                f"{where}.file_data is required: file_id and file_url need files the gateway "
                "neither stores nor fetches",
                param=f"{where}.file_data",
            )
        file: dict[str, Any] = {"file_data": data}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    raise InvalidRequest(
        f"{where}.type must be input_text, input_image or input_file", param=f"{where}.type"
    )
