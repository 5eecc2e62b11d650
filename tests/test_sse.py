"""The SSE reader: every legal framing gives the same events, however the bytes are split."""

from __future__ import annotations

import pytest

from providers.sse import SSEDecoder

STREAM = (
    b'data: {"a":1}\n\n'
    b": keep-alive comment\n\n"
    b"\n"
    b'event: message\nid: 7\nretry: 100\ndata:{"b":2}\n\n'
    b"data: line one\ndata: line two\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [b'{"a":1}', b'{"b":2}', b"line one\nline two", b"[DONE]"]


def decode(parts: list[bytes]) -> list[bytes]:
    decoder = SSEDecoder()
    events: list[bytes] = []
    for part in parts:
        events += decoder.feed(part)
    return events + decoder.flush()


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_any_line_ending_split_anywhere(ending: bytes) -> None:
    raw = STREAM.replace(b"\n", ending)
    assert decode([raw]) == EXPECTED
    for cut in range(len(raw)):
        assert decode([raw[:cut], raw[cut:]]) == EXPECTED, cut
    assert decode([raw[i : i + 1] for i in range(len(raw))]) == EXPECTED


def test_a_final_event_without_blank_line_still_counts() -> None:
    assert decode([b'data: {"a":1}']) == [b'{"a":1}']
    assert decode([b'data: {"a":1}\n']) == [b'{"a":1}']


def test_empty_data_and_only_comments() -> None:
    assert decode([b": only a comment\n\n: another\n\n"]) == []
    assert decode([b"data:\n\n"]) == [b""]
