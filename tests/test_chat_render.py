"""The chat surface's rendering: SSE chunks and the aggregated completion."""

from __future__ import annotations

import orjson

from gateway.surfaces.chat_render import Aggregator, ChunkRenderer
from providers.base import Chunk, Delta, ToolCallDelta, Usage
from tests.support.openapi_spec import validate


def _aggregate(*chunks: Chunk) -> dict[str, object]:
    aggregator = Aggregator()
    for chunk in chunks:
        aggregator.add(chunk)
    completion = aggregator.completion(renderer=ChunkRenderer(model="p/m"))
    validate("CreateChatCompletionResponse", completion)
    return completion


def test_parallel_tool_calls_aggregate_by_their_index() -> None:
    completion = _aggregate(
        Chunk([Delta(tool_calls=[ToolCallDelta(0, id="c0", name="get", arguments="")])]),
        Chunk([Delta(tool_calls=[ToolCallDelta(1, id="c1", name="put", arguments='{"a"')])]),
        Chunk([Delta(tool_calls=[ToolCallDelta(0, arguments='{"x": 1}')])]),
        Chunk([Delta(tool_calls=[ToolCallDelta(1, arguments=": 2}")])]),
        Chunk([Delta(finish_reason="tool_calls")]),
    )
    message = completion["choices"][0]["message"]  # type: ignore[index]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {"id": "c0", "type": "function", "function": {"name": "get", "arguments": '{"x": 1}'}},
        {"id": "c1", "type": "function", "function": {"name": "put", "arguments": '{"a": 2}'}},
    ]
    assert completion["choices"][0]["finish_reason"] == "tool_calls"  # type: ignore[index]


def test_legacy_function_call_refusal_reasoning_and_logprobs_aggregate() -> None:
    token = {"token": "a", "logprob": -0.1, "bytes": [97], "top_logprobs": []}
    completion = _aggregate(
        Chunk(
            [Delta(reasoning="Let me ", extra={"function_call": {"name": "f", "arguments": ""}})]
        ),
        Chunk([Delta(reasoning="think.", extra={"function_call": {"arguments": "{}"}})]),
        Chunk([Delta(refusal="No", logprobs={"content": [token], "refusal": None})]),
        Chunk([Delta(refusal=".", logprobs={"content": [token], "refusal": None})]),
        Chunk(
            [Delta(finish_reason="stop")], usage=Usage(3, 4, cached_tokens=1, reasoning_tokens=2)
        ),
    )
    choice = completion["choices"][0]  # type: ignore[index]
    message = choice["message"]
    assert message["reasoning_content"] == "Let me think."
    assert message["function_call"] == {"name": "f", "arguments": "{}"}
    assert message["refusal"] == "No."
    assert choice["logprobs"]["content"] == [token, token]
    assert completion["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 1},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }


def test_choices_aggregate_separately_and_in_order() -> None:
    completion = _aggregate(
        Chunk([Delta(choice=1, text="b"), Delta(choice=0, text="a")]),
        Chunk([Delta(choice=0, finish_reason="stop"), Delta(choice=1, finish_reason="length")]),
    )
    choices = completion["choices"]
    assert [c["message"]["content"] for c in choices] == ["a", "b"]  # type: ignore[attr-defined]
    assert [c["finish_reason"] for c in choices] == ["stop", "length"]  # type: ignore[attr-defined]


def test_stream_chunks_carry_the_role_once_and_reasoning_as_reasoning_content() -> None:
    renderer = ChunkRenderer(model="p/m")
    frames = [
        renderer.render(Chunk([Delta(reasoning="hm")])),
        renderer.render(Chunk([Delta(text="Hi", tool_calls=[ToolCallDelta(0, id="c", name="f")])])),
        renderer.render(Chunk([Delta(tool_calls=[ToolCallDelta(0, arguments="{}")])])),
        renderer.render(Chunk([Delta(finish_reason="tool_calls")])),
        renderer.render_usage(Usage(1, 2)),
    ]
    events = [orjson.loads(f.removeprefix(b"data: ")) for f in frames]
    for event in events:
        validate("CreateChatCompletionStreamResponse", event)
    deltas = [e["choices"][0]["delta"] if e["choices"] else None for e in events]
    assert deltas[0] == {"role": "assistant", "content": "", "reasoning_content": "hm"}
    assert deltas[1] == {
        "content": "Hi",
        "tool_calls": [
            {"index": 0, "id": "c", "type": "function", "function": {"arguments": "", "name": "f"}}
        ],
    }
    assert deltas[2] == {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}
    assert events[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert renderer.render(Chunk([], usage=Usage(1, 1))) == b""


def test_reasoning_signatures_reach_the_client_to_be_sent_back() -> None:
    renderer = ChunkRenderer(model="p/m")
    frame = renderer.render(Chunk([Delta(reasoning="hm", reasoning_signature="sig-1")]))
    delta = orjson.loads(frame.removeprefix(b"data: "))["choices"][0]["delta"]
    assert (delta["reasoning_content"], delta["reasoning_signature"]) == ("hm", "sig-1")
    completion = _aggregate(
        Chunk([Delta(reasoning="Let me think.")]),
        Chunk([Delta(reasoning_signature="EqQBCgIYAhIM")]),
        Chunk([Delta(redacted_reasoning="opaque")]),
        Chunk([Delta(text="Done.", finish_reason="stop")]),
    )
    message = completion["choices"][0]["message"]  # type: ignore[index]
    assert message["reasoning_content"] == "Let me think."
    assert message["reasoning_signature"] == "EqQBCgIYAhIM"
    assert message["redacted_reasoning"] == "opaque"


def test_plain_text_chunks_render_as_the_general_path_would() -> None:
    """Text of a started choice is framed by hand (the hot path); it must be the same JSON the
    general path gives, for any choice index, with and without a system fingerprint."""
    renderer = ChunkRenderer(model="p/m")
    renderer.render(Chunk([Delta(0, text=""), Delta(3, text="")]))  # both choices started
    for chunk in (
        Chunk([Delta(0, text='a "quoted"\n\u2028 text')]),
        Chunk([Delta(3, text="x")], system_fingerprint="fp_1"),
    ):
        event = orjson.loads(renderer.render(chunk).removeprefix(b"data: "))
        validate("CreateChatCompletionStreamResponse", event)
        d = chunk.deltas[0]
        assert event["choices"] == [
            {
                "index": d.choice,
                "delta": {"content": d.text},
                "finish_reason": None,
                "logprobs": None,
            }
        ]
        assert event.get("system_fingerprint") == chunk.system_fingerprint
        assert event["model"] == "p/m"
