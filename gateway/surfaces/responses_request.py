"""A Responses API request (``POST /v1/responses``) as the OpenAI chat body providers take.

Stateless: ``previous_response_id``, ``conversation``, ``store: true`` and ``background`` are
refused with a 400 that says so; a client sends the whole history (Codex does, with
``store: false``). The mapping:

* ``instructions`` and the ``input`` items -> chat messages
  (:mod:`gateway.surfaces.responses_input`); ``reasoning`` items the gateway made go back only
  in the body built for the deployment that produced them (:meth:`ResponsesRequest.body_for`,
  :mod:`gateway.surfaces.responses_reasoning`), any other is dropped.
* ``tools`` and ``tool_choice`` -> chat's function tools (:mod:`gateway.surfaces.responses_tools`);
  :attr:`ResponsesRequest.tools` maps an upstream's tool name back to the client's tool.
* ``max_output_tokens`` -> ``max_completion_tokens``, ``reasoning.effort`` ->
  ``reasoning_effort``, ``text.format`` -> ``response_format``; ``temperature``, ``top_p``,
  ``user``, ``prompt_cache_key`` and ``parallel_tool_calls`` (with tools) as they are. Other
  fields (``include``, ``metadata``, ``truncation``, ``client_metadata``...) shape only the
  response object or nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import InvalidRequest
from gateway.surfaces.responses_input import InputItems
from gateway.surfaces.responses_reasoning import Reasoning
from gateway.surfaces.responses_tools import ToolName, convert_tools, echo_tool, tool_choice
from gateway.validation import NUMBER_RANGES, Limits, parse_json, scan_body

logger = logging.getLogger("gateway")

REFUSED_FIELDS = {
    "previous_response_id": "the gateway stores no responses: send the whole conversation in "
    "input instead of previous_response_id",
    "conversation": "the gateway stores no conversations: send the whole conversation in input",
    "prompt": "stored prompt templates are not supported: send the prompt in input",
}


@dataclass(slots=True)
class ResponsesRequest:
    """A checked Responses request. ``body`` is the chat body without replayed reasoning;
    :meth:`body_for` adds the reasoning a deployment may see."""

    model: str
    stream: bool
    body: dict[str, Any]
    tools: dict[str, ToolName]
    echo: dict[str, Any]  # the request's fields the response object repeats
    max_output_tokens: int | None = None
    reasoning: dict[int, list[Reasoning]] = field(default_factory=dict)  # by message index
    dropped_tools: tuple[str, ...] = ()

    def body_for(self, deployment: str) -> dict[str, Any]:
        """The chat body for ``deployment``: replayed reasoning it produced, none else."""
        mine = {
            index: [r for r in items if r.origin == deployment]
            for index, items in self.reasoning.items()
        }
        mine = {index: items for index, items in mine.items() if items}
        if not mine:
            return self.body
        messages = list(self.body["messages"])
        for index, items in mine.items():
            messages[index] = _with_reasoning(messages[index], items)
        return {**self.body, "messages": messages}


def _with_reasoning(message: dict[str, Any], items: list[Reasoning]) -> dict[str, Any]:
    out = dict(message)
    thought = next((r for r in items if r.text or r.signature), None)
    if thought is not None:
        if thought.text:
            out["reasoning_content"] = thought.text
        if thought.signature:
            out["reasoning_signature"] = thought.signature
    redacted = next((r.redacted for r in items if r.redacted), None)
    if redacted:
        out["redacted_reasoning"] = redacted
    extras = {k: v for r in items for k, v in r.call_extras.items()}
    if extras and out.get("tool_calls"):
        out["tool_calls"] = [
            {**call, **extras[call["id"]]} if call["id"] in extras else call
            for call in out["tool_calls"]
        ]
    return out


def parse_responses_request(raw: bytes, limits: Limits) -> ResponsesRequest:
    """Parse and check a ``POST /v1/responses`` body; 400 with ``param`` on bad input."""
    body = parse_json(raw)
    scan_body(_without_schemas(body))
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model must be a non-empty string", param="model")
    stream = _optional(body, "stream", bool) or False
    _refuse_state(body)
    chat: dict[str, Any] = {}
    tools, names, offered, dropped = convert_tools(body.get("tools"))
    messages, reasoning = InputItems(limits).convert(body)
    chat["messages"] = messages
    if tools:
        chat["tools"] = tools
        parallel = _optional(body, "parallel_tool_calls", bool)
        if parallel is not None:
            chat["parallel_tool_calls"] = parallel
    choice = tool_choice(body.get("tool_choice"), names, dropped)
    if choice is not None and (tools or choice == "none"):
        chat["tool_choice"] = choice
    max_output = _optional(body, "max_output_tokens", int)
    if max_output is not None:
        if not 1 <= max_output <= limits.max_tokens:
            raise InvalidRequest(
                f"max_output_tokens must be an integer from 1 to {limits.max_tokens}",
                param="max_output_tokens",
            )
        chat["max_completion_tokens"] = max_output
    for name in ("temperature", "top_p"):
        low, high = NUMBER_RANGES[name]
        value = body.get(name)
        if value is None:
            continue
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not low <= value <= high
        ):
            raise InvalidRequest(
                f"{name} must be a number between {low:g} and {high:g}", param=name
            )
        chat[name] = value
    for name in ("user", "prompt_cache_key", "safety_identifier"):
        value = _optional(body, name, str)
        if value is not None and name != "safety_identifier":
            chat[name] = value
    effort = _reasoning(body.get("reasoning"))
    if effort is not None:
        chat["reasoning_effort"] = effort
    response_format = _text_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    _check_include(body.get("include"))
    scan_body({"tools": tools, "response_format": response_format or {}})
    _warn_dropped(dropped)
    echo = _echo(body, offered)
    return ResponsesRequest(
        model=model,
        stream=stream,
        body=chat,
        tools=names,
        echo=echo,
        max_output_tokens=max_output,
        reasoning=reasoning,
        dropped_tools=tuple(dropped),
    )


_warned: set[str] = set()  # dropped tool types already warned about


def _warn_dropped(dropped: list[str]) -> None:
    """A warning the first time a tool type is dropped, a debug line after: Codex sends its
    web search tool on every request, and one warning says all there is to say."""
    for kind in sorted(set(dropped)):
        log = logger.debug if kind in _warned else logger.warning
        _warned.add(kind)
        log("responses: dropped a %s tool: no upstream of the gateway runs it", kind)


def _without_schemas(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without the JSON schemas in it (tool parameters, the ``json_schema`` format),
    whose property names are the client's own, not fields (``headers``, ``api_key``...); the
    schemas are scanned for depth once in chat's shape, where chat's scan knows them."""
    out = dict(body)
    tools = body.get("tools")
    if isinstance(tools, list):
        out["tools"] = [_tool_without_schema(tool) for tool in tools]
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict):
        out["text"] = {**text, "format": {**text["format"], "schema": None}}
    return out


