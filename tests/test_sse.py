"""The SSE reader: every legal framing gives the same events, however the bytes are split."""

from __future__ import annotations

import pytest

from providers.sse import SSEDecoder, SSEError

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


def test_a_line_longer_than_the_limit_is_an_error_however_it_arrives() -> None:
    line = b": " + b"x" * 99  # 101 bytes, without its line end
    for parts in ([line], [line[:50], line[50:]], [line[:50], line[50:] + b"\n"]):
        decoder = SSEDecoder(max_event_bytes=100)
        with pytest.raises(SSEError, match="line is longer than 100 bytes"):
            for part in parts:
                decoder.feed(part)
    decoder = SSEDecoder(max_event_bytes=100)
    assert decoder.feed(line[:-1]) == []
    assert decoder.feed(b"\n") == []  # 100 bytes: at the limit, fine


def test_an_event_larger_than_the_limit_is_an_error_even_in_short_lines() -> None:
    assert decode([b"data: " + b"x" * 100 + b"\n\n"]) == [b"x" * 100]
    decoder = SSEDecoder(max_event_bytes=100)
    assert decoder.feed(b"data: " + b"x" * 100 + b"\n\n") == [b"x" * 100]
    assert decoder.feed(b"data: 123456789\n" * 10) == []  # 99 bytes joined
    with pytest.raises(SSEError, match="event is larger than 100 bytes"):
        decoder.feed(b"data: 123456789\n")


def test_a_long_line_fed_in_many_pieces_is_joined_once() -> None:
    decoder = SSEDecoder()
    pieces = [b"data: "] + [b"x" * 10] * 10_000
    for piece in pieces:
        assert decoder.feed(piece) == []
    assert len(decoder._pending) == len(pieces)  # kept as they came, not re-joined per read
    assert decoder.feed(b"\n\n") == [b"x" * 100_000]
