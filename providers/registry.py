"""Provider TYPE -> its spec: the built-in types, and plugins found through entry points.

A distribution adds a TYPE by declaring an entry point in the group ``llm_gateway.providers``
whose name is the TYPE and whose object is a :class:`providers.spec.ProviderType`::

    [project.entry-points."llm_gateway.providers"]
    scripted = "llm_gateway_scripted:SPEC"

Plugins load lazily: :func:`provider_type` imports only the entry point of the TYPE it is asked
for, so a broken plugin that no provider uses costs nothing. A plugin cannot replace a built-in
TYPE, and two distributions declaring one TYPE is an error naming both; both are refused only
when that TYPE is configured. Every failure is a :class:`PluginError` (a ``KeyError``, as for an
unknown TYPE) whose message is one line naming the TYPE, the distribution and its version.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from providers import anthropic, echo, gemini, openai_compat
from providers.spec import CONTRACT_VERSION, ProviderType

GROUP = "llm_gateway.providers"

BUILTIN_TYPES: dict[str, ProviderType] = {
    spec.name: spec for spec in (echo.SPEC, openai_compat.SPEC, anthropic.SPEC, gemini.SPEC)
}

_loaded: dict[str, ProviderType] = {}  # plugins imported so far
_unshadowed: set[str] = set()  # built-ins no installed distribution claims


class PluginError(KeyError):
    """A TYPE that cannot be used; ``str()`` is the one-line message (no KeyError quotes)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """One row of :func:`list_types`. ``note`` says why a declared plugin would be refused."""

    name: str
    kind: Literal["built-in", "plugin"]
    distribution: str
    version: str
    note: str = ""


def provider_type(name: str) -> ProviderType:
    """The TYPE called ``name``: a built-in, or the one plugin declaring it, loaded now.

    Raises :class:`PluginError` when there is no such TYPE, when a plugin declares a built-in's
    name, when two distributions declare it, or when the plugin fails to import or is not a
    spec of this gateway's contract.
    """
    builtin = BUILTIN_TYPES.get(name)
    if builtin is not None:
        if name not in _unshadowed:
            declared = list(importlib.metadata.entry_points(group=GROUP, name=name))
            if declared:
                raise PluginError(
                    f"provider type {name!r} is built in, and {_who(declared[0])} also declares "
                    "it: a plugin cannot replace a built-in type; uninstall that distribution "
                    "or have it use another name"
                )
            _unshadowed.add(name)
        return builtin
    spec = _loaded.get(name)
    if spec is not None:
        return spec
    declared = list(importlib.metadata.entry_points(group=GROUP, name=name))
    if not declared:
        known = ", ".join(sorted({*BUILTIN_TYPES, *_plugin_names()}))
        raise PluginError(f"unknown provider type {name!r} (known: {known})")
    if len(declared) > 1:
        who = " and ".join(sorted(_who(ep) for ep in declared))
        raise PluginError(
            f"provider type {name!r} is declared by more than one distribution ({who}): "
            "uninstall all but one"
        )
    spec = _loaded[name] = _load(declared[0])
    return spec


def list_types() -> list[TypeInfo]:
    """Every built-in TYPE and every declared plugin entry point, without importing plugins."""
    rows = [
        TypeInfo(name, "built-in", "llm-gateway", _gateway_version())
        for name in sorted(BUILTIN_TYPES)
    ]
    declared = list(importlib.metadata.entry_points(group=GROUP))
    counts: dict[str, int] = {}
    for ep in declared:
        counts[ep.name] = counts.get(ep.name, 0) + 1
    for ep in sorted(declared, key=lambda ep: (ep.name, _dist(ep)[0])):
        note = ""
        if ep.name in BUILTIN_TYPES:
            note = "refused: a built-in type has this name"
        elif counts[ep.name] > 1:
            note = "refused: another distribution declares this type"
        dist, version = _dist(ep)
        rows.append(TypeInfo(ep.name, "plugin", dist, version, note))
    return rows


def clear_cache() -> None:
    """Forget loaded plugins and importlib's view of installed distributions (for tests)."""
    _loaded.clear()
    _unshadowed.clear()
    importlib.invalidate_caches()


def _load(ep: importlib.metadata.EntryPoint) -> ProviderType:
    failed = f"provider type {ep.name!r} from {_who(ep)} failed to load"
    try:
        obj = ep.load()
    except Exception as exc:
        raise PluginError(f"{failed}: {_one_line(exc)}") from exc
    problem = spec_problem(obj, ep.name)
    if problem:
        raise PluginError(f"{failed}: {problem}")
    assert isinstance(obj, ProviderType)
    return obj


def spec_problem(obj: object, name: str) -> str:
    """What makes ``obj`` unfit to be the TYPE ``name`` of this gateway ("" when nothing)."""
    if not isinstance(obj, ProviderType):
        return f"it is a {type(obj).__name__}, not a providers.spec.ProviderType"
    if obj.contract_version != CONTRACT_VERSION:
        return (
            f"it was written for provider contract version {obj.contract_version!r}, and this "
            f"gateway speaks version {CONTRACT_VERSION}; install a release of the plugin made "
            "for this gateway"
        )
    if obj.name != name:
        return f"its spec is named {obj.name!r}, not {name!r} as its entry point says"
    if not (isinstance(obj.options, type) and issubclass(obj.options, BaseModel)):
        return "its options is not a pydantic model class"
    if not callable(obj.create):
        return "its create is not callable"
    return ""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _dist(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    """The name and version of the distribution declaring ``ep``."""
    if ep.dist is None:  # only for entry points made by hand
        return "?", "?"
    return ep.dist.name, ep.dist.version


def _who(ep: importlib.metadata.EntryPoint) -> str:
    name, version = _dist(ep)
    return f"{name} {version}" if ep.dist is not None else "an unknown distribution"


def _plugin_names() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group=GROUP)}


def _gateway_version() -> str:
    try:
        return importlib.metadata.version("llm-gateway")
    except importlib.metadata.PackageNotFoundError:
        return "?"
