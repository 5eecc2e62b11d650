"""An Anthropic Messages request as an OpenAI chat body, the one form every provider takes.

Mapped (PROVIDERS.md §5.1): the conversation, ``system`` included (:mod:`messages_content`);
``tools``, ``tool_choice``, ``stop_sequences``, ``temperature``, ``top_p``, ``max_tokens``,
``output_config.format`` (as ``response_format``).
Unknown fields (``metadata``, ``context_management``, ``cache_control``, ``defer_loading``,
``top_k``...) are ignored; a shape the gateway cannot read is a 400.

``thinking`` (enabled with a budget, or adaptive with ``output_config.effort``) becomes
``reasoning_effort`` for the providers that turn it into their own reasoning options
(anthropic, gemini) and is dropped for the others: a setting of the client's model, never an
error.

Replayed reasoning goes back only to who can take it: the body is made per deployment
(:meth:`MessagesRequest.body_for`). The thinking blocks of an assistant turn reach an anthropic
provider as ``thinking_blocks`` with their signatures intact (bugs #10, #15); blocks whose
signature carries the gateway's provenance tag (:mod:`gateway.surfaces.messages_ids`) were
made by another provider and go back, as ``reasoning_content``, to that provider only. A
Gemini thought signature rides in its tool call's id and returns to Gemini providers as
``extra_content.google.thought_signature``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeGuard

from gateway.errors import InvalidRequest
from gateway.surfaces.messages_content import (
    TOOL_ERROR,
    Replay,
    add_message,
    string_field,
    system_text,
)
from gateway.surfaces.messages_ids import GATEWAY_TAG, split_signature
from gateway.surfaces.messages_tokens import estimate_tokens
from gateway.validation import MAX_DEPTH, parse_json, scan_body

__all__ = ["MessagesRequest", "Target", "parse_messages_request"]

MAX_MESSAGES = 10_000
# reasoning_effort for Anthropic's output_config.effort (adaptive thinking).
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}


@dataclass(frozen=True, slots=True)
class Target:
    """What the body depends on of the deployment it goes to: the provider's kind
    (``anthropic``, ``gemini`` or ``other``) and its configured name."""

    kind: str
    name: str


@dataclass(slots=True)
class MessagesRequest:
    """A checked Messages request: the OpenAI messages and parameters, and what is replayed.

    ``prompt_tokens`` (the estimate ``count_tokens`` answers) and ``max_tokens`` (the output
    cap) are there for admission before dispatch.
    """

    model: str
    stream: bool
    max_tokens: int
    prompt_tokens: int
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    effort: str | None = None
    replays: list[Replay] = field(default_factory=list)

    def body_for(self, target: Target) -> dict[str, Any]:
        """The OpenAI chat body (without ``model``) for a deployment of ``target``."""
        messages = self.messages
        if target.kind not in _SAYS_TOOL_ERRORS and any(TOOL_ERROR in m for m in messages):
            # OpenAI's tool messages have no such field: the result's text says it, as sent.
            messages = [_without_error_mark(m) if TOOL_ERROR in m else m for m in messages]
        if self.replays:
            messages = list(messages)
            for replay in self.replays:
                messages[replay.position] = _replayed(messages[replay.position], replay, target)
        body = {"messages": messages, **self.params}
        if self.effort is not None and _takes_effort(target, self.max_tokens):
            body["reasoning_effort"] = self.effort
        return body


# Provider kinds whose upstream has a tool result's error flag (Anthropic's is_error,
# Gemini's functionResponse "error" key).
_SAYS_TOOL_ERRORS = ("anthropic", "gemini")


def _without_error_mark(message: dict[str, Any]) -> dict[str, Any]:
    out = dict(message)
    del out[TOOL_ERROR]
    return out


def _takes_effort(target: Target, max_tokens: int) -> bool:
    """Whether ``target`` turns reasoning_effort into its own thinking options without
    refusing the request: Anthropic's least thinking budget is 1024 tokens below max_tokens."""
    if target.kind == "anthropic":
        return max_tokens > 1025
    return target.kind == "gemini"


def _replayed(message: dict[str, Any], replay: Replay, target: Target) -> dict[str, Any]:
    out = dict(message)
    if target.kind == "anthropic":
        blocks = []
        for t in replay.thinking:
            if t.redacted:
                blocks.append({"type": "redacted_thinking", "data": t.signature})
            elif t.signature and not t.signature.startswith(GATEWAY_TAG):
                blocks.append({"type": "thinking", "thinking": t.text, "signature": t.signature})
        if blocks:
            out["thinking_blocks"] = blocks
    else:
        texts, signatures = [], []
        for t in replay.thinking:
            origin, signature = split_signature(t.signature)
            if not t.redacted and origin == target.name:
                texts.append(t.text)
                signatures.append(signature)
        if texts:
            out["reasoning_content"] = "".join(texts)
            if any(signatures):
                out["reasoning_signature"] = "".join(signatures)
    if target.kind == "gemini" and replay.call_signatures:
        calls = [dict(call) for call in out["tool_calls"]]
        for k, signature in replay.call_signatures.items():
            calls[k]["extra_content"] = {"google": {"thought_signature": signature}}
        out["tool_calls"] = calls
    return out


