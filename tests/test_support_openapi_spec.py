"""The spec validator accepts real-shaped objects and rejects broken ones (it is not a no-op)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.support import openapi_spec
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
VALID = {
    "CreateChatCompletionStreamResponse": CHUNK,
    "CreateChatCompletionResponse": COMPLETION,
    "Model": MODEL,
    "ListModelsResponse": MODELS,
    "ErrorResponse": ERROR,
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
    ],
)
def test_rejects_broken(name: str, instance: object, needle: str) -> None:
    with pytest.raises(AssertionError, match=f"not a valid {name}") as caught:
        validate(name, instance)
    assert needle in str(caught.value)


def test_unknown_schema_name_is_an_error() -> None:
    with pytest.raises(KeyError):
        validate("NoSuchSchema", {})


def test_rewritten_schemas_are_valid_2020_12() -> None:
    """Every schema reachable from the ones we use is a valid Draft 2020-12 schema after the
    rewrite, and no OpenAPI-only ``nullable`` is left in them."""
    schemas = openapi_spec.load_spec()["components"]["schemas"]
    seen: set[str] = set()
    todo = list(VALID)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        jsonschema.Draft202012Validator.check_schema(schemas[name])
        text = repr(schemas[name])
        assert "'nullable'" not in text, name
        todo += [ref.split("'")[0] for ref in text.split("#/components/schemas/")[1:]]
    assert len(seen) > len(VALID)  # the walk really followed $refs


def test_spec_path_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENAI_OPENAPI_SPEC", str(tmp_path / "x.yaml"))
    assert openapi_spec.spec_path() == tmp_path / "x.yaml"
    monkeypatch.delenv("OPENAI_OPENAPI_SPEC")
    assert openapi_spec.spec_path().parts[-3:] == ("shared", "openai-openapi", "openapi.yaml")
