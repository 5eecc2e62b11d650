"""The Responses API's tools as chat's function tools, and the way back.

``function`` tools are chat's; a ``custom`` tool (free-form input, e.g. Codex's
``apply_patch``) is a function of one string parameter ``input`` whose description carries the
tool's grammar, and its calls go back as ``custom_tool_call`` items holding that string; a
``namespace``'s tools are flattened to ``<namespace>__<name>`` and their calls go back with
``namespace`` set. Web search tools are dropped (no upstream of the gateway runs them; Codex
always offers one), and a ``tool_choice`` naming one becomes ``auto``; other hosted tools
(file search, computer use, MCP...) are a 400. :class:`ToolName` maps an upstream's function
name back to the client's tool.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidRequest

logger = logging.getLogger("gateway")

# Hosted tools no upstream of the gateway runs: dropped, with a warning (Codex always sends one).
DROPPED_TOOLS = frozenset({"web_search", "web_search_preview", "web_search_2025_08_26"})
NAMESPACE_SEPARATOR = "__"
CUSTOM_INPUT = "input"  # the one parameter a custom tool becomes


@dataclass(frozen=True, slots=True)
class ToolName:
    """The client's tool behind an upstream's function name."""

    name: str
    namespace: str | None = None
    custom: bool = False


def convert_tools(
    value: Any,
) -> tuple[list[dict[str, Any]], dict[str, ToolName], list[dict[str, Any]], list[str]]:
    """Chat tools, upstream name -> client tool, the tools offered (to echo), the dropped."""
    if value is None:
        return [], {}, [], []
    if not isinstance(value, list):
        raise InvalidRequest("tools must be an array", param="tools")
    chat: list[dict[str, Any]] = []
    names: dict[str, ToolName] = {}
    offered: list[dict[str, Any]] = []
    dropped: list[str] = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(kind, str):
            raise InvalidRequest(f"{where} must be an object with a type", param=f"{where}.type")
        assert isinstance(tool, dict)
        if kind in DROPPED_TOOLS:
            dropped.append(kind)
            continue
        offered.append(tool)
        if kind == "namespace":
            namespace = _name(tool, where)
            inner = tool.get("tools")
            if not isinstance(inner, list) or not inner:
                raise InvalidRequest(
                    f"{where}.tools must be a non-empty array", param=f"{where}.tools"
                )
            for j, member in enumerate(inner):
                mwhere = f"{where}.tools[{j}]"
                mkind = member.get("type") if isinstance(member, dict) else None
                if mkind not in ("function", "custom"):
                    raise InvalidRequest(
                        f"{mwhere}.type must be function or custom", param=f"{mwhere}.type"
                    )
                assert isinstance(member, dict)
                _add_tool(chat, names, member, mwhere, namespace)
        elif kind in ("function", "custom"):
            _add_tool(chat, names, tool, where, None)
        else:
            raise InvalidRequest(
                f"{where}.type {kind!r} is not supported: the gateway offers function, custom "
                "and namespace tools (web search tools are dropped)",
                param=f"{where}.type",
                code="unsupported_tool",
            )
    return chat, names, offered, dropped


def _name(tool: dict[str, Any], where: str) -> str:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{where}.name must be a non-empty string", param=f"{where}.name")
    return name


def flat_name(name: str, namespace: str | None) -> str:
    return name if namespace is None else f"{namespace}{NAMESPACE_SEPARATOR}{name}"


def _add_tool(
    chat: list[dict[str, Any]],
    names: dict[str, ToolName],
    tool: dict[str, Any],
    where: str,
    namespace: str | None,
) -> None:
    name = _name(tool, where)
    upstream = flat_name(name, namespace)
    if upstream in names:
        raise InvalidRequest(
            f"{where}.name: a tool named {upstream!r} is declared twice", param=f"{where}.name"
        )
    description = tool.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidRequest(f"{where}.description must be a string", param=f"{where}.description")
    function: dict[str, Any] = {"name": upstream}
    if tool["type"] == "function":
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequest(
                f"{where}.parameters must be an object (a JSON schema)", param=f"{where}.parameters"
            )
        if description:
            function["description"] = description
        if parameters is not None:
            function["parameters"] = parameters
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        names[upstream] = ToolName(name, namespace)
    else:
        function["description"] = (
            description + "\n\n" if description else ""
        ) + f"Call it with the whole free-form input in the one string parameter '{CUSTOM_INPUT}'."
        function["parameters"] = {
            "type": "object",
            "properties": {CUSTOM_INPUT: {"type": "string", "description": _format_hint(tool)}},
            "required": [CUSTOM_INPUT],
            "additionalProperties": False,
        }
        names[upstream] = ToolName(name, namespace, custom=True)
    chat.append({"type": "function", "function": function})


def _format_hint(tool: dict[str, Any]) -> str:
    """What a custom tool's ``format`` asks of its input, for the model to read."""
    fmt = tool.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar":
        definition = fmt.get("definition")
        syntax = fmt.get("syntax")
        if isinstance(definition, str) and isinstance(syntax, str):
            return f"The input, following this {syntax} grammar:\n{definition}"
    return "The input, free-form text."


def tool_choice(value: Any, names: dict[str, ToolName], dropped: list[str]) -> Any:
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        return value
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("function", "custom"):
        assert isinstance(value, dict)
        name = value.get("name")
        namespace = value.get("namespace")
        if not isinstance(name, str) or not (namespace is None or isinstance(namespace, str)):
            raise InvalidRequest("tool_choice.name must be a string", param="tool_choice.name")
        upstream = flat_name(name, namespace)
        if upstream not in names:
            raise InvalidRequest(
                f"tool_choice names {upstream!r}, which is not among the tools",
                param="tool_choice.name",
            )
        return {"type": "function", "function": {"name": upstream}}
    if kind in DROPPED_TOOLS and kind in dropped:
        logger.warning("responses: tool_choice %s names a dropped tool; using auto", kind)
        return "auto"
    raise InvalidRequest(
        "tool_choice must be auto, none, required or a function/custom tool by name",
        param="tool_choice",
    )


def echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool as the response object lists it: a function's optional fields given (null)."""
    if tool.get("type") != "function":
        return tool
    return {"description": None, "parameters": None, "strict": None, **tool}
