"""An Anthropic Messages conversation as OpenAI chat messages (see :mod:`messages_request`).

``system`` and ``role: "system"`` messages as system messages where they stand; user blocks as
content parts (text, images as ``image_url``, base64 PDFs as ``file``, text documents as text),
several of them kept apart; ``tool_result`` blocks first, as ``tool`` messages, their images
following as a user message (OpenAI's tool messages hold text only; a block of any other kind is
read as text, since a tool's result is data for the model); an assistant turn's text and
``tool_use`` as content and ``tool_calls``. What only some providers may get back (thinking,
Gemini's signatures in tool ids) is kept apart in a :class:`Replay`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.errors import InvalidRequest
from gateway.surfaces.messages_ids import split_tool_id

__all__ = [
    "IMAGE_MEDIA",
    "TOOL_ERROR",
    "Replay",
    "Thinking",
    "add_message",
    "string_field",
    "system_text",
]
# A tool message's mark that its result is an error (a tool_result's ``is_error``): the
# anthropic and gemini providers read it; it is taken off before any other upstream.
TOOL_ERROR = "is_error"

IMAGE_MEDIA = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# Server tools' blocks in a replayed assistant turn: the gateway's upstreams cannot take them.
_SERVER_BLOCKS = ("server_tool_use", "mcp_tool_use", "mcp_tool_result", "container_upload")


@dataclass(slots=True)
class Thinking:
    """A replayed thinking block (``redacted``: a redacted_thinking block, its data in
    ``signature``)."""

    text: str
    signature: str  # as the client sent it back, the gateway's tag included
    redacted: bool = False


@dataclass(slots=True)
class Replay:
    """What one assistant message carried that only some providers may get back."""

    position: int  # in MessagesRequest.messages
    thinking: list[Thinking] = field(default_factory=list)
    call_signatures: dict[int, str] = field(default_factory=dict)  # tool call -> Gemini's


def _block_type(block: Any, where: str) -> str:
    kind = block.get("type") if isinstance(block, dict) else None
    if not isinstance(kind, str):
        raise InvalidRequest(f"{where}: a content block must be an object with a type", param=where)
    return kind


def string_field(block: dict[str, Any], name: str, where: str) -> str:
    value = block.get(name)
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}.{name}: a string is required", param=f"{where}.{name}")
    return value


def system_text(value: Any) -> str:
    """``system`` as one text: a string, or text blocks joined by blank lines."""
    if value is None or isinstance(value, str):
        return value or ""
    if not isinstance(value, list):
        raise InvalidRequest("system: a string or an array of text blocks", param="system")
    return _texts(value, "system")


def _texts(blocks: list[Any], where: str) -> str:
    texts = []
    for j, block in enumerate(blocks):
        bwhere = f"{where}.{j}"
        if _block_type(block, bwhere) != "text":
            raise InvalidRequest(f"{bwhere}: only text blocks are allowed here", param=bwhere)
        texts.append(string_field(block, "text", bwhere))
    return "\n\n".join(t for t in texts if t)


def add_message(message: Any, where: str, out: list[dict[str, Any]], replays: list[Replay]) -> None:
    if not isinstance(message, dict):
        raise InvalidRequest(f"{where}: a message must be an object", param=where)
    role, content = message.get("role"), message.get("content")
    if isinstance(content, str):
        blocks: list[Any] = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        blocks = content
    else:
        raise InvalidRequest(
            f"{where}.content: a string or an array of content blocks", param=f"{where}.content"
        )
    if role == "user":
        _user(blocks, f"{where}.content", out)
    elif role == "assistant":
        _assistant(blocks, f"{where}.content", out, replays)
    elif role == "system":  # Claude Code sends one mid-conversation: it stays where it is
        text = _texts(blocks, f"{where}.content")
        if text:
            out.append({"role": "system", "content": text})
    else:
        raise InvalidRequest(
            f"{where}.role: must be 'user', 'assistant' or 'system'", param=f"{where}.role"
        )


def _user(blocks: list[Any], where: str, out: list[dict[str, Any]]) -> None:
    """Tool results first (OpenAI wants them right after the assistant's calls), then the
    rest of the turn as one user message."""
    parts: list[dict[str, Any]] = []
    after_tools: list[dict[str, Any]] = []  # images of tool results
    for j, block in enumerate(blocks):
        bwhere = f"{where}.{j}"
        kind = _block_type(block, bwhere)
        if kind == "tool_result":
            out.append(_tool_result(block, bwhere, after_tools))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # only an assistant's own turn may carry them
        else:
            part = _part(block, kind, bwhere)
            if part is not None:
                parts.append(part)
    parts = after_tools + parts
    if len(parts) == 1 and parts[0]["type"] == "text":
        out.append({"role": "user", "content": parts[0]["text"]})
    elif parts:  # several blocks stay apart (Claude Code sends its reminders as blocks)
        out.append({"role": "user", "content": parts})


def _part(block: dict[str, Any], kind: str, where: str) -> dict[str, Any] | None:
    """A user content block as an OpenAI content part (None: nothing to send)."""
    if kind == "text":
        text = string_field(block, "text", where)
        return {"type": "text", "text": text} if text else None
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _image_url(block, where)}}
    if kind == "document":
        return _document(block, where)
    raise InvalidRequest(
        f"{where}: content blocks of type {kind[:50]!r} are not supported by the gateway",
        param=where,
    )


def _source(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise InvalidRequest(f"{where}.source: an object is required", param=f"{where}.source")
    return source


def _image_url(block: dict[str, Any], where: str) -> str:
    source = _source(block, where)
    swhere = f"{where}.source"
    if source.get("type") == "base64":
        media = string_field(source, "media_type", swhere)
        if media not in IMAGE_MEDIA:
            raise InvalidRequest(
                f"{swhere}.media_type: images must be image/jpeg, image/png, image/gif or "
                "image/webp",
                param=f"{swhere}.media_type",
            )
        return f"data:{media};base64,{string_field(source, 'data', swhere)}"
    if source.get("type") == "url":
        url = string_field(source, "url", swhere)
        if not url.startswith("https://"):
            raise InvalidRequest(f"{swhere}.url: an https:// URL is required", param=swhere)
        return url  # fetched by the upstream, if at all: never by the gateway
    raise InvalidRequest(f"{swhere}.type: must be 'base64' or 'url'", param=f"{swhere}.type")


def _document(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = _source(block, where)
    swhere = f"{where}.source"
    if source.get("type") == "text":
        return {"type": "text", "text": string_field(source, "data", swhere)}
    if source.get("type") == "base64" and source.get("media_type") == "application/pdf":
        data = string_field(source, "data", swhere)
        return {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{data}"}}
    raise InvalidRequest(
        f"{swhere}: documents must be base64 PDFs or plain text", param=f"{swhere}.type"
    )


def _tool_result(block: dict[str, Any], where: str, images: list[dict[str, Any]]) -> dict[str, Any]:
    call_id, _ = split_tool_id(string_field(block, "tool_use_id", where))
    content = block.get("content")
    if content is None or isinstance(content, str):
        text = content or ""
    elif isinstance(content, list):
        texts = []
        for j, item in enumerate(content):
            iwhere = f"{where}.content.{j}"
            kind = _block_type(item, iwhere)
            if kind == "image":
                images.append({"type": "image_url", "image_url": {"url": _image_url(item, iwhere)}})
            elif kind == "text":
                texts.append(string_field(item, "text", iwhere))
            elif kind == "document":
                images.append(_document(item, iwhere))
            else:  # a tool's result is data for the model: what it cannot read, it reads as JSON
                texts.append(_result_text(item, kind))
        text = "\n".join(texts)
    else:
        raise InvalidRequest(
            f"{where}.content: a string or an array of blocks", param=f"{where}.content"
        )
    message: dict[str, Any] = {"role": "tool", "tool_call_id": call_id, "content": text}
    is_error = block.get("is_error", False)
    if not isinstance(is_error, bool):
        raise InvalidRequest(f"{where}.is_error: must be a boolean", param=f"{where}.is_error")
    if is_error:  # kept for the providers that can say so (MessagesRequest.body_for)
        message[TOOL_ERROR] = True
    return message


def _result_text(block: dict[str, Any], kind: str) -> str:
    """A tool result's block of another kind as text: ``tool_reference`` (Claude Code's tool
    search names the tools it found; every tool is declared to the upstream anyway), or the
    block's JSON."""
    if kind == "tool_reference" and isinstance(block.get("tool_name"), str):
        return f"Tool available: {block['tool_name']}"
    if isinstance(block.get("text"), str):
        return str(block["text"])
    return orjson.dumps(block).decode()


