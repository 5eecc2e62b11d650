"""The conformance kit (``providers.testing``) itself: its checks pass the built-in providers,
fail the broken ones they are meant to catch, and its stand-in upstream serves as scripted."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar, cast

import httpx
import pytest
from pydantic import BaseModel, ConfigDict

from providers import echo, openai_compat
from providers.base import ChatRequest, Chunk, Delta, Provider, ToolCallDelta, Usage
from providers.errors import UpstreamProtocolError, UpstreamRateLimited
from providers.spec import ProviderContext, ProviderType
from providers.testing import (
    Pause,
    Received,
    Reply,
    StandInUpstream,
    chat_request,
    check_aclose,
    check_cancellation,
    check_provider,
    check_spec,
    check_stream,
    collect,
    expect_provider_error,
    open_provider,
)

T = TypeVar("T")


def run(coroutine: Awaitable[T]) -> T:
    async def main() -> T:
        return await coroutine

    return asyncio.run(main())


def text(t: str, choice: int = 0) -> Chunk:
    return Chunk(deltas=[Delta(choice=choice, text=t)])


def call(index: int, id: str | None = None, name: str | None = None, args: str = "") -> Chunk:
    return Chunk(
        deltas=[Delta(tool_calls=[ToolCallDelta(index, id=id, name=name, arguments=args)])]
    )


def finish(reason: str = "stop", choice: int = 0) -> Chunk:
    return Chunk(deltas=[Delta(choice=choice, finish_reason=reason)])


def usage(**counts: int) -> Chunk:
    return Chunk(deltas=[], usage=Usage(**counts))  # type: ignore[arg-type]


# --- the grammar ---------------------------------------------------------------------------


def test_a_well_made_stream_passes_and_is_summed_up() -> None:
    summary = check_stream(
        [
            Chunk(deltas=[Delta(reasoning="think "), Delta(choice=1, text="B")]),
            text("Hello "),
            call(0, "call_a", "f", '{"x"'),
            call(0, args=": 1}"),
            call(1, "call_b", "g"),
            Chunk(
                deltas=[Delta(finish_reason="tool_calls"), Delta(choice=1, finish_reason="stop")]
            ),
            usage(input_tokens=5, output_tokens=4, reasoning_tokens=1, cached_tokens=2),
        ],
        require_usage=True,
    )
    first, second = summary.choices
    assert (first.reasoning, first.text, first.finish_reason) == ("think ", "Hello ", "tool_calls")
    assert [(c.id, c.name, c.arguments) for c in first.tool_calls] == [
        ("call_a", "f", '{"x": 1}'),
        ("call_b", "g", ""),
    ]
    assert (second.text, second.finish_reason) == ("B", "stop")
    assert summary.usage is not None and summary.usage.cached_tokens == 2


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([], "the stream has no delta at all"),
        ([{"choices": []}], "chunk 0 is a dict, not a Chunk"),
        ([text("a"), text("b", choice=2), finish(), finish(choice=2)], "not 0, 1, ... without"),
        ([call(1, "c", "f"), finish("tool_calls")], "tool call index 1 does not follow -1"),
        ([call(0, "c", "f"), call(2, "d", "g")], "tool call index 2 does not follow 0"),
        ([call(0, None, "f")], "tool call 0 starts without an id"),
        ([call(0, "c", "")], "tool call 0 starts without a name"),
        ([call(0, "c", "f"), call(0, "other")], "tool call 0 changes its id to 'other'"),
        ([call(0, "c", "f"), call(0, name="g")], "tool call 0 changes its name to 'g'"),
        ([text("a"), finish(), text("b")], "a delta after the choice finished ('stop')"),
        ([text("a"), finish(), finish()], "a delta after the choice finished"),
        ([text("a")], "choice 0 never finished"),
        ([call(0, "c", "f"), finish("stop")], "finish_reason 'stop' after tool calls"),
        ([text("a"), finish("tool_calls")], "finish_reason 'tool_calls' without a tool call"),
        ([text("a"), finish("end_turn")], "finish_reason 'end_turn' is not OpenAI's word"),
        ([text("a"), finish(), usage(input_tokens=-1)], "usage input_tokens -1 is not a"),
        ([text("a"), finish(), usage(output_tokens=1, reasoning_tokens=2)], "reasoning_tokens 2 >"),
        ([text("a"), finish(), usage(input_tokens=1, cached_tokens=3)], "cached_tokens 3 >"),
        ([text("a"), Chunk(deltas=[Delta(reasoning="hm")]), finish()], "reasoning after text"),
        ([text("a"), Chunk(deltas=[Delta(choice=-1, text="x")])], "choice -1 is not a"),
        ([Chunk(deltas=[Delta(text=b"x")])], "text is not a str"),  # type: ignore[arg-type]
    ],
)
def test_a_broken_stream_fails_naming_the_rule(chunks: list[Any], message: str) -> None:
    with pytest.raises(AssertionError) as caught:
        check_stream(chunks)
    assert message in str(caught.value)


def test_usage_can_be_required_and_reasoning_order_relaxed() -> None:
    with pytest.raises(AssertionError, match="reported no usage"):
        check_stream([text("a"), finish()], require_usage=True)
    late = [text("a"), Chunk(deltas=[Delta(reasoning="hm")]), finish()]
    assert check_stream(late, reasoning_first=False).reasoning == "hm"


# --- the provider checks, on the built-in echo provider ------------------------------------


def with_echo(test: Callable[[Provider], Awaitable[T]], **options: Any) -> T:
    async def main() -> T:
        async with open_provider(echo.SPEC, options) as provider:
            return await test(provider)

    return asyncio.run(main())


def test_echo_passes_every_check() -> None:
    check_spec(echo.SPEC)
    check_spec(openai_compat.SPEC)
    request = chat_request("one two three", n=2)
    summary = with_echo(lambda p: check_provider(p, request, require_usage=True))
    assert [c.text for c in summary.choices] == ["one two three"] * 2
    slow = chat_request("one two three")
    with_echo(lambda p: check_aclose(p, slow), chunk_delay_ms=100)
    with_echo(lambda p: check_cancellation(p, slow), chunk_delay_ms=100)


class Broken:
    """A provider that breaks one rule, chosen by ``how``."""

    name = "broken"
    models: tuple[str, ...] = ("model",)

    def __init__(self, how: str) -> None:
        self.how = how
        self.closed = False

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        how = self.how
        try:
            yield text("first ")
            if how == "dict":
                yield {"choices": []}  # type: ignore[misc]
            if how == "raises":
                raise ValueError("a bug")
            if how == "swallow-and-return":
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    return
            if how == "swallow-and-wait":
                for _ in range(2):
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.sleep(30)
            await asyncio.sleep(0.5)
            yield text("second")
            yield finish()
        finally:
            if how == "yields-in-finally":
                yield text("late")
            if how == "hangs-in-finally":
                await asyncio.sleep(30)
            self.closed = True

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize(
    ("how", "check", "message"),
    [
        ("dict", check_provider, "item 1 of the stream is a dict, not a Chunk"),
        ("yields-in-finally", check_aclose, "the stream would not close"),
        ("hangs-in-finally", check_aclose, "aclose() did not return within 1 s"),
        ("swallow-and-return", check_cancellation, "swallowed CancelledError"),
        ("swallow-and-wait", check_cancellation, "did not end within 1 s of its cancellation"),
        ("raises", expect_provider_error, "the stream raised ValueError, not a providers.errors"),
        ("fine", expect_provider_error, "the stream ended without an error, after 3 chunks"),
    ],
)
def test_a_broken_provider_fails_its_check(how: str, check: Any, message: str) -> None:
    with pytest.raises(AssertionError) as caught:
        run(check(Broken(how), chat_request(), within=1))
    assert message in str(caught.value)


def test_aclose_runs_the_streams_finally() -> None:
    provider = Broken("fine")
    run(check_aclose(provider, chat_request()))
    assert provider.closed


def test_a_stream_too_short_to_cancel_is_reported_as_such() -> None:
    with pytest.raises(AssertionError, match="before it could be cancelled"):
        with_echo(lambda p: check_cancellation(p, chat_request("one")))
    with pytest.raises(AssertionError, match="ended after 3 chunks"):
        with_echo(lambda p: check_aclose(p, chat_request("one"), after=4))


class _Loose(BaseModel):
    pass


class _Forbid(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _create(context: ProviderContext, options: Any) -> Provider:
    return Broken("fine")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("echo", "the spec is a str"),
        (ProviderType("x", _Forbid, _create, contract_version=2), "contract version 2"),
        (ProviderType("x", _Loose, _create), "must refuse unknown variables"),
        (ProviderType("My Type", _Forbid, _create), "is not [a-z][a-z0-9_-]*"),
        (replace(echo.SPEC, capabilities=cast(Any, {"chat"})), "capabilities is not a frozenset"),
    ],
)
def test_check_spec_refuses_what_the_gateway_would_not_load(spec: Any, message: str) -> None:
    with pytest.raises(AssertionError) as caught:
        check_spec(spec)
    assert message in str(caught.value)


# --- the stand-in upstream, and the openai provider through it -----------------------------


def sse_chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def with_openai(upstream: StandInUpstream, test: Callable[[Provider], Awaitable[T]]) -> T:
    async def main() -> T:
        options = {"base_url": upstream.url + "/v1", "api_key": "sk-test-key"}
        async with open_provider(openai_compat.SPEC, options, models=("m",)) as provider:
            return await test(provider)

    return asyncio.run(main())


def test_openai_passes_the_checks_against_the_stand_in() -> None:
    tools = [
        sse_chunk({"reasoning_content": "Two tools. "}),
        sse_chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f"}}]}),
        sse_chunk({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g"}}]}),
        sse_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
        sse_chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        sse_chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        sse_chunk({}, "tool_calls"),
        USAGE,
    ]
    slow = [sse_chunk({"content": "Hi "}), Pause(0.5), sse_chunk({"content": "!"}, "stop")]
    with StandInUpstream() as upstream:
        upstream.expect(Reply.sse(tools, delay=0.01), Reply.sse(slow), Reply.sse(slow))
        summary = with_openai(upstream, lambda p: check_provider(p, chat_request("x")))
        assert summary.reasoning == "Two tools. "
        assert [(c.id, c.arguments) for c in summary.tool_calls] == [("a", '{"x": 1}'), ("b", "{}")]
        with_openai(upstream, lambda p: check_aclose(p, chat_request("x")))
        with_openai(upstream, lambda p: check_cancellation(p, chat_request("x")))
        upstream.wait_for_disconnect(2)  # both reached the upstream as a hang-up
        first = upstream.wait_for_requests(3)[0]
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.header("Authorization") == "Bearer sk-test-key"
    assert first.json()["stream_options"] == {"include_usage": True}


def test_openai_maps_the_stand_ins_failures_to_provider_errors() -> None:
    cut = [sse_chunk({"content": "Hi"})]
    with StandInUpstream() as upstream:
        upstream.expect(
            Reply.json(
                {"error": {"message": "slow down"}}, status=429, headers=[("retry-after", "7")]
            ),
            Reply.sse(cut, done=False, truncate=True),
            Reply(hang_up=True),
            Reply.json({"id": "x", "choices": [{"index": 0, "message": {"content": "whole"}}]}),
        )
        limited = with_openai(upstream, lambda p: expect_provider_error(p, chat_request("x")))
        assert isinstance(limited, UpstreamRateLimited) and limited.retry_after == 7
        cut_short = with_openai(upstream, lambda p: expect_provider_error(p, chat_request("x")))
        assert isinstance(cut_short, UpstreamProtocolError)
        assert cut_short.code == "upstream_truncated"
        unanswered = with_openai(upstream, lambda p: expect_provider_error(p, chat_request("x")))
        assert unanswered.code == "upstream_disconnected"
        whole = chat_request("x", stream=False)
        assert with_openai(upstream, lambda p: check_provider(p, whole)).text == "whole"


def test_the_stand_in_frames_pauses_and_records() -> None:
    def handler(received: Received) -> Reply:
        return Reply(body=[received.body.upper()], headers=[("x-path", received.path)])

    with StandInUpstream(handler) as upstream, httpx.Client(base_url=upstream.url) as client:
        upstream.expect(
            Reply(body=[b"ab", Pause(0.3), b"cd"], framing="chunked"),
            Reply(body=[b"to the end"], framing="close"),
        )
        started = time.monotonic()
        assert client.get("/one").text == "abcd"
        assert time.monotonic() - started >= 0.3
        assert client.get("/two").text == "to the end"
        echoed = client.post("/three?q=1", content=b"shout", headers={"X-Test": "yes"})
        assert (echoed.text, echoed.headers["x-path"]) == ("SHOUT", "/three?q=1")
        upstream.expect(Reply(body=[b"part"], truncate=True))
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/four")
        unscripted = client.get("/five")
        assert unscripted.status_code == 200  # the handler answers once the script is used up
    received = upstream.received
    assert [r.path for r in received] == ["/one", "/two", "/three?q=1", "/four", "/five"]
    assert received[2].header("x-test") == "yes" and received[2].body == b"shout"
    with pytest.raises(AssertionError, match="5 requests reached the stand-in upstream"):
        upstream.wait_for_requests(6, within=0.1)


def test_an_unscripted_request_gets_a_500_saying_so() -> None:
    with StandInUpstream() as upstream:
        response = httpx.get(upstream.url + "/v1/x", timeout=5)
    assert response.status_code == 500
    assert "no reply scripted for GET /v1/x" in response.json()["error"]["message"]


def test_collect_bounds_a_stream_that_never_ends() -> None:
    with StandInUpstream() as upstream:
        upstream.expect(Reply.sse([sse_chunk({"content": "Hi"})], done=False, hang=True))
        with pytest.raises(AssertionError, match=r"did not end within 0\.5 s"):
            with_openai(upstream, lambda p: collect(p, chat_request("x"), within=0.5))
        upstream.wait_for_disconnect()
