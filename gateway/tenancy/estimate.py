"""An upper bound of a request's input tokens, before any tokenizer: the UTF-8 bytes of its
text, plus a few per message.

Byte-level BPE tokenizers never make a token of less than one byte, so the bytes of the text
bound its tokens from above (word-level counters, like the echo provider's, count fewer). Media
(an image, audio or a file) count as :data:`MEDIA_TOKENS` each instead of their bytes: a base64
image is megabytes of text but a bounded number of tokens upstream.
"""

from __future__ import annotations

from typing import Any

import orjson

MEDIA_TOKENS = 2_000
PER_MESSAGE = 4
PER_REQUEST = 3
_SCHEMAS = ("tools", "functions", "response_format")
_MEDIA_TYPES = frozenset({"image_url", "input_audio", "file", "input_image", "input_file"})


def text_tokens(value: Any, depth: int = 0) -> int:
    """The bound for any JSON value: every string's UTF-8 bytes, media at a flat rate."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if depth > 64:
        return 0
    if isinstance(value, list):
        return sum(text_tokens(v, depth + 1) for v in value)
    if isinstance(value, dict):
        if value.get("type") in _MEDIA_TYPES:
            return MEDIA_TOKENS
        return sum(text_tokens(v, depth + 1) for v in value.values())
    if isinstance(value, int | float):
        return 1  # a token id, or a number's few digits
    return 0


def chat_tokens(body: dict[str, Any]) -> int:
    """A chat body's input: messages, and the tool definitions the upstream also reads."""
    messages = body.get("messages") or []
    total = PER_MESSAGE * len(messages) + PER_REQUEST
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str) and len(message) == 2:  # role and text: the common case
            total += len(message["role"]) + (
                len(content) if content.isascii() else len(content.encode("utf-8", "surrogatepass"))
            )
        else:
            total += text_tokens(message)
    if not body.keys().isdisjoint(_SCHEMAS):
        for name in _SCHEMAS:
            if body.get(name) is not None:  # schemas: their keys are read too
                total += len(orjson.dumps(body[name]))
    return total
