"""OpenAI chat messages as Anthropic's system blocks and turns (PROVIDERS.md §3.2); no I/O.

Every system or developer message goes to the top-level ``system``, wherever it stands: the one
place every Anthropic model reads it. Consecutive messages of one role become one turn (tool
messages above all: one user turn of ``tool_result`` blocks, higress#3517), since Anthropic's
turns alternate; tool results open their turn, before any text. Images: base64 ``data:`` URLs
(jpeg, png, gif, webp) and ``https`` URLs, which Anthropic fetches (the gateway never does);
files: PDF ``data:`` URLs. Tool-call arguments must be a JSON object (never sent as a string).

Replayed reasoning: an assistant message's ``thinking_blocks`` (LiteLLM's field: the blocks as
Anthropic sent them) or else its ``reasoning_content`` with ``reasoning_signature`` (and
``redacted_reasoning``) become the turn's first blocks, as Anthropic requires when thinking
meets tool use. Unsigned reasoning is dropped: Anthropic refuses thinking without a signature.
"""

from __future__ import annotations

from typing import Any

import orjson

from providers.errors import UnsupportedRequest

__all__ = ["IMAGE_TYPES", "conversation"]

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def conversation(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(``system`` text blocks, ``messages`` turns) for OpenAI chat ``messages``."""
    if not isinstance(messages, list) or not messages:
        raise UnsupportedRequest("messages must be a non-empty array", code="invalid_value")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise UnsupportedRequest(f"{where} must be an object", code="invalid_value")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_only(message.get("content"), where))
        elif role == "user":
            _append(turns, "user", _parts(message.get("content"), where))
        elif role == "assistant":
            _append(turns, "assistant", _assistant(message, where))
        elif role == "tool":
            _append(turns, "user", [_tool_result(message, where)])
        else:
            raise UnsupportedRequest(f"{where}: role {role!r} is not supported by Anthropic models")
    for turn in turns:  # tool results must open their user turn, before any text
        if turn["role"] == "user":
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return system, turns


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Consecutive messages of one role become one turn (consecutive tool results above all:
    higress#3517), since Anthropic's turns alternate."""
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _text(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}] if text else []  # Anthropic refuses empty text


def _text_only(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return _text(content)
    blocks = _parts(content, where)
    if any(block["type"] != "text" for block in blocks):
        raise UnsupportedRequest(f"{where}: a system message may hold text only")
    return blocks


def _parts(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return _text(content)
    if not isinstance(content, list):
        raise UnsupportedRequest(
            f"{where}.content must be a string or a list", code="invalid_value"
        )
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        pwhere = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal") and isinstance(part.get(kind), str):
            blocks.extend(_text(part[kind]))
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), pwhere))
        elif kind == "file":
            blocks.append(_document(part.get("file"), pwhere))
        else:
            raise UnsupportedRequest(
                f"{pwhere}: content of type {kind!r} is not supported by Anthropic models"
            )
    return blocks


def _data_url(url: str, where: str) -> tuple[str, str]:
    """(media type, base64 data) of a ``data:<type>;base64,<data>`` URL."""
    head, comma, data = url[5:].partition(",")
    params = head.split(";")
    if not comma or "base64" not in params[1:] or not data:
        raise UnsupportedRequest(
            f"{where}: a data: URL must be base64 encoded", code="invalid_value"
        )
    return params[0].lower(), data


def _image(value: Any, where: str) -> dict[str, Any]:
    url = value.get("url") if isinstance(value, dict) else value
    if isinstance(url, str) and url.startswith("data:"):
        media, data = _data_url(url, where)
        if media not in IMAGE_TYPES:
            raise UnsupportedRequest(
                f"{where}: Anthropic models take jpeg, png, gif or webp images, not {media!r}",
                code="unsupported_value",
            )
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    if isinstance(url, str) and url.startswith("https://"):
        # Anthropic fetches it; the gateway never does (that would be an SSRF vector).
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise UnsupportedRequest(
        f"{where}: an image must be a base64 data: URL or an https:// URL", code="invalid_value"
    )


def _document(value: Any, where: str) -> dict[str, Any]:
    data = value.get("file_data") if isinstance(value, dict) else None
    if isinstance(data, str) and data.startswith("data:"):
        media, encoded = _data_url(data, where)
        if media == "application/pdf":
            source = {"type": "base64", "media_type": media, "data": encoded}
            return {"type": "document", "source": source}
    raise UnsupportedRequest(
        f"{where}: Anthropic models take files as PDF data: URLs in file.file_data only",
        code="unsupported_value",
    )


def _assistant(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks = _replayed_thinking(message, where)
    content = message.get("content")
    if content is not None:
        blocks.extend(_parts(content, where))
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise UnsupportedRequest(f"{where}.tool_calls must be a list", code="invalid_value")
    blocks.extend(_tool_use(call, f"{where}.tool_calls[{k}]") for k, call in enumerate(calls))
    if message.get("function_call") is not None:
        raise UnsupportedRequest(f"{where}.function_call is not supported; use tool_calls")
    return blocks


def _replayed_thinking(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    replay = message.get("thinking_blocks")
    if isinstance(replay, list):
        out: list[dict[str, Any]] = []
        for k, block in enumerate(replay):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "thinking" and _strings(block, "thinking", "signature"):
                out.append({"type": "thinking", **{f: block[f] for f in ("thinking", "signature")}})
            elif kind == "redacted_thinking" and _strings(block, "data"):
                out.append({"type": "redacted_thinking", "data": block["data"]})
            else:
                raise UnsupportedRequest(
                    f"{where}.thinking_blocks[{k}] must be a signed thinking block or a "
                    "redacted_thinking block",
                    code="invalid_value",
                )
        return out
    out = []
    signature = message.get("reasoning_signature")
    if isinstance(signature, str) and signature:
        reasoning = message.get("reasoning_content")
        thinking = reasoning if isinstance(reasoning, str) else ""
        out.append({"type": "thinking", "thinking": thinking, "signature": signature})
    redacted = message.get("redacted_reasoning")
    if isinstance(redacted, str) and redacted:
        out.append({"type": "redacted_thinking", "data": redacted})
    return out


def _strings(block: dict[str, Any], *names: str) -> bool:
    return all(isinstance(block.get(name), str) for name in names)


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or call.get("type", "function") != "function":
        raise UnsupportedRequest(f"{where} must be a function call", code="invalid_value")
    call_id, name = call.get("id"), function.get("name")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise UnsupportedRequest(f"{where} needs an id and a function name", code="invalid_value")
    arguments = function.get("arguments")
    value: Any = {}
    if arguments:  # "" or none: a call without arguments
        try:
            value = orjson.loads(arguments) if isinstance(arguments, str) else None
        except orjson.JSONDecodeError:
            value = None
    if not isinstance(value, dict):
        # Never sent as a string: Anthropic's input is an object (PROVIDERS.md §3.2).
        raise UnsupportedRequest(
            f"{where}.function.arguments must be a JSON object in a string", code="invalid_value"
        )
    return {"type": "tool_use", "id": call_id, "name": name, "input": value}


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise UnsupportedRequest(f"{where}.tool_call_id is required", code="invalid_value")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if message.get("is_error") is True:  # the Messages surface's mark of a failed tool
        result["is_error"] = True
    content = message.get("content")
    if isinstance(content, str):
        if content:
            result["content"] = content
    elif content is not None:
        result["content"] = _parts(content, where)
    return result