def _tool_without_schema(tool: Any) -> Any:
    if not isinstance(tool, dict):
        return tool
    out = {k: v for k, v in tool.items() if k != "parameters"}
    if isinstance(tool.get("tools"), list):
        out["tools"] = [_tool_without_schema(t) for t in tool["tools"]]
    return out


def _optional(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        what = {bool: "a boolean", int: "an integer", str: "a string"}[kind]
        raise InvalidRequest(f"{name} must be {what}", param=name)
    return value


def _refuse_state(body: dict[str, Any]) -> None:
    for name, message in REFUSED_FIELDS.items():
        if body.get(name) not in (None, ""):
            raise InvalidRequest(message, param=name, code="unsupported_parameter")
    if _optional(body, "store", bool):
        raise InvalidRequest(
            "the gateway stores no responses: set store to false (the whole conversation "
            "travels in input)",
            param="store",
            code="unsupported_parameter",
        )
    if _optional(body, "background", bool):
        raise InvalidRequest(
            "background responses are not supported",
            param="background",
            code="unsupported_parameter",
        )


def _check_include(value: Any) -> None:
    """``include`` is accepted and needs no action: reasoning items always carry their
    ``encrypted_content`` (the only way a stateless gateway can replay them)."""
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest("include must be an array of strings", param="include")


def _reasoning(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("reasoning must be an object", param="reasoning")
    effort = value.get("effort")
    if effort is not None and not isinstance(effort, str):
        raise InvalidRequest("reasoning.effort must be a string", param="reasoning.effort")
    summary = value.get("summary")
    if summary is not None and not isinstance(summary, str):
        raise InvalidRequest("reasoning.summary must be a string", param="reasoning.summary")
    return effort


def _text_format(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("text must be an object", param="text")
    fmt = value.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        assert isinstance(fmt, dict)
        name, schema = fmt.get("name"), fmt.get("schema")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(
                "text.format.name must be a non-empty string", param="text.format.name"
            )
        if not isinstance(schema, dict):
            raise InvalidRequest("text.format.schema must be an object", param="text.format.schema")
        spec: dict[str, Any] = {"name": name, "schema": schema}
        for key in ("description", "strict"):
            if fmt.get(key) is not None:
                spec[key] = fmt[key]
        return {"type": "json_schema", "json_schema": spec}
    raise InvalidRequest(
        "text.format.type must be one of text, json_object, json_schema", param="text.format.type"
    )


def _echo(body: dict[str, Any], offered: list[dict[str, Any]]) -> dict[str, Any]:
    """The request's fields as the response object repeats them (its defaults otherwise)."""
    reasoning = body.get("reasoning") or {}
    metadata = body.get("metadata")
    return {
        "instructions": body.get("instructions"),
        "tools": [echo_tool(tool) for tool in offered],
        "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": metadata if isinstance(metadata, dict) else {},
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": False,
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "previous_response_id": None,
        **(
            {"prompt_cache_key": body["prompt_cache_key"]}
            if isinstance(body.get("prompt_cache_key"), str)
            else {}
        ),
    }
