"""Validation of a chat completion request body, by hand: fast, with OpenAI's ``param`` names.

Only what the gateway relies on, or what would crash an upstream, is checked; unknown fields are
passed through to OpenAI-compatible upstreams. Fields that would choose where or with what
credentials a request goes (``api_base``, ``api_key``, ...) are refused anywhere in the body.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import InvalidRequest, UnsupportedMediaType

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
# Keys that would let a client pick the upstream, its credentials or its headers (SSRF).
FORBIDDEN_KEYS = frozenset(
    {
        "api_base",
        "api_url",
        "api_host",
        "base_url",
        "api_key",
        "api_version",
        "endpoint",
        "azure_endpoint",
        "azure_ad_token",
        "extra_headers",
        "extra_query",
        "extra_body",
        "default_headers",
        "default_query",
        "headers",
        "custom_llm_provider",
        "proxy",
        "proxies",
        "organization",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "vertex_credentials",
    }
)


def _spellings(name: str) -> set[str]:
    """``api_base`` -> api_base, api-base, apibase (``apiBase``, ``API_BASE`` once lowered)."""
    words = name.split("_")
    return {
        words[0] + "".join(sep + word for sep, word in zip(seps, words[1:], strict=True))
        for seps in itertools.product(("_", "-", ""), repeat=len(words) - 1)
    }


# Every spelling of the forbidden keys, compared against a key lowered: one set lookup per key.
_FORBIDDEN_SPELLINGS = frozenset(s for name in FORBIDDEN_KEYS for s in _spellings(name))
# JSON schemas, whose property names are the client's own ("headers", "base_url", ...).
_SCHEMA_PATH = re.compile(
    r"tools\[\d+\]\.function\.parameters|functions\[\d+\]\.parameters|"
    r"response_format\.json_schema"
)
_SCHEMA_KEYS = frozenset({"parameters", "json_schema"})
# Deeper bodies are refused: no legitimate request nests this far, and upstream serializers
# (orjson stops at 255 levels) would fail on them with a 500.
MAX_DEPTH = 128
NUMBER_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}


@dataclass(slots=True)
class Limits:
    max_messages: int = 10_000
    max_n: int = 16
    max_tokens: int = 1_048_576


@dataclass(slots=True)
class ParsedRequest:
    model: str
    stream: bool
    include_usage: bool
    body: dict[str, Any]


def check_content_type(value: bytes | None) -> None:
    if value is None:
        return  # curl -d without -H and many scripts send none; the body must still be JSON.
    media = value.split(b";", 1)[0].strip().lower()
    if media != b"application/json" and not media.endswith(b"+json"):
        raise UnsupportedMediaType(
            "Content-Type must be application/json", code="unsupported_media_type"
        )


# Parsing makes a Python object per JSON value: ~100 bytes per {} or [], so a body of nothing
# but empty containers would cost ~25x its size in memory before any check could run. Large
# bodies (images, long texts) carry few containers; bodies past this many are refused unparsed.
MAX_CONTAINERS = 250_000
_SCAN_FROM_BYTES = 1 << 20


def parse_json(raw: bytes) -> dict[str, Any]:
    if len(raw) > _SCAN_FROM_BYTES and raw.count(b"{") + raw.count(b"[") > MAX_CONTAINERS:
        raise InvalidRequest(
            f"the request body holds more than {MAX_CONTAINERS} JSON objects and arrays",
            code="too_many_values",
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = str(exc).split(":", 1)[0]
        raise InvalidRequest(
            f"the request body is not valid JSON ({reason}); it must be UTF-8 JSON with no "
            "NaN, Infinity or lone surrogates",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_json")
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def scan_body(body: dict[str, Any]) -> None:
    """Refuse forbidden keys at any depth (outside JSON schemas) and nesting past MAX_DEPTH.

    Iterative, so no body can exhaust the interpreter's stack.
    """
    stack: list[tuple[Any, str, int, bool]] = [(body, "", 1, False)]
    pop, push = stack.pop, stack.append
    while stack:
        value, path, depth, in_schema = pop()
        if depth > MAX_DEPTH:
            field = re.split(r"[.\[]", path, maxsplit=1)[0]
            raise InvalidRequest(
                f"'{field}' is nested too deeply (the limit is {MAX_DEPTH} levels)",
                param=field,
                code="too_deep",
            )
        depth += 1
        if isinstance(value, dict):
            for key, item in value.items():
                if not in_schema and key.lower() in _FORBIDDEN_SPELLINGS:
                    where = f"{path}.{key}" if path else key
                    raise InvalidRequest(
                        f"'{where}' is not allowed: upstreams and their credentials are chosen "
                        "by the gateway's configuration",
                        param=where,
                        code="forbidden_parameter",
                    )
                if isinstance(item, dict | list):
                    where = f"{path}.{key}" if path else key
                    schema = in_schema or (
                        key in _SCHEMA_KEYS and _SCHEMA_PATH.fullmatch(where) is not None
                    )
                    push((item, where, depth, schema))
        else:
            for index, item in enumerate(value):
                if isinstance(item, dict | list):
                    push((item, f"{path}[{index}]", depth, in_schema))


def _check_content(content: Any, role: str, where: str) -> None:
    if content is None:
        if role in ("user", "system", "developer", "tool"):
            raise InvalidRequest(f"{where}.content is required", param=f"{where}.content")
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list) or (not content and role != "assistant"):
        raise InvalidRequest(
            f"{where}.content must be a string or a non-empty list of content parts",
            param=f"{where}.content",
        )
    for j, part in enumerate(content):
        pwhere = f"{where}.content[{j}]"
        if not isinstance(part, dict) or part.get("type") not in PART_TYPES:
            raise InvalidRequest(
                f"{pwhere} must be an object with a type among {sorted(PART_TYPES)}",
                param=f"{pwhere}.type",
            )
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise InvalidRequest(f"{pwhere}.text must be a string", param=f"{pwhere}.text")


def _check_messages(messages: Any, limits: Limits) -> None:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty array", param="messages")
    if len(messages) > limits.max_messages:
        raise InvalidRequest(
            f"too many messages: {len(messages)} (the limit is {limits.max_messages})",
            param="messages",
            code="too_many_messages",
        )
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where} must be an object", param=where)
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                f"{where}.role must be one of {sorted(ROLES)}", param=f"{where}.role"
            )
        _check_content(message.get("content"), role, where)
        if (
            role == "assistant"
            and message.get("content") is None
            and not message.get("tool_calls")
            and not message.get("function_call")
        ):
            raise InvalidRequest(
                f"{where}.content is required unless tool_calls is set",
                param=f"{where}.content",
            )


def _check_scalars(body: dict[str, Any], limits: Limits) -> None:
    for name, (low, high) in NUMBER_RANGES.items():
        value = body.get(name)
        if value is not None and (not _is_number(value) or not low <= value <= high):
            raise InvalidRequest(
                f"{name} must be a number between {low:g} and {high:g}", param=name
            )
    n = body.get("n")
    if n is not None and (not _is_int(n) or not 1 <= n <= limits.max_n):
        raise InvalidRequest(f"n must be an integer from 1 to {limits.max_n}", param="n")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not _is_int(value) or not 1 <= value <= limits.max_tokens):
            raise InvalidRequest(
                f"{name} must be an integer from 1 to {limits.max_tokens}", param=name
            )
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise InvalidRequest("stop must be a string or an array of strings", param="stop")
    for name in ("tools", "functions"):
        value = body.get(name)
        if value is not None and not isinstance(value, list):
            raise InvalidRequest(f"{name} must be an array", param=name)


def validate_chat_request(raw: bytes, limits: Limits) -> ParsedRequest:
    """Parse and check a ``POST /v1/chat/completions`` body."""
    body = parse_json(raw)
    scan_body(body)
    model = body.pop("model", None)
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model must be a non-empty string", param="model")
    stream = body.pop("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("stream must be a boolean", param="stream")
    options = body.pop("stream_options", None)
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidRequest("stream_options must be an object", param="stream_options")
        usage = options.get("include_usage", False)
        if not isinstance(usage, bool):
            raise InvalidRequest(
                "stream_options.include_usage must be a boolean",
                param="stream_options.include_usage",
            )
        include_usage = usage
    _check_messages(body.get("messages"), limits)
    _check_scalars(body, limits)
    return ParsedRequest(model=model, stream=stream, include_usage=include_usage, body=body)