def parse_messages_request(raw: bytes, *, counting: bool = False) -> MessagesRequest:
    """Check and map the body of ``POST /v1/messages`` (``counting``: of ``count_tokens``,
    which takes no ``max_tokens``); :class:`InvalidRequest` naming the field otherwise."""
    body = parse_json(raw)
    _check_depth(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: a model name (string) is required", param="model")
    given = body.get("max_tokens", 1 if counting else None)
    if not _is_int(given) or given < 1:
        raise InvalidRequest("max_tokens: a positive integer is required", param="max_tokens")
    max_tokens: int = given
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: must be a boolean", param="stream")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise InvalidRequest("messages: a non-empty array is required", param="messages")
    if len(raw_messages) > MAX_MESSAGES:
        raise InvalidRequest(f"messages: at most {MAX_MESSAGES} messages", param="messages")
    messages: list[dict[str, Any]] = []
    system = system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    replays: list[Replay] = []
    for i, message in enumerate(raw_messages):
        add_message(message, f"messages.{i}", messages, replays)
    params: dict[str, Any] = {"max_tokens": max_tokens}
    _sampling(body, params)
    _tools(body, params)
    _output_format(body.get("output_config"), params)
    request = MessagesRequest(
        model=model,
        stream=stream,
        max_tokens=max_tokens,
        prompt_tokens=estimate_tokens(body),
        messages=messages,
        params=params,
        effort=_effort(body.get("thinking"), body.get("output_config")),
        replays=replays,
    )
    # The same guard as every surface's (forbidden keys, nesting), on what goes upstream.
    scan_body({"messages": messages, **params})
    return request


def _check_depth(body: dict[str, Any]) -> None:
    """Refuse nesting past every surface's limit before anything walks or serializes the body
    (orjson gives up at 255 levels: a 500, not a 400). Iterative: no body can exhaust the
    stack."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequest(
                f"the request is nested too deeply (the limit is {MAX_DEPTH} levels)",
                code="too_deep",
            )
        items = value.values() if isinstance(value, dict) else value
        stack.extend((item, depth + 1) for item in items if isinstance(item, dict | list))


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sampling(body: dict[str, Any], params: dict[str, Any]) -> None:
    temperature = body.get("temperature")
    if temperature is not None:
        if not _is_number(temperature) or not 0 <= temperature <= 1:
            raise InvalidRequest("temperature: a number between 0 and 1", param="temperature")
        params["temperature"] = temperature
    top_p = body.get("top_p")
    if top_p is not None:
        if not _is_number(top_p) or not 0 <= top_p <= 1:
            raise InvalidRequest("top_p: a number between 0 and 1", param="top_p")
        params["top_p"] = top_p
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise InvalidRequest(
                "stop_sequences: an array of non-empty strings", param="stop_sequences"
            )
        if stop:
            params["stop"] = stop


def _tools(body: dict[str, Any], params: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is None or tools == []:
        return
    if not isinstance(tools, list):
        raise InvalidRequest("tools: an array", param="tools")
    functions = []
    for k, tool in enumerate(tools):
        where = f"tools.{k}"
        if not isinstance(tool, dict):
            raise InvalidRequest(f"{where}: a tool must be an object", param=where)
        kind = tool.get("type", "custom")
        if kind != "custom":
            raise InvalidRequest(
                f"{where}.type: Anthropic's server and built-in tools ({str(kind)[:50]!r}) are "
                "not supported by the gateway; declare the tool with an input_schema",
                param=f"{where}.type",
            )
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise InvalidRequest(
                f"{where}.input_schema: a JSON schema object is required",
                param=f"{where}.input_schema",
            )
        function: dict[str, Any] = {"name": string_field(tool, "name", where), "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        if tool.get("strict") is True:
            function["strict"] = True
        functions.append({"type": "function", "function": function})
    params["tools"] = functions
    choice = body.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in ("auto", "none"):
        params["tool_choice"] = kind
    elif kind == "any":
        params["tool_choice"] = "required"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        params["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise InvalidRequest(
            "tool_choice: {type: auto | any | none} or {type: tool, name}", param="tool_choice"
        )
    if isinstance(choice, dict) and choice.get("disable_parallel_tool_use") is True:
        params["parallel_tool_calls"] = False


def _output_format(config: Any, params: dict[str, Any]) -> None:
    """``output_config.format`` (structured outputs: Claude Code titles its sessions with one)
    as OpenAI's ``response_format``, which the anthropic provider turns back into it."""
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt is None:
        return
    schema = fmt.get("schema") if isinstance(fmt, dict) else None
    if (
        not isinstance(fmt, dict)
        or fmt.get("type") != "json_schema"
        or not isinstance(schema, dict)
    ):
        raise InvalidRequest(
            "output_config.format: {type: json_schema, schema: {...}}",
            param="output_config.format",
        )
    params["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema},
    }


def _effort(thinking: Any, output_config: Any) -> str | None:
    """The reasoning effort the client's thinking settings ask for (None: no thinking)."""
    if not isinstance(thinking, dict):
        return None
    kind = thinking.get("type")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not _is_int(budget):
            return "medium"
        return "low" if budget < 4096 else "medium" if budget < 16384 else "high"
    if kind == "adaptive":
        effort = output_config.get("effort") if isinstance(output_config, dict) else None
        return _EFFORTS.get(effort, "high") if isinstance(effort, str) else "high"
    return None  # disabled, or a kind to come: no thinking asked for
