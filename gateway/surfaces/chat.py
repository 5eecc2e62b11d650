"""``POST /v1/chat/completions``: parse -> dispatch -> render, as a raw ASGI endpoint.

One path for both modes: the provider's stream is either framed as SSE or aggregated. Before
the first byte reaches the client, a failure gets a real HTTP status; after it, a stream ends
with ``data: {"error": ...}`` and no ``[DONE]``. Reading the request, routing and the session
are :class:`gateway.surfaces.shared.Surface`'s, as for every surface.
"""

from __future__ import annotations

from starlette.types import Send

from gateway.asgi import send_error, send_json
from gateway.dispatch import Session
from gateway.errors import APIError
from gateway.surfaces.chat_render import Aggregator, ChunkRenderer
from gateway.surfaces.shared import (
    LimitedSurface,
    Parsed,
    answer_failure,
    keep_alive,
    serve_sse,
    stream_error,
)
from gateway.validation import ParsedRequest, validate_chat_request
from providers.base import ChatRequest


class ChatCompletions(LimitedSurface[ParsedRequest]):
    path = "/v1/chat/completions"
    surface = "chat"
    capability = None  # every provider chats
    capability_name = "chat completions"

    def parse(self, raw: bytes) -> Parsed[ParsedRequest]:
        request = validate_chat_request(raw, self.limits)
        body = request.body
        return Parsed.of_chat_body(
            request,
            body,
            model=request.model,
            stream=request.stream,
            output_cap=body.get("max_completion_tokens") or body.get("max_tokens"),
            choices=body.get("n") or 1,
        )

    async def serve(self, session: Session, request: ParsedRequest, send: Send) -> None:
        call = session.call

        def start(deployment_model: str) -> ChatRequest:
            return session.chat_request(deployment_model, request.body, stream=request.stream)

        if request.stream:
            keep_alive(session, send)
        try:
            first = await session.open(lambda d: d.provider.stream(start(d.upstream_model)))
        except APIError as exc:
            await answer_failure(session, send, exc, plain=send_error, event=stream_error)
            return
        renderer = ChunkRenderer(model=session.deployment.model_id)
        if not request.stream:
            aggregator = Aggregator()
            error = await session.pump(first, aggregator.add)
            call.usage, call.finish_reason = aggregator.usage, aggregator.finish_reason
            if error is not None:
                await send_error(send, error)
            else:
                await send_json(send, 200, aggregator.completion(renderer=renderer))
            return

        def usage_event() -> bytes:
            usage = renderer.usage
            if request.include_usage and usage is not None:
                return renderer.render_usage(usage)
            return b""

        try:
            await serve_sse(session, first, renderer.render, send, tail=usage_event)
        finally:
            call.usage, call.finish_reason = renderer.usage, renderer.finish_reason
