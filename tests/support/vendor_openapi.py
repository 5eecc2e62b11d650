"""Vendor the part of the OpenAI OpenAPI spec the tests validate against; run by hand.

    .venv/bin/python tests/support/vendor_openapi.py [--spec PATH] [--out PATH]

It reads the full spec (default: ``$OPENAI_OPENAPI_SPEC``, else
``<workspace>/shared/openai-openapi/openapi.yaml`` next to the repo), takes the component
schemas named in :data:`ROOTS`, follows every ``$ref`` from them transitively, and writes just
that closure to ``tests/support/openai_schemas.json``, shaped like the spec
(``{"components": {"schemas": {...}}}``) so that ``#/components/schemas/<name>`` references
resolve unchanged. The schemas are written as the spec has them, except that annotations
(:data:`DROPPED`: descriptions, titles, examples, ``x-*`` extensions) are left out: they
change no validation result and are most of the bytes. :mod:`tests.support.openapi_spec`
applies its OpenAPI-3.0 rewriting when it loads the file, as it does for a full spec.

The file is compact, sorted JSON, one schema per line so that a re-vendoring diffs by schema.
Its ``_vendored`` header records the source (the upstream repository, the spec's
``info.version``, the spec file's sha256 and git blob id - ``git log --all
--find-object=<blob>`` in a clone of the repository names the commit), the license, the date
and the roots. Re-running it on an unchanged spec with unchanged roots leaves the file alone.

Licence: the spec comes from https://github.com/openai/openai-openapi, whose LICENSE is MIT
(Copyright (c) OpenAI), as is the spec's own ``info.license``. The copy under ``shared/`` has
no LICENSE beside it, so the header carries the text of that repository's LICENSE, kept in
:data:`MIT_LICENSE`; when a LICENSE file sits next to the spec, its text is used instead.

To validate against a schema that is not vendored: add it to :data:`ROOTS` and re-run.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import yaml

__all__ = [
    "ROOTS",
    "SHARED_SPEC",
    "VENDORED",
    "build",
    "closure",
    "main",
    "read_spec",
    "refs",
    "render",
    "spec_path",
]

# tests/support/vendor_openapi.py -> parents[2] is the repo, parents[3] the workspace
SHARED_SPEC = Path(__file__).resolve().parents[3] / "shared" / "openai-openapi" / "openapi.yaml"
VENDORED = Path(__file__).resolve().with_name("openai_schemas.json")
UPSTREAM = "https://github.com/openai/openai-openapi"
SCHEMA_PREFIX = "#/components/schemas/"
HEADER = "_vendored"

ROOTS: tuple[str, ...] = (
    # validated by the tests today
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ErrorResponse",
    "ListModelsResponse",
    "Model",
    # for the next surfaces: Responses API, embeddings, legacy completions
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    "Response",
    "ResponseStreamEvent",
    # the Responses request: the tests' Codex-like bodies are checked to be valid ones
    "CreateResponse",
)

# Keywords that never change a validation result; dropped wherever a schema is expected.
DROPPED = frozenset({"description", "title", "example", "examples", "externalDocs"})
# Keywords whose value maps names to schemas (so its keys are names, not keywords).
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
# Keywords whose value is data, not a schema: copied as they are.
_DATA = frozenset({"const", "default", "enum", "discriminator", "required", "type"})

MIT_LICENSE = """\
The MIT License

Copyright (c) OpenAI (https://openai.com)

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in
all copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
THE SOFTWARE.
"""


def spec_path() -> Path:
    """The full spec: ``$OPENAI_OPENAPI_SPEC`` if set, else :data:`SHARED_SPEC`."""
    override = os.environ.get("OPENAI_OPENAPI_SPEC")
    return Path(override) if override else SHARED_SPEC


def read_spec(path: Path) -> dict[str, Any]:
    """The spec as parsed YAML (the C loader when available: the file is ~3 MB)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"OpenAI OpenAPI spec not found at {path}; set OPENAI_OPENAPI_SPEC or pass --spec"
        )
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open("rb") as handle:
        return cast("dict[str, Any]", yaml.load(handle, Loader=loader))


