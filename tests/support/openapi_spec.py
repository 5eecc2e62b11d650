"""Validate objects against the official OpenAI OpenAPI spec's component schemas.

The spec is OpenAPI 3.1 but still carries OpenAPI 3.0 idioms that a JSON Schema validator
would misread; the loaded copy is rewritten once, before any validation:

* ``nullable: true`` (3.0) -> ``{"anyOf": [{"type": "null"}, <the rest>]}``; a plain
  ``type: [.., "null"]`` would not do, because ``enum`` (e.g. ``finish_reason``) and
  ``$ref`` siblings (e.g. the chunk's ``usage``) would still reject ``null``.
  ``nullable: false`` is dropped.
* boolean ``exclusiveMinimum``/``exclusiveMaximum`` (3.0) -> the 2020-12 numeric form.
* ``discriminator`` is left alone: in OpenAPI it is only a hint for picking a ``oneOf``
  branch; the ``oneOf`` itself still must match exactly one branch, which is stricter.
  ``x-oai*``/``x-stainless-*``, ``example``, ``deprecated``: annotations, ignored.
* ``format`` is not asserted (``unixtime`` is not a JSON Schema format anyway).

The spec lives at ``<workspace>/shared/openai-openapi/openapi.yaml`` next to the repo;
``OPENAI_OPENAPI_SPEC`` overrides the path.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, cast

import jsonschema
import referencing
import yaml
from referencing.jsonschema import DRAFT202012

__all__ = ["component_schema", "errors", "load_spec", "spec_path", "validate"]

_BASE_URI = "urn:openai-openapi"


def spec_path() -> Path:
    override = os.environ.get("OPENAI_OPENAPI_SPEC")
    if override:
        return Path(override)
    # tests/support/openapi_spec.py -> parents[2] is the repo, parents[3] the workspace
    return Path(__file__).resolve().parents[3] / "shared" / "openai-openapi" / "openapi.yaml"


def _fix(node: Any) -> Any:
    """Rewrite OpenAPI 3.0-isms, recursively (see the module docstring)."""
    if isinstance(node, list):
        return [_fix(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _fix(value) for key, value in node.items()}
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(out.get(exclusive), bool) and out.pop(exclusive) and bound in out:
            out[exclusive] = out.pop(bound)
    nullable = out.get("nullable")
    if isinstance(nullable, bool):
        del out["nullable"]
        if nullable:
            return {"anyOf": [{"type": "null"}, out]}
    return out


@functools.cache
def load_spec() -> dict[str, Any]:
    """The whole spec, parsed (C loader when available: it is ~3 MB) and rewritten, cached."""
    path = spec_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"OpenAI OpenAPI spec not found at {path}; set OPENAI_OPENAPI_SPEC to its path"
        )
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open("rb") as handle:
        spec = yaml.load(handle, Loader=loader)
    return cast("dict[str, Any]", _fix(spec))


@functools.cache
def _registry() -> referencing.Registry[Any]:
    resource = DRAFT202012.create_resource(load_spec())
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(_BASE_URI, resource)
    return registry


def component_schema(schema_name: str) -> dict[str, Any]:
    """The (rewritten) ``#/components/schemas/<schema_name>``; KeyError if absent."""
    return cast("dict[str, Any]", load_spec()["components"]["schemas"][schema_name])


@functools.cache
def _validator(schema_name: str) -> Any:
    component_schema(schema_name)  # fail early, and clearly, on a wrong name
    ref = {"$ref": f"{_BASE_URI}#/components/schemas/{schema_name}"}
    return jsonschema.Draft202012Validator(ref, registry=_registry())


def _where(error: Any) -> str:
    return str(error.json_path)


def errors(schema_name: str, instance: object) -> list[str]:
    """Every validation error as ``"$.json.path: message"`` lines; empty if valid."""
    lines: list[str] = []
    for error in sorted(_validator(schema_name).iter_errors(instance), key=_where):
        lines.append(f"{_where(error)}: {error.message}")
        # for anyOf/oneOf: why each branch failed, which is usually the useful part
        lines.extend(f"    {_where(sub)}: {sub.message}" for sub in (error.context or [])[:8])
    return lines


def validate(schema_name: str, instance: object) -> None:
    """Assert that ``instance`` is a valid ``#/components/schemas/<schema_name>``."""
    problems = errors(schema_name, instance)
    if problems:
        listing = "\n".join(f"  {line}" for line in problems[:30])
        more = f"\n  ... and {len(problems) - 30} more" if len(problems) > 30 else ""
        raise AssertionError(f"not a valid {schema_name}:\n{listing}{more}")
