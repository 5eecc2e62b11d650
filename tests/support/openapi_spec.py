"""Validate objects against the official OpenAI OpenAPI spec's component schemas.

The spec is OpenAPI 3.1 but still carries OpenAPI 3.0 idioms that a JSON Schema validator
would misread; the loaded copy is rewritten once, before any validation:

* ``nullable: true`` (3.0) -> ``{"anyOf": [{"type": "null"}, <the rest>]}``; a plain
  ``type: [.., "null"]`` would not do, because ``enum`` (e.g. ``finish_reason``) and
  ``$ref`` siblings (e.g. the chunk's ``usage``) would still reject ``null``.
  ``nullable: false`` is dropped.
* boolean ``exclusiveMinimum``/``exclusiveMaximum`` (3.0) -> the 2020-12 numeric form.
* ``$recursiveAnchor: true`` with ``$recursiveRef: "#"`` inside (2019-09; ``CompoundFilter``
  nests itself so) -> a plain ``$ref`` to that component schema. 2020-12 does not know
  ``$recursiveRef``: it would match anything, and a ``oneOf`` holding it never match.
* ``discriminator`` is left alone: in OpenAPI it is only a hint for picking a ``oneOf``
  branch; the ``oneOf`` itself still must match exactly one branch, which is stricter.
  ``x-oai*``/``x-stainless-*``, ``example``, ``deprecated``: annotations, ignored.
* ``format`` is not asserted (``unixtime`` is not a JSON Schema format anyway).

What is loaded: ``tests/support/openai_schemas.json``, the part of the spec the tests use
(some root component schemas and everything they ``$ref``), vendored from the full spec by
``tests/support/vendor_openapi.py``, so the tests need nothing outside the repository. A
schema that is not vendored is an error that says how to add it. To validate against another
(e.g. a newer) full spec instead, point ``OPENAI_OPENAPI_SPEC`` at its ``openapi.yaml``.
:func:`spec_path` is where a full spec is looked for: that variable, else
``<workspace>/shared/openai-openapi/openapi.yaml`` next to the repo (the script's default).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, cast

import jsonschema
import referencing
from referencing.jsonschema import DRAFT202012

from tests.support import vendor_openapi
from tests.support.vendor_openapi import spec_path

__all__ = [
    "SchemaNotFound",
    "component_schema",
    "errors",
    "load_spec",
    "source",
    "spec_path",
    "validate",
]

_BASE_URI = "urn:openai-openapi"


class SchemaNotFound(KeyError):
    """A schema name that is not in the loaded (vendored or full) spec."""

    def __str__(self) -> str:  # KeyError's would repr() the message
        return str(self.args[0])


def source() -> Path:
    """The file :func:`load_spec` reads: ``$OPENAI_OPENAPI_SPEC`` if set, else the vendored JSON."""
    override = os.environ.get("OPENAI_OPENAPI_SPEC")
    return Path(override) if override else vendor_openapi.VENDORED


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


def _unrecurse(spec: dict[str, Any]) -> dict[str, Any]:
    """Rewrite 2019-09 recursive references as plain ``$ref`` (see the module docstring)."""

    def replace(node: Any, ref: str) -> Any:
        if isinstance(node, list):
            return [replace(item, ref) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: replace(value, ref) for key, value in node.items()}
        if out.get("$recursiveRef") == "#":
            del out["$recursiveRef"]
            out["$ref"] = ref
        return out

    schemas = spec["components"]["schemas"]
    for name, schema in schemas.items():
        if isinstance(schema, dict) and schema.get("$recursiveAnchor") is True:
            schema = {key: value for key, value in schema.items() if key != "$recursiveAnchor"}
            schemas[name] = replace(schema, f"#/components/schemas/{name}")
    return spec


@functools.cache
def load_spec() -> dict[str, Any]:
    """The spec (see :func:`source`), parsed and rewritten, cached: either the vendored
    ``{"_vendored": <header>, "components": {"schemas": ...}}`` or a whole OpenAPI document."""
    path = source()
    if path == vendor_openapi.VENDORED:
        spec = json.loads(path.read_bytes())
    else:
        spec = vendor_openapi.read_spec(path)
    return cast("dict[str, Any]", _fix(_unrecurse(spec)))


@functools.cache
def _registry() -> referencing.Registry[Any]:
    resource = DRAFT202012.create_resource(load_spec())
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(_BASE_URI, resource)
    return registry


def component_schema(schema_name: str) -> dict[str, Any]:
    """The (rewritten) ``#/components/schemas/<schema_name>``; :class:`SchemaNotFound`
    (a ``KeyError``) if the loaded spec does not have it."""
    spec = load_spec()
    schemas = cast("dict[str, Any]", spec["components"]["schemas"])
    if schema_name in schemas:
        return cast("dict[str, Any]", schemas[schema_name])
    if vendor_openapi.HEADER in spec:
        raise SchemaNotFound(
            f"schema {schema_name!r} is not vendored in {vendor_openapi.VENDORED.name}: if the "
            "OpenAI spec has it, add it to ROOTS in tests/support/vendor_openapi.py and re-run "
            "`.venv/bin/python tests/support/vendor_openapi.py`"
        )
    raise SchemaNotFound(f"schema {schema_name!r} is not in {source()}'s components/schemas")


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
