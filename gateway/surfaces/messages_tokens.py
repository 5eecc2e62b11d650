"""An honest estimate of a Messages request's input tokens, for ``count_tokens`` and admission.

No tokenizer of every upstream is at hand, so the estimate counts what the model will read:
the text of the system prompt, the messages (tool inputs and results, thinking included) and
the tools' names, descriptions and schemas, at one token per 3.5 bytes of UTF-8 (Claude's
tokenizers make about one per 3.5 characters of English; a CJK character is three bytes, about
one token), a few tokens per message and tool for their framing, and a flat 1,600 per image or
document (Anthropic's figure for a ~1.15 megapixel image). It grows with everything that is
added, never with what is not there: clients that compact on it (Claude Code) stay honest
(CLIProxyAPI#6022 shows what fabricated counts do).
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["estimate_tokens"]

PER_MESSAGE = 4
PER_TOOL = 8
PER_MEDIA = 1600
_MEDIA = frozenset({"image", "document"})


def _text_tokens(size: int) -> int:
    return (size * 2 + 6) // 7  # ceil(size / 3.5)


def estimate_tokens(body: dict[str, Any]) -> int:
    """The estimated input tokens of a Messages ``body`` (already checked by the parser)."""
    size = 0  # bytes of text
    extra = 0  # tokens of framing and media
    stack: list[Any] = [body.get("system"), body.get("messages")]
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            extra += PER_TOOL
            if isinstance(tool, dict):
                for key in ("name", "description"):
                    if isinstance(tool.get(key), str):
                        size += len(tool[key].encode("utf-8", "surrogatepass"))
                if tool.get("input_schema") is not None:
                    size += len(orjson.dumps(tool["input_schema"]))
    messages = body.get("messages")
    if isinstance(messages, list):
        extra += PER_MESSAGE * len(messages)
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            size += len(value.encode("utf-8", "surrogatepass"))
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            kind = value.get("type")
            if kind in _MEDIA:
                extra += PER_MEDIA
            elif kind == "tool_use":
                size += len(orjson.dumps(value.get("input"))) + len(str(value.get("name")))
            else:
                for key in ("text", "thinking", "content"):
                    if key in value:
                        stack.append(value[key])
    return _text_tokens(size) + extra
