"""The spec validator accepts real-shaped objects and rejects broken ones (it is not a no-op),
and the vendored subset of the spec it loads is complete and what the script writes."""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.support import openapi_spec, vendor_openapi
from tests.support.openapi_spec import validate

CHUNK: dict[str, Any] = {
    "id": "chatcmpl-123",
    "object": "chat.completion.chunk",
    "created": 1694268190,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "Hello"},
            "logprobs": None,
            "finish_reason": None,
        }
    ],
}
COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1677652288,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
}
MODEL: dict[str, Any] = {
    "id": "gpt-4o-mini",
    "object": "model",
    "created": 1686935002,
    "owned_by": "openai",
}
MODELS: dict[str, Any] = {"object": "list", "data": [MODEL, {**MODEL, "id": "other"}]}
ERROR: dict[str, Any] = {
    "error": {"message": "Bad key", "type": "invalid_request_error", "param": None, "code": None}
}
TEXT_COMPLETION: dict[str, Any] = {
    "id": "cmpl-123",
    "object": "text_completion",
    "created": 1589478378,
    "model": "gpt-3.5-turbo-instruct",
    "choices": [{"text": "Hi", "index": 0, "logprobs": None, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}
EMBEDDINGS: dict[str, Any] = {
    "object": "list",
    "data": [{"object": "embedding", "embedding": [0.0023, -0.0093], "index": 0}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}
RESPONSE: dict[str, Any] = {
    "id": "resp_123",
    "object": "response",
    "created_at": 1741476542,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "model": "gpt-4o-mini",
    "output": [
        {
            "type": "message",
            "id": "msg_123",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi", "annotations": [], "logprobs": []}],
        }
    ],
    "parallel_tool_calls": True,
    "metadata": {},
    "tool_choice": "auto",
    "tools": [],
    "temperature": 1.0,
    "top_p": 1.0,
}
TEXT_DELTA: dict[str, Any] = {
    "type": "response.output_text.delta",
    "item_id": "msg_123",
    "output_index": 0,
    "content_index": 0,
    "delta": "Hi",
    "sequence_number": 1,
    "logprobs": [],
}
EQ: dict[str, Any] = {"type": "eq", "key": "lang", "value": "en"}
# a file_search filter: CompoundFilter nests itself through a 2019-09 $recursiveRef
COMPOUND: dict[str, Any] = {"type": "or", "filters": [EQ, {"type": "and", "filters": [EQ, EQ]}]}
VALID = {
    "CreateChatCompletionStreamResponse": CHUNK,
    "CreateChatCompletionResponse": COMPLETION,
    "Model": MODEL,
    "ListModelsResponse": MODELS,
    "ErrorResponse": ERROR,
    # vendored for the next surfaces: the roots work, not just the five in use
    "CreateCompletionResponse": TEXT_COMPLETION,
    "CreateEmbeddingResponse": EMBEDDINGS,
    "Response": RESPONSE,
    "ResponseStreamEvent": TEXT_DELTA,
}


def changed(obj: dict[str, Any], path: tuple[Any, ...], value: Any = ...) -> dict[str, Any]:
    """A deep copy with ``path`` set to ``value`` (or deleted when ``value`` is omitted)."""
    out = copy.deepcopy(obj)
    target: Any = out
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


@pytest.mark.parametrize("name", sorted(VALID))
def test_accepts_valid(name: str) -> None:
    validate(name, VALID[name])


@pytest.mark.parametrize(
    ("name", "instance"),
    [
        pytest.param(
            "CreateChatCompletionStreamResponse", {**CHUNK, "usage": None}, id="usage-null"
        ),
        pytest.param(
            "CreateChatCompletionStreamResponse",
            {**CHUNK, "choices": [], "usage": COMPLETION["usage"]},
            id="usage-chunk",
        ),
        pytest.param(
            "CreateChatCompletionStreamResponse",
            changed(CHUNK, ("choices", 0, "finish_reason"), "stop"),
            id="finish-stop",
        ),
        pytest.param(
            "CreateChatCompletionStreamResponse",
            changed(CHUNK, ("choices", 0, "logprobs")),
            id="no-logprobs",
        ),
        pytest.param(
            "CreateChatCompletionStreamResponse",
            changed(
                CHUNK,
                ("choices", 0, "delta"),
                {"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]},
            ),
            id="tool-call-delta",
        ),
        pytest.param(
            "CreateChatCompletionResponse",
            changed(
                COMPLETION,
                ("choices", 0, "message"),
                {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        },
                        {"id": "c2", "type": "custom", "custom": {"name": "g", "input": "x"}},
                    ],
                },
            ),
            id="tool-calls-oneOf-with-discriminator",
        ),
        pytest.param("Model", {**MODEL, "shutdown_date": None}, id="model-shutdown-null"),
        pytest.param("CompoundFilter", COMPOUND, id="recursive-ref"),
    ],
)
def test_accepts_nullable_and_variants(name: str, instance: object) -> None:
    validate(name, instance)


@pytest.mark.parametrize(
    ("name", "instance", "needle"),
    [
        (
            "CreateChatCompletionStreamResponse",
            changed(CHUNK, ("choices",)),
            "'choices' is a required",
        ),
        ("CreateChatCompletionStreamResponse", {**CHUNK, "object": "chat.completion"}, "$.object"),
        (
            "CreateChatCompletionStreamResponse",
            changed(CHUNK, ("choices", 0, "finish_reason"), "done"),
            "finish_reason",
        ),
        (
            "CreateChatCompletionStreamResponse",
            changed(CHUNK, ("choices", 0, "index"), "0"),
            "'0' is not of type 'integer'",
        ),
        (
            "CreateChatCompletionStreamResponse",
            changed(CHUNK, ("choices", 0, "delta", "role"), "bot"),
            "role",
        ),
        (
            "CreateChatCompletionStreamResponse",
            {**CHUNK, "usage": {"prompt_tokens": 1}},
            "completion_tokens",
        ),
        ("CreateChatCompletionStreamResponse", {**CHUNK, "created": None}, "$.created"),
        (
            "CreateChatCompletionResponse",
            {**COMPLETION, "object": "chat.completion.chunk"},
            "$.object",
        ),
        (
            "CreateChatCompletionResponse",
            changed(COMPLETION, ("choices", 0, "message", "refusal")),
            "'refusal' is a required",
        ),
        (
            "CreateChatCompletionResponse",
            changed(COMPLETION, ("choices", 0, "finish_reason"), None),
            "finish_reason",
        ),
        (
            "CreateChatCompletionResponse",
            changed(
                COMPLETION, ("choices", 0, "message", "tool_calls"), [{"id": "c", "type": "bogus"}]
            ),
            "tool_calls",
        ),
        ("Model", changed(MODEL, ("owned_by",)), "'owned_by' is a required"),
        ("Model", {**MODEL, "object": "models"}, "$.object"),
        ("ListModelsResponse", {**MODELS, "object": "model"}, "$.object"),
        ("ListModelsResponse", {"object": "list", "data": [changed(MODEL, ("id",))]}, "$.data[0]"),
        ("ErrorResponse", {"error": {"message": "x", "type": "y"}}, "'param' is a required"),
        ("ErrorResponse", {"detail": "nope"}, "'error' is a required"),
        ("CreateEmbeddingResponse", changed(EMBEDDINGS, ("data", 0, "embedding"), "x"), "$.data"),
        ("Response", {**RESPONSE, "object": "chat.completion"}, "$.object"),
        ("ResponseStreamEvent", {**TEXT_DELTA, "type": "response.bogus"}, "type"),
        (
            "CompoundFilter",
            changed(COMPOUND, ("filters", 1, "filters", 0, "type"), "bogus"),
            "$.filters[1]",
        ),
    ],
)
def test_rejects_broken(name: str, instance: object, needle: str) -> None:
    with pytest.raises(AssertionError, match=f"not a valid {name}") as caught:
        validate(name, instance)
    assert needle in str(caught.value)


def test_unknown_schema_name_is_an_error() -> None:
    with pytest.raises(KeyError) as caught:
        validate("NoSuchSchema", {})
    if vendor_openapi.HEADER in openapi_spec.load_spec():  # not OPENAI_OPENAPI_SPEC's
        assert "add it to ROOTS in tests/support/vendor_openapi.py" in str(caught.value)
    assert "'NoSuchSchema'" in str(caught.value)


def test_rewritten_schemas_are_valid_2020_12() -> None:
    """Every schema reachable from the vendored roots is a valid Draft 2020-12 schema after the
    rewrite, and no OpenAPI-only ``nullable`` is left in them."""
    schemas = openapi_spec.load_spec()["components"]["schemas"]
    seen: set[str] = set()
    todo = list(vendor_openapi.ROOTS)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        jsonschema.Draft202012Validator.check_schema(schemas[name])
        text = repr(schemas[name])
        assert "'nullable': " not in text, name
        todo += [ref.split("'")[0] for ref in text.split("#/components/schemas/")[1:]]
    assert len(seen) > len(vendor_openapi.ROOTS)  # the walk really followed $refs


def test_spec_path_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENAI_OPENAPI_SPEC", str(tmp_path / "x.yaml"))
    assert openapi_spec.spec_path() == tmp_path / "x.yaml"
    assert openapi_spec.source() == tmp_path / "x.yaml"
    monkeypatch.delenv("OPENAI_OPENAPI_SPEC")
    assert openapi_spec.spec_path().parts[-3:] == ("shared", "openai-openapi", "openapi.yaml")
    assert openapi_spec.source() == vendor_openapi.VENDORED


# The vendored subset: tests/support/openai_schemas.json


def vendored() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(vendor_openapi.VENDORED.read_bytes())
    return doc


def test_vendored_closure_is_complete_and_minimal() -> None:
    """Every ``$ref`` names a vendored schema (none dangles), every root is there, and every
    schema is reachable from a root (nothing extra)."""
    schemas = vendored()["components"]["schemas"]
    for name, schema in schemas.items():
        for ref in vendor_openapi.refs(schema):
            assert ref.startswith("#/components/schemas/"), (name, ref)
            assert ref.removeprefix("#/components/schemas/") in schemas, (name, ref)
    assert set(vendor_openapi.ROOTS) <= set(schemas)
    assert vendor_openapi.closure(schemas, vendor_openapi.ROOTS) == schemas


def test_vendored_header() -> None:
    doc = vendored()
    header = doc[vendor_openapi.HEADER]
    assert header["roots"] == list(vendor_openapi.ROOTS), "ROOTS changed: re-run the script"
    assert datetime.date.fromisoformat(header["generated"])
    assert header["license"]["name"] == "MIT"
    assert "Copyright (c) OpenAI" in header["license"]["text"]
    source = header["source"]
    assert source["repository"] == "https://github.com/openai/openai-openapi"
    assert re.fullmatch("[0-9a-f]{64}", source["sha256"])
    assert re.fullmatch("[0-9a-f]{40}", source["git_blob"])
    assert source["info_version"]
    assert set(doc) == {vendor_openapi.HEADER, "components"}
    assert not any(
        key in vendor_openapi.DROPPED or key.startswith("x-")
        for key in re.findall(r'"([^"]+)":', json.dumps(doc["components"]))
        if key not in {"description", "title"}  # also property names
    )


def test_vendored_file_is_canonical() -> None:
    """The file is exactly its own rendering: compact, sorted, one schema per line."""
    text = vendor_openapi.VENDORED.read_text()
    assert vendor_openapi.render(json.loads(text)) == text
    assert len(text.encode()) < 200_000  # small: if it grows past this, reconsider the roots


@pytest.mark.skipif(
    not vendor_openapi.SHARED_SPEC.is_file(),
    reason=f"the full spec is not at {vendor_openapi.SHARED_SPEC}",
)
def test_vendored_file_is_what_the_script_writes() -> None:
    """The vendored file is what ``vendor_openapi.py`` makes of the shared full spec now (but
    for the date), so it is neither stale nor edited by hand."""
    text = vendor_openapi.VENDORED.read_text()
    generated = json.loads(text)[vendor_openapi.HEADER]["generated"]
    doc = vendor_openapi.build(vendor_openapi.SHARED_SPEC, generated=generated)
    assert json.loads(text) == doc, (
        "tests/support/openai_schemas.json is stale: run "
        "`.venv/bin/python tests/support/vendor_openapi.py`"
    )
    assert text == vendor_openapi.render(doc)


def test_script_writes_and_then_leaves_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The script end to end, on a tiny spec: the closure, the header, the idempotent rerun."""
    spec = {
        "openapi": "3.1.0",
        "info": {"version": "9.9.9", "license": {"name": "MIT", "identifier": "MIT"}},
        "components": {
            "schemas": {
                "Root": {
                    "type": "object",
                    "description": "dropped",
                    "x-oaiMeta": {"dropped": True},
                    "properties": {
                        "description": {"$ref": "#/components/schemas/Leaf"},
                        "title": {"type": "string", "title": "dropped", "example": "dropped"},
                    },
                },
                "Leaf": {"type": "string", "enum": ["a"], "default": "a"},
                "Unused": {"type": "integer"},
            }
        },
    }
    spec_file = tmp_path / "openapi.yaml"
    spec_file.write_text(json.dumps(spec))  # JSON is YAML
    out = tmp_path / "out.json"
    argv = ["--spec", str(spec_file), "--out", str(out)]
    assert vendor_openapi.main(argv, roots=["Root"]) == 0
    doc = json.loads(out.read_text())
    assert doc["components"]["schemas"] == {
        "Leaf": {"type": "string", "enum": ["a"], "default": "a"},
        "Root": {
            "type": "object",
            "properties": {
                "description": {"$ref": "#/components/schemas/Leaf"},
                "title": {"type": "string"},
            },
        },
    }
    header = doc[vendor_openapi.HEADER]
    assert header["source"]["info_version"] == "9.9.9"
    assert header["source"]["sha256"] == hashlib.sha256(spec_file.read_bytes()).hexdigest()
    assert header["license"]["text"] == vendor_openapi.MIT_LICENSE
    out.write_text(out.read_text().replace(header["generated"], "2000-01-01"))
    before = out.read_text()
    assert vendor_openapi.main(argv, roots=["Root"]) == 0
    assert out.read_text() == before  # same spec, same roots: not rewritten for a new date
    assert "up to date" in capsys.readouterr().out