def _strip(schema: Any) -> Any:
    """``schema`` without the :data:`DROPPED` annotations, at any depth."""
    if isinstance(schema, list):
        return [_strip(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in DROPPED or key.startswith("x-"):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _strip(sub) for name, sub in value.items()}
        elif key in _DATA:
            out[key] = value
        else:
            out[key] = _strip(value)
    return out


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` string in ``node``, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def _target(ref: str) -> str:
    name = ref.removeprefix(SCHEMA_PREFIX)
    if name == ref or "/" in name:
        raise ValueError(f"$ref {ref!r} is not a whole component schema ({SCHEMA_PREFIX}<name>)")
    return name.replace("~1", "/").replace("~0", "~")


def closure(schemas: dict[str, Any], roots: Sequence[str]) -> dict[str, Any]:
    """The (stripped) schemas named in ``roots`` and all they reference, by name, sorted."""
    out: dict[str, Any] = {}
    todo = [(root, "the roots") for root in roots]
    while todo:
        name, referrer = todo.pop()
        if name in out:
            continue
        if name not in schemas:
            raise KeyError(f"{name!r} (from {referrer}) is not a component schema of the spec")
        out[name] = _strip(schemas[name])
        todo += [(_target(ref), name) for ref in refs(out[name])]
    return dict(sorted(out.items()))


def _git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _license(spec: dict[str, Any], path: Path) -> dict[str, str]:
    declared = spec.get("info", {}).get("license", {})
    name = str(declared.get("identifier") or declared.get("name") or "unknown")
    beside = path.with_name("LICENSE")
    if beside.is_file():
        return {"name": name, "text": beside.read_text(), "text_from": "the LICENSE beside it"}
    if name != "MIT":
        raise ValueError(
            f"{path} declares license {declared!r} and has no LICENSE file beside it; "
            "check its terms and update MIT_LICENSE in this script"
        )
    return {"name": name, "text": MIT_LICENSE, "text_from": f"{UPSTREAM}/blob/HEAD/LICENSE"}


def build(path: Path, roots: Sequence[str] = ROOTS, *, generated: str) -> dict[str, Any]:
    """The vendored document for the spec at ``path``; ``generated`` is the date to record."""
    data = path.read_bytes()
    spec = read_spec(path)
    header = {
        "about": (
            "The component schemas of the OpenAI OpenAPI spec named in roots, and every schema "
            "they $ref, transitively, without annotations (dropped). Written by "
            "tests/support/vendor_openapi.py: do not edit by hand, re-run it."
        ),
        "dropped": [*sorted(DROPPED), "x-*"],
        "generated": generated,
        "license": _license(spec, path),
        "roots": list(roots),
        "source": {
            "file": path.name,
            "git_blob": _git_blob(data),
            "info_version": spec["info"]["version"],
            "openapi": spec["openapi"],
            "repository": UPSTREAM,
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    }
    schemas = closure(spec["components"]["schemas"], roots)
    return {HEADER: header, "components": {"schemas": schemas}}


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def render(doc: dict[str, Any]) -> str:
    """``doc`` as compact sorted JSON: a header field or a schema per line."""
    header = ",\n".join(f"{_dump(k)}:{_dump(v)}" for k, v in sorted(doc[HEADER].items()))
    schemas = ",\n".join(f"{_dump(k)}:{_dump(v)}" for k, v in doc["components"]["schemas"].items())
    return f'{{"{HEADER}":{{\n{header}}},\n"components":{{"schemas":{{\n{schemas}}}}}}}\n'


def _undated(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, HEADER: {**doc[HEADER], "generated": None}}


def main(argv: Sequence[str] | None = None, *, roots: Sequence[str] = ROOTS) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--spec", type=Path, default=spec_path(), help="the full openapi.yaml")
    parser.add_argument("--out", type=Path, default=VENDORED, help="the JSON file to write")
    args = parser.parse_args(argv)
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    doc = build(args.spec, roots, generated=today)
    out: Path = args.out
    if out.is_file() and _undated(json.loads(out.read_bytes())) == _undated(doc):
        print(f"{out}: up to date (same spec, same roots); left alone")
        return 0
    text = render(doc)
    out.write_text(text)
    count = len(doc["components"]["schemas"])
    print(f"{out}: {count} schemas from {len(roots)} roots, {len(text.encode())} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
