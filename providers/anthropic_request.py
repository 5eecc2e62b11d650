"""An OpenAI chat request in Anthropic's Messages terms (PROVIDERS.md §3.2); no I/O here.

What cannot be said to Anthropic is refused with :class:`UnsupportedRequest` (the client gets a
400 naming the field, and nothing is sent) rather than sent half-translated: ``n`` > 1,
``logprobs``, ``temperature`` above 1, tool-call arguments that are not a JSON object, audio,
legacy ``functions``. OpenAI fields with no Anthropic twin (penalties, ``seed``,
``logit_bias``, ``service_tier``, ...) are dropped. Messages: :mod:`providers.anthropic_messages`.

``temperature`` (0 to 1 here; above: a 400) and ``top_p`` are sent only to models that still
take them (:data:`SAMPLING_MODELS` by default), and ``top_p`` not with ``temperature``.
``max_tokens`` (required by Anthropic): the client's ``max_completion_tokens`` or
``max_tokens``, else the model's configured default. ``reasoning_effort`` (``none`` = no
thinking) becomes ``thinking: {type: enabled, budget_tokens}`` with the budget from
:data:`THINKING_BUDGETS` (cut to ``max_tokens - 1`` when the client set ``max_tokens``, else
added to the default ``max_tokens``), or, for models configured as adaptive, ``thinking: {type:
adaptive}`` and ``output_config.effort`` (minimal -> low; low, medium, high, xhigh as they are).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from providers.anthropic_messages import conversation
from providers.errors import UnsupportedRequest

__all__ = [
    "SAMPLING_MODELS",
    "THINKING_BUDGETS",
    "RequestPolicy",
    "messages_body",
]

# reasoning_effort -> thinking budget (models on enabled+budget_tokens thinking) and ->
# output_config.effort (models on adaptive thinking). Anthropic's least budget is 1024.
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
_EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"}
_MIN_BUDGET = 1024
# Models that still take temperature and top_p: Anthropic deprecated both, models after Opus
# 4.6 answer them with a 400 (nanobot#329), and the anthropic SDK 1.0 dropped them.
SAMPLING_MODELS = ("claude-3*", "claude-haiku-4*", "claude-sonnet-4*", "claude-opus-4-[0-6]*")


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    """The provider's settings that shape a request (see the provider's options)."""

    max_tokens: int = 4096
    max_tokens_by_model: Mapping[str, int] = field(default_factory=dict)
    sampling_models: tuple[str, ...] = SAMPLING_MODELS
    no_top_p_with_temperature: tuple[str, ...] = ("*",)
    adaptive_thinking_models: tuple[str, ...] = ()


def messages_body(
    body: dict[str, Any], *, model: str, stream: bool, policy: RequestPolicy
) -> dict[str, Any]:
    """The ``POST /v1/messages`` body for the client's chat ``body`` (without ``model``)."""
    for name in ("functions", "function_call", "audio"):
        if body.get(name) is not None:
            raise UnsupportedRequest(f"'{name}' is not supported by Anthropic models")
    n = body.get("n")
    if n is not None and n != 1:
        raise UnsupportedRequest("Anthropic models give one choice per request: n must be 1")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise UnsupportedRequest("Anthropic models do not return logprobs")
    system, messages = conversation(body.get("messages"))
    out: dict[str, Any] = {"model": model, "messages": messages}
    if system:
        out["system"] = system
    given = body.get("max_completion_tokens", body.get("max_tokens"))
    if given is not None and (not _is_int(given) or given < 1):
        raise UnsupportedRequest("max_tokens must be a positive integer", code="invalid_value")
    max_tokens: int = given or policy.max_tokens_by_model.get(model, policy.max_tokens)
    out["max_tokens"] = max_tokens
    _sampling(body, out, model=model, policy=policy)
    _thinking(body, out, given=given is not None, policy=policy)
    _tooling(body, out)
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    _response_format(body.get("response_format"), out)
    out["stream"] = stream
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _matches(model: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(model, pattern) for pattern in patterns)


