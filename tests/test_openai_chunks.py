"""OpenAI chat chunks -> the normalized stream: shapes checked once, tool calls renumbered."""

from __future__ import annotations

from typing import Any

import pytest

from providers.base import ToolCallDelta, Usage
from providers.errors import UpstreamProtocolError
from providers.openai_chunks import ChunkReader, completion_to_chunks


def _choice(delta: Any, finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish}


@pytest.mark.parametrize(
    "chunk",
    [
        {"choices": [1]},
        {"choices": "nope"},
        {"choices": [{"index": "0", "delta": {}}]},
        {"choices": [{"index": 0, "delta": "text"}]},
        {"choices": [{"index": 0, "delta": {"content": 7}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": {"a": 1}}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [3]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": "x"}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": 5}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": 3}]},
        {"choices": [{"index": 0, "delta": {}, "logprobs": [1]}]},
        {"choices": [], "usage": [1, 2]},
    ],
)
def test_a_parseable_chunk_of_the_wrong_shape_is_malformed_not_a_crash(chunk: Any) -> None:
    with pytest.raises(UpstreamProtocolError) as caught:
        ChunkReader().read(chunk)
    assert caught.value.code == "upstream_malformed"


@pytest.mark.parametrize("body", [{"choices": [1]}, {"choices": [{"message": []}]}, {"x": 1}])
def test_a_whole_completion_of_the_wrong_shape_is_malformed(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        completion_to_chunks(body)


def test_reasoning_arrives_as_reasoning_from_either_field_name() -> None:
    reader = ChunkReader()
    a = reader.read({"choices": [_choice({"reasoning_content": "deep"})]})
    b = reader.read({"choices": [_choice({"reasoning": "er"})]})
    assert (a.deltas[0].reasoning, b.deltas[0].reasoning) == ("deep", "er")


def test_servers_that_number_every_tool_call_zero_still_get_distinct_calls() -> None:
    reader = ChunkReader()
    deltas = []
    for call in (
        {"index": 0, "id": "a", "function": {"name": "f", "arguments": ""}},
        {"index": 0, "function": {"arguments": "{}"}},
        {"index": 0, "id": "b", "function": {"name": "g", "arguments": "{}"}},
        {"index": 5, "id": "c", "function": {"name": "h", "arguments": "{}"}},
    ):
        chunk = reader.read({"choices": [_choice({"tool_calls": [call]})]})
        deltas.extend(chunk.deltas[0].tool_calls or [])
    assert deltas == [
        ToolCallDelta(0, id="a", name="f", arguments=""),
        ToolCallDelta(0, arguments="{}"),
        ToolCallDelta(1, id="b", name="g", arguments="{}"),
        ToolCallDelta(2, id="c", name="h", arguments="{}"),
    ]


def test_arguments_sent_as_an_object_become_json_text() -> None:
    chunk = ChunkReader().read(
        {
            "choices": [
                _choice(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "a",
                                "function": {"name": "f", "arguments": {"x": 1}},
                            }
                        ]
                    }
                )
            ]
        }
    )
    assert chunk.deltas[0].tool_calls == [ToolCallDelta(0, id="a", name="f", arguments='{"x":1}')]


def test_finish_reasons_are_openais_words_and_the_raw_one_is_kept() -> None:
    reader = ChunkReader()
    end = reader.read({"choices": [{"index": 0, "delta": {}, "finish_reason": "eos"}]})
    assert (end.deltas[0].finish_reason, end.deltas[0].stop_reason) == ("stop", "eos")
    vllm = ChunkReader().read(
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "END"}]}
    )
    assert vllm.deltas[0].stop_reason == "END"


def test_usage_keeps_cached_and_reasoning_tokens() -> None:
    chunk = ChunkReader().read(
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "total_tokens": 15,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 3},
            },
        }
    )
    assert chunk.usage == Usage(10, 5, cached_tokens=4, reasoning_tokens=3)


def test_a_stream_is_finished_only_when_every_choice_finished() -> None:
    reader = ChunkReader()
    reader.read(
        {"choices": [_choice({"content": "a"}, index=0), _choice({"content": "b"}, index=1)]}
    )
    reader.read({"choices": [_choice({}, finish="stop", index=0)]})
    with pytest.raises(UpstreamProtocolError) as caught:
        reader.check_finished()
    assert caught.value.code == "upstream_truncated"
    reader.read({"choices": [_choice({}, finish="stop", index=1)]})
    reader.check_finished()


def test_unknown_delta_fields_pass_through_as_extra() -> None:
    chunk = ChunkReader().read(
        {
            "choices": [
                _choice(
                    {"role": "assistant", "content": "", "annotations": [{"type": "url_citation"}]}
                )
            ]
        }
    )
    assert chunk.deltas[0].extra == {"annotations": [{"type": "url_citation"}]}
    assert chunk.deltas[0].text == ""


def test_a_whole_completion_becomes_one_chunk_of_deltas_and_one_of_usage() -> None:
    chunks = completion_to_chunks(
        {
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "reasoning_content": "why",
                        "tool_calls": [
                            {
                                "id": "x",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        }
    )
    delta = chunks[0].deltas[0]
    assert delta.reasoning == "why" and delta.finish_reason == "tool_calls"
    assert delta.tool_calls == [ToolCallDelta(0, id="x", name="f", arguments="{}")]
    assert chunks[1].usage == Usage(1, 2)


@pytest.mark.parametrize(
    "choice",
    [
        _choice({"content": "hi"}),  # the common case, read on the fast path
        _choice({"content": "hi"}, index=2),
        _choice({"role": "assistant", "content": "hi"}),
        {"delta": {"content": "hi"}, "finish_reason": None},  # no index: choice 0
    ],
)
def test_a_text_chunk_reads_the_same_on_every_path(choice: dict[str, Any]) -> None:
    reader = ChunkReader()
    chunk = reader.read({"choices": [choice], "usage": None, "system_fingerprint": "fp"})
    assert [(d.choice, d.text, d.finish_reason) for d in chunk.deltas] == [
        (choice.get("index", 0), "hi", None)
    ]
    assert chunk.usage is None and chunk.system_fingerprint == "fp"
    reader.read({"choices": [_choice({}, "stop", index=9)]})
    with pytest.raises(UpstreamProtocolError, match="before it finished"):
        reader.check_finished()  # the text's choice started and never finished


@pytest.mark.parametrize("index", [-1, "0", None])
def test_a_text_chunk_with_a_bad_index_is_malformed(index: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        ChunkReader().read({"choices": [{"index": index, "delta": {"content": "x"}}]})