def _assistant(
    blocks: list[Any], where: str, out: list[dict[str, Any]], replays: list[Replay]
) -> None:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    replay = Replay(position=len(out))
    for j, block in enumerate(blocks):
        bwhere = f"{where}.{j}"
        kind = _block_type(block, bwhere)
        if kind == "text":
            texts.append(string_field(block, "text", bwhere))
        elif kind == "thinking":
            signature = block.get("signature") or ""
            if not isinstance(signature, str):
                raise InvalidRequest(f"{bwhere}.signature: a string", param=f"{bwhere}.signature")
            replay.thinking.append(Thinking(string_field(block, "thinking", bwhere), signature))
        elif kind == "redacted_thinking":
            replay.thinking.append(Thinking("", string_field(block, "data", bwhere), redacted=True))
        elif kind == "tool_use":
            call_id, signature = split_tool_id(string_field(block, "id", bwhere))
            tool_input = block.get("input", {})
            if not isinstance(tool_input, dict):
                raise InvalidRequest(f"{bwhere}.input: an object", param=f"{bwhere}.input")
            if signature is not None:
                replay.call_signatures[len(calls)] = signature
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": string_field(block, "name", bwhere),
                        "arguments": orjson.dumps(tool_input).decode(),
                    },
                }
            )
        elif kind in _SERVER_BLOCKS or kind.endswith("_tool_result"):
            continue  # the results of Anthropic's server tools: no other upstream reads them
        else:
            raise InvalidRequest(
                f"{bwhere}: content blocks of type {kind[:50]!r} are not supported in an "
                "assistant turn",
                param=bwhere,
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    if replay.thinking or replay.call_signatures:
        replays.append(replay)
    out.append(message)
