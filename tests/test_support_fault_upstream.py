"""FaultUpstream, exercised with plain httpx against a real uvicorn in a thread.

One server for the module; every wait is bounded.  Raw bytes are checked where the point of
a behaviour is its framing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.fault_upstream import BEHAVIOURS, FaultUpstream, serve_fault_upstream
from tests.support.openapi_spec import validate
from tests.support.servers import serve_in_thread
from tests.support.sse_frames import parse_sse

pytestmark = pytest.mark.timeout(30)

TEXT = "a b  c"
PIECES = ["a ", "b  ", "c"]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FaultUpstream]]:
    with serve_fault_upstream() as served:
        yield served


@pytest.fixture
def url(server: tuple[str, FaultUpstream]) -> str:
    server[1].reset()
    return server[0]


@pytest.fixture
def upstream(server: tuple[str, FaultUpstream]) -> FaultUpstream:
    return server[1]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0, trust_env=False) as c:
        yield c


def chat(model: str, *, stream: bool = True, usage: bool = False, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": TEXT}],
        **extra,
    }
    if stream:
        body["stream"] = True
    if usage:
        body["stream_options"] = {"include_usage": True}
    return body


def stream_raw(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[int, list[bytes]]:
    """Status and the body exactly as the reads delivered it."""
    with client.stream("POST", f"{url}/chat/completions", json=body) as response:
        return response.status_code, list(response.iter_raw())


def payloads(raw: bytes) -> list[Any]:
    """Decoded SSE data: JSON objects, or the raw string where it is not JSON."""
    out: list[Any] = []
    for data in parse_sse(raw):
        try:
            out.append(json.loads(data))
        except ValueError:
            out.append(data)
    return out


def contents(events: list[Any]) -> list[str]:
    return [
        e["choices"][0]["delta"]["content"]
        for e in events
        if isinstance(e, dict) and e.get("choices") and "content" in e["choices"][0]["delta"]
    ]


def test_models_list(url: str, client: httpx.Client) -> None:
    response = client.get(f"{url}/models")
    assert response.status_code == 200
    validate("ListModelsResponse", response.json())
    assert [m["id"] for m in response.json()["data"]] == list(BEHAVIOURS)


def test_ok_stream_is_valid_openai(url: str, client: httpx.Client) -> None:
    status, reads = stream_raw(client, url, chat("ok", usage=True))
    assert status == 200
    events = payloads(b"".join(reads))
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        validate("CreateChatCompletionStreamResponse", event)
    assert contents(events) == PIECES
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    finish = events[-3]
    assert finish["choices"][0] == {
        "index": 0,
        "delta": {},
        "finish_reason": "stop",
        "logprobs": None,
    }
    assert events[-2]["choices"] == []
    # prompt_tokens: words of every message's text; completion_tokens: content chunks
    assert events[-2]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert len({e["id"] for e in events[:-1]}) == 1


def test_no_usage_chunk_unless_asked(url: str, client: httpx.Client) -> None:
    events = payloads(b"".join(stream_raw(client, url, chat("ok"))[1]))
    assert [e["choices"][0]["finish_reason"] for e in events[:-1]] == [None] * 3 + ["stop"]


@pytest.mark.parametrize(
    ("model", "must", "must_not"),
    [
        ("ok", b"\n\ndata: {", b"\r"),
        ("crlf", b"}\r\n\r\ndata: {", b"}\n"),
        ("cr", b"}\r\rdata: {", b"\n"),
        ("nospace", b"data:{", b"data: "),
        ("multiline", b'\ndata:  "object": "chat.completion.chunk",\n', b"\n\n\n"),
        ("comments", b": keep-alive\n\n\nevent: message\nid: ", b"\r"),
    ],
)
def test_framings(url: str, client: httpx.Client, model: str, must: bytes, must_not: bytes) -> None:
    raw = b"".join(stream_raw(client, url, chat(model, usage=True))[1])
    assert must in raw
    assert must_not not in raw
    events = payloads(raw)
    assert events[-1] == "[DONE]"
    assert contents(events) == PIECES
    for event in events[:-1]:
        validate("CreateChatCompletionStreamResponse", event)


def test_split_arrives_in_several_reads(url: str, client: httpx.Client) -> None:
    _, reads = stream_raw(client, url, chat("split"))
    events = payloads(b"".join(reads))
    assert contents(events) == PIECES
    assert events[-1] == "[DONE]"
    # 5 events, each written as 4 pieces 10 ms apart (1 byte, to mid-line, to before the
    # last "\n", the "\n"); typically 20 reads, but a busy client may coalesce some
    assert len(reads) > len(events), [len(r) for r in reads]


def test_non_stream_and_content_parts(url: str, client: httpx.Client) -> None:
    parts = [{"type": "text", "text": "x y"}, {"type": "image_url"}, {"type": "text", "text": "z"}]
    body = {"model": "crlf", "messages": [{"role": "user", "content": parts}]}
    response = client.post(f"{url}/chat/completions", json=body)
    assert response.status_code == 200
    validate("CreateChatCompletionResponse", response.json())
    assert response.json()["choices"][0]["message"]["content"] == "x y\nz"


def test_error_frame(url: str, client: httpx.Client) -> None:
    events = payloads(b"".join(stream_raw(client, url, chat("error-frame:1"))[1]))
    assert len(events) == 2 and contents(events) == ["a "]
    validate("ErrorResponse", events[1])
    assert events[1]["error"]["message"] == "upstream exploded"


@pytest.mark.parametrize(
    ("model", "status", "retry_after"),
    [("status:429", 429, "1"), ("status:429:7", 429, "7"), ("status:503", 503, None)],
)
def test_status(
    url: str, client: httpx.Client, model: str, status: int, retry_after: str | None
) -> None:
    for stream in (True, False):
        response = client.post(f"{url}/chat/completions", json=chat(model, stream=stream))
        assert response.status_code == status
        assert response.headers.get("retry-after") == retry_after
        validate("ErrorResponse", response.json())


def test_unknown_model_is_404(url: str, client: httpx.Client) -> None:
    response = client.post(f"{url}/chat/completions", json=chat("gpt-nope"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_stall_then_client_close_is_recorded(
    url: str, client: httpx.Client, upstream: FaultUpstream
) -> None:
    with client.stream("POST", f"{url}/chat/completions", json=chat("stall:2")) as response:
        lines = response.iter_lines()
        got = [line for _, line in zip(range(4), lines, strict=False) if line]  # 2 events
        assert len(got) == 2 and upstream.disconnects == []  # still connected, stalled
        closed_at = time.monotonic()
    seen = upstream.wait_for_disconnect(2.0)
    assert seen is not None and seen - closed_at < 1.0
    [gone] = upstream.disconnects
    assert (gone.model, gone.events_sent, gone.how) == ("stall:2", 2, "http.disconnect")


def test_client_timeout_while_waiting_is_recorded(
    url: str, client: httpx.Client, upstream: FaultUpstream
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        client.post(f"{url}/chat/completions", json=chat("slow-first:5"), timeout=0.3)
    assert upstream.wait_for_disconnect(2.0) is not None
    assert upstream.disconnects[0].events_sent == 0


def test_slow_first_and_slow_first_byte(url: str, client: httpx.Client) -> None:
    start = time.monotonic()
    with client.stream("POST", f"{url}/chat/completions", json=chat("slow-first:0.3")) as r:
        headers_after = time.monotonic() - start
        assert contents(payloads(r.read())) == PIECES
    assert headers_after >= 0.3

    start = time.monotonic()
    with client.stream("POST", f"{url}/chat/completions", json=chat("slow-first-byte:0.3")) as r:
        headers_after = time.monotonic() - start
        first = next(r.iter_raw())
        first_after = time.monotonic() - start
    assert first_after >= 0.3 and first_after - headers_after >= 0.2
    assert first.startswith(b"data: ")


def test_slow_spaces_chunks(url: str, client: httpx.Client) -> None:
    start = time.monotonic()
    events = payloads(b"".join(stream_raw(client, url, chat("slow:60"))[1]))
    assert contents(events) == PIECES and time.monotonic() - start >= 3 * 0.06


def test_reset_is_a_connection_reset(
    url: str, client: httpx.Client, upstream: FaultUpstream
) -> None:
    got: list[bytes] = []
    with (
        pytest.raises(httpx.ReadError, match="reset"),
        client.stream("POST", f"{url}/chat/completions", json=chat("reset:1")) as response,
    ):
        assert response.status_code == 200
        got.extend(response.iter_raw())
    assert contents(payloads(b"".join(got))) == ["a "]
    assert upstream.disconnects == []  # the server hung up, not the client

    with pytest.raises(httpx.ReadError):
        client.post(f"{url}/chat/completions", json=chat("reset:1", stream=False))


def test_truncate_is_an_incomplete_chunked_body(url: str, client: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        stream_raw(client, url, chat("truncate:2"))


def test_close_without_finish_and_no_done(url: str, client: httpx.Client) -> None:
    events = payloads(b"".join(stream_raw(client, url, chat("close-without-finish:2"))[1]))
    assert contents(events) == PIECES[:2]
    assert all(e["choices"][0]["finish_reason"] is None for e in events)

    events = payloads(b"".join(stream_raw(client, url, chat("no-done", usage=True))[1]))
    assert "[DONE]" not in events and events[-2]["choices"][0]["finish_reason"] == "stop"


def test_malformed(url: str, client: httpx.Client) -> None:
    events = payloads(b"".join(stream_raw(client, url, chat("malformed"))[1]))
    assert events[1] == "{not json" and contents(events) == PIECES and events[-1] == "[DONE]"


def test_tools(url: str, client: httpx.Client) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    events = payloads(b"".join(stream_raw(client, url, chat("tools", tools=[tool]))[1]))
    for event in events[:-1]:
        validate("CreateChatCompletionStreamResponse", event)
    calls = [c for e in events[:-1] for c in e["choices"][0]["delta"].get("tool_calls", [])]
    assert len(calls) >= 2 and calls[0]["function"]["name"] == "lookup"
    assert calls[0]["id"] and calls[0]["type"] == "function"
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert json.loads(arguments) == {"input": TEXT}
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"

    response = client.post(f"{url}/chat/completions", json=chat("tools", stream=False))
    validate("CreateChatCompletionResponse", response.json())


def test_echo_request_and_records(url: str, client: httpx.Client, upstream: FaultUpstream) -> None:
    body = chat("echo-request", temperature=0.5)
    with client.stream(
        "POST", f"{url}/chat/completions", json=body, headers={"X-Trace": "t1"}
    ) as response:
        events = payloads(response.read())
    assert json.loads("".join(contents(events))) == body
    client.get(f"{url}/models")
    [chat_req, models_req] = upstream.requests
    assert (chat_req.method, chat_req.path, chat_req.body) == ("POST", "/v1/chat/completions", body)
    assert chat_req.headers["x-trace"] == "t1" and "X-Trace" not in chat_req.headers
    assert chat_req.model == "echo-request" and models_req.body is None
    assert upstream.attempts("echo-request") == 1 and upstream.attempts("ok") == 0
    upstream.reset()
    assert upstream.requests == [] and upstream.attempts("echo-request") == 0


def test_non_stream_stall_disconnect(
    url: str, client: httpx.Client, upstream: FaultUpstream
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        client.post(f"{url}/chat/completions", json=chat("stall", stream=False), timeout=0.2)
    assert upstream.wait_for_disconnect(2.0) is not None


def test_serve_in_thread_repeatedly() -> None:
    for _ in range(3):
        upstream = FaultUpstream()
        with serve_in_thread(upstream) as base:
            assert httpx.get(f"{base}/v1/models", trust_env=False).status_code == 200