def _sampling(
    body: dict[str, Any], out: dict[str, Any], *, model: str, policy: RequestPolicy
) -> None:
    temperature = body.get("temperature")
    if temperature is not None and not (_is_number(temperature) and 0 <= temperature <= 1):
        raise UnsupportedRequest(
            f"temperature must be between 0 and 1 for Anthropic models (got {temperature!r})",
            code="invalid_value",
        )
    top_p = body.get("top_p")
    if _matches(model, policy.sampling_models):
        if temperature is not None:
            out["temperature"] = temperature
        # Claude 4 models refuse temperature and top_p together (litellm#15097).
        if top_p is not None and not (
            temperature is not None and _matches(model, policy.no_top_p_with_temperature)
        ):
            out["top_p"] = top_p
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop:
        out["stop_sequences"] = stop


def _thinking(
    body: dict[str, Any], out: dict[str, Any], *, given: bool, policy: RequestPolicy
) -> None:
    effort = body.get("reasoning_effort")
    if effort is None or effort == "none":
        return
    if effort not in THINKING_BUDGETS:
        raise UnsupportedRequest(
            f"reasoning_effort must be one of none, {', '.join(THINKING_BUDGETS)}",
            code="invalid_value",
        )
    if _matches(out["model"], policy.adaptive_thinking_models):
        out["thinking"] = {"type": "adaptive"}
        out["output_config"] = {"effort": _EFFORTS[effort]}
        return
    budget = THINKING_BUDGETS[effort]
    if given:  # the client's max_tokens bounds thinking and answer together
        budget = min(budget, out["max_tokens"] - 1)
        if budget < _MIN_BUDGET:
            raise UnsupportedRequest(
                f"reasoning_effort needs max_tokens above {_MIN_BUDGET} with Anthropic models "
                "(thinking takes at least that many of them)",
                code="invalid_value",
            )
    else:  # the default max_tokens is the answer's room: thinking comes on top
        out["max_tokens"] += budget
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}


def _tooling(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools")
    if not tools:
        return  # a tool_choice without tools means nothing to Anthropic
    out["tools"] = [_tool(tool, f"tools[{k}]") for k, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    result: dict[str, Any] | None
    if choice is None:
        result = None
    elif choice in ("auto", "none"):
        result = {"type": choice}
    elif choice == "required":
        result = {"type": "any"}
    elif (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), dict)
        and isinstance(choice["function"].get("name"), str)
    ):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise UnsupportedRequest(
            "tool_choice must be auto, none, required or a named function for Anthropic models"
        )
    if body.get("parallel_tool_calls") is False and (result is None or result["type"] != "none"):
        result = result or {"type": "auto"}
        result["disable_parallel_tool_use"] = True
    if result is not None:
        out["tool_choice"] = result


def _tool(tool: Any, where: str) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if (
        not isinstance(tool, dict)
        or tool.get("type") != "function"
        or not isinstance(function, dict)
    ):
        raise UnsupportedRequest(f"{where}: only function tools are supported by Anthropic models")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise UnsupportedRequest(f"{where}.function.name is required", code="invalid_value")
    # Anthropic requires an object schema; OpenAI allows none for a tool without parameters.
    entry: dict[str, Any] = {
        "name": name,
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if isinstance(function.get("description"), str):
        entry["description"] = function["description"]
    if function.get("strict") is True:
        entry["strict"] = True
    return entry


def _response_format(value: Any, out: dict[str, Any]) -> None:
    if not isinstance(value, dict) or value.get("type") in (None, "text"):
        return
    schema = value.get("json_schema")
    if value.get("type") == "json_schema" and isinstance(schema, dict):
        if not isinstance(schema.get("schema"), dict):
            raise UnsupportedRequest("response_format.json_schema.schema is required")
        config = out.setdefault("output_config", {})
        config["format"] = {"type": "json_schema", "schema": schema["schema"]}
        return
    raise UnsupportedRequest(
        "response_format json_object has no Anthropic equivalent; use json_schema",
        code="unsupported_value",
    )
