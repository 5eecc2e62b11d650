"""Legacy ``POST /v1/completions``: OpenAI's ``CreateCompletionRequest`` passed through to
providers that still serve it (the ``openai`` type: OpenAI, vLLM, llama.cpp...).

The grammar is chat's: streamed as ``data: {text_completion chunk}`` events and ``[DONE]``;
a failure before the first byte gets a real status, after it a ``data: {"error": ...}`` event
and no ``[DONE]``. Usage is always asked of a streaming upstream and shown to the client only
with ``stream_options.include_usage``. A prompt is at most :data:`MAX_PROMPTS` texts or token
arrays; ``n`` and ``max_tokens`` have chat's limits.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Annotated, Any, NotRequired

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    TypeAdapter,
    with_config,
)
from starlette.types import Send
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from gateway.asgi import send_error, send_json
from gateway.dispatch import Session
from gateway.errors import APIError, InvalidRequest
from gateway.routing import Deployment
from gateway.surfaces.completions_render import CompletionAggregator, CompletionRenderer
from gateway.surfaces.shared import (
    SHAPE_TAGS,
    LimitedSurface,
    Parsed,
    answer_failure,
    input_shape,
    keep_alive,
    parse_body,
    serve_sse,
    stream_error,
    usage_from,
)
from gateway.tenancy.estimate import PER_REQUEST, text_tokens
from gateway.validation import Limits
from providers.base import CompletionRequest, SupportsCompletions

MAX_PROMPTS = 2048

TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
Prompt = Annotated[
    Annotated[str, Tag("text")]
    | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS), Tag("texts")]
    | Annotated[TokenIds, Tag("tokens")]
    | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS), Tag("token_arrays")],
    Discriminator(
        input_shape,
        custom_error_type="invalid_type",
        custom_error_message="prompt must be a string, an array of strings, an array of token "
        "ids or an array of token-id arrays",
    ),
]
Stop = Annotated[
    Annotated[str, Tag("text")] | Annotated[list[str], Tag("texts")],
    Discriminator(
        lambda v: "text" if isinstance(v, str) else "texts" if isinstance(v, list) else None,
        custom_error_type="invalid_type",
        custom_error_message="stop must be a string or an array of strings",
    ),
]


@with_config(ConfigDict(strict=True, extra="allow"))
class StreamOptions(TypedDict):
    include_usage: NotRequired[bool | None]


@with_config(ConfigDict(strict=True, extra="allow"))
class CompletionBody(TypedDict):
    """OpenAI's ``CreateCompletionRequest``; other fields pass through to the upstream."""

    model: Annotated[str, StringConstraints(min_length=1)]
    prompt: Prompt | None
    stream: NotRequired[bool | None]
    stream_options: NotRequired[StreamOptions | None]
    max_tokens: NotRequired[Annotated[int, Field(ge=0)] | None]
    n: NotRequired[Annotated[int, Field(ge=1)] | None]
    best_of: NotRequired[Annotated[int, Field(ge=0, le=20)] | None]
    logprobs: NotRequired[Annotated[int, Field(ge=0)] | None]
    echo: NotRequired[bool | None]
    suffix: NotRequired[str | None]
    stop: NotRequired[Stop | None]
    temperature: NotRequired[Annotated[float, Field(ge=0, le=2)] | None]
    top_p: NotRequired[Annotated[float, Field(ge=0, le=1)] | None]
    presence_penalty: NotRequired[Annotated[float, Field(ge=-2, le=2)] | None]
    frequency_penalty: NotRequired[Annotated[float, Field(ge=-2, le=2)] | None]
    logit_bias: NotRequired[dict[str, float] | None]
    seed: NotRequired[int | None]
    user: NotRequired[str | None]


BODY = TypeAdapter(CompletionBody)


@dataclass(slots=True)
class CompletionCall:
    """A checked request; ``body`` is the client's without model, stream and stream_options."""

    body: dict[str, Any]
    stream: bool
    include_usage: bool


def parse_completion_request(raw: bytes, limits: Limits) -> Parsed[CompletionCall]:
    """Parse and check a ``POST /v1/completions`` body; 400 with ``param`` if it is wrong."""
    checked, body = parse_body(raw, BODY, tags=SHAPE_TAGS)
    n = checked.get("n")
    if n is not None and n > limits.max_n:
        raise InvalidRequest(f"n must be an integer from 1 to {limits.max_n}", param="n")
    max_tokens = checked.get("max_tokens")
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise InvalidRequest(
            f"max_tokens must be an integer from 0 to {limits.max_tokens}", param="max_tokens"
        )
    stream = bool(checked.get("stream"))
    options = checked.get("stream_options") or {}
    passed = {k: v for k, v in body.items() if k not in ("model", "stream", "stream_options")}
    request = CompletionCall(
        body=passed, stream=stream, include_usage=bool(options.get("include_usage"))
    )

    def cap_output(tokens: int) -> None:
        passed["max_tokens"] = tokens

    prompt = checked["prompt"]
    return Parsed(
        request,
        model=checked["model"],
        stream=stream,
        estimate_input=lambda: text_tokens(prompt) + PER_REQUEST,
        output_cap=max_tokens,
        choices=max(n or 1, checked.get("best_of") or 1),  # best_of are generated and billed
        cap_output=cap_output,
    )


class CompletionsEndpoint(LimitedSurface[CompletionCall]):
    """``POST /v1/completions`` for providers that implement :class:`SupportsCompletions`."""

    path = "/v1/completions"
    surface = "completions"
    capability = SupportsCompletions
    capability_name = "the legacy completions API (/v1/completions)"

    def parse(self, raw: bytes) -> Parsed[CompletionCall]:
        return parse_completion_request(raw, self.limits)

    async def serve(self, session: Session, request: CompletionCall, send: Send) -> None:
        call = session.call

        def start(deployment: Deployment) -> AsyncGenerator[dict[str, Any], None]:
            provider = deployment.provider
            assert isinstance(provider, SupportsCompletions)  # the chain holds capable ones
            return provider.complete(
                CompletionRequest(
                    deployment.upstream_model,
                    request.body,
                    stream=request.stream,
                    request_id=call.request_id,
                    on_queue=session.queued,
                )
            )

        if request.stream:
            keep_alive(session, send)
        try:
            first = await session.open(start)
        except APIError as exc:
            await answer_failure(session, send, exc, plain=send_error, event=stream_error)
            return
        renderer = CompletionRenderer(model=session.deployment.model_id)

        def note(data: dict[str, Any]) -> None:
            usage = usage_from(data.get("usage"))
            if usage is not None:
                call.usage = usage
            for choice in data["choices"]:
                if choice["finish_reason"]:
                    call.finish_reason = choice["finish_reason"]

        if not request.stream:
            aggregator = CompletionAggregator()

            def collect(data: dict[str, Any]) -> bytes:
                note(data)
                aggregator.add(data)
                return b""

            error = await session.pump(first, collect)
            if error is not None:
                await send_error(send, error)
            else:
                answer = aggregator.completion(renderer=renderer, usage=call.usage)
                await send_json(send, 200, answer)
            return

        render = renderer.render

        def forward(data: dict[str, Any]) -> bytes:
            note(data)
            return render(data)

        def usage_event() -> bytes:
            usage = call.usage
            if request.include_usage and usage is not None:
                return renderer.render_usage(usage)
            return b""

        await serve_sse(session, first, forward, send, tail=usage_event)
