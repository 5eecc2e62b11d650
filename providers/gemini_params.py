"""OpenAI chat parameters -> Gemini ``tools``, ``toolConfig`` and ``generationConfig``.

``reasoning_effort`` becomes a ``thinkingConfig``: a ``thinkingLevel`` (the effort's own word;
``none`` is ``MINIMAL``, since Gemini 3 cannot stop thinking) for Gemini 3 and later, a
``thinkingBudget`` for models named ``gemini-1.*``/``gemini-2.*`` (none 0, minimal and low 1024,
medium 8192, high and xhigh 24576: what Google's own OpenAI-compatible endpoint uses). The
upstream says which levels a given model takes. ``includeThoughts`` asks for thought summaries,
which become ``reasoning_content``.
"""

from __future__ import annotations

import re
from typing import Any

from providers.errors import UnsupportedRequest

# Gemini 1.x/2.x take a token budget for thinking; Gemini 3 and later a level.
_BUDGET_MODELS = re.compile(r"gemini-[12][.-]")
_LEVELS = {
    "none": "MINIMAL",
    "minimal": "MINIMAL",
    "low": "LOW",
    "medium": "MEDIUM",
    "high": "HIGH",
    "xhigh": "XHIGH",
}
_BUDGETS = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 24576}
_TOOL_CHOICE_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}


def tools_config(tools: Any, choice: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Function declarations and a ``functionCallingConfig`` (None: Gemini's default)."""
    if type(tools) is not list:
        raise UnsupportedRequest("tools must be an array")
    declarations: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if type(tool) is dict else None
        if type(tool) is not dict or tool.get("type", "function") != "function":
            raise UnsupportedRequest(f"tools[{i}]: Gemini supports only function tools")
        name = function.get("name") if type(function) is dict else None
        if type(name) is not str or not name:
            raise UnsupportedRequest(f"tools[{i}].function.name must be a non-empty string")
        assert type(function) is dict
        declaration: dict[str, Any] = {"name": name}
        if type(function.get("description")) is str:
            declaration["description"] = function["description"]
        if function.get("parameters") is not None:
            # Full JSON Schema: Gemini's ``parameters`` takes only an OpenAPI subset.
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    if choice is None:
        return declarations, None
    if type(choice) is str and choice in _TOOL_CHOICE_MODES:
        return declarations, {"mode": _TOOL_CHOICE_MODES[choice]}
    if type(choice) is dict and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if type(function) is dict else None
        if type(name) is str and name:
            return declarations, {"mode": "ANY", "allowedFunctionNames": [name]}
    if type(choice) is dict and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools")
        mode = allowed.get("mode") if type(allowed) is dict else None
        listed = allowed.get("tools") if type(allowed) is dict else None
        if mode in ("auto", "required") and type(listed) is list:
            wanted = {
                name
                for t in listed
                if type(t) is dict
                and type(t.get("function")) is dict
                and type(name := t["function"].get("name")) is str
            }
            # Gemini restricts names only in ANY mode: for "auto", offer only those tools.
            declarations = [d for d in declarations if d["name"] in wanted]
            if mode == "auto":
                return declarations, {"mode": "AUTO"}
            return declarations, {"mode": "ANY", "allowedFunctionNames": sorted(wanted)}
    raise UnsupportedRequest("tool_choice is not a form Gemini supports")


def generation_config(
    body: dict[str, Any], *, model: str, include_thoughts: bool
) -> dict[str, Any]:
    """The ``generationConfig`` of a chat body (empty: nothing to configure)."""
    config: dict[str, Any] = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if type(stop) is str else stop
    response_format = body.get("response_format")
    if type(response_format) is dict and response_format.get("type") == "json_object":
        config["responseMimeType"] = "application/json"
    elif type(response_format) is dict and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if type(spec) is dict else None
        config["responseMimeType"] = "application/json"
        if schema is not None:
            config["responseJsonSchema"] = schema
    thinking = _thinking(body.get("reasoning_effort"), model, include_thoughts)
    if thinking:
        config["thinkingConfig"] = thinking
    return config


def _thinking(effort: Any, model: str, include_thoughts: bool) -> dict[str, Any]:
    """``reasoning_effort`` as a thinking level (Gemini 3+) or budget (Gemini 1.x/2.x)."""
    thinking: dict[str, Any] = {}
    if effort is not None:
        if type(effort) is not str or effort not in _LEVELS:
            raise UnsupportedRequest(f"reasoning_effort must be one of {', '.join(_LEVELS)}")
        if _BUDGET_MODELS.search(model):
            thinking["thinkingBudget"] = _BUDGETS[effort]
        else:
            thinking["thinkingLevel"] = _LEVELS[effort]
    if include_thoughts and effort != "none":
        thinking["includeThoughts"] = True
    return thinking
