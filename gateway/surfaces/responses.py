"""``POST /v1/responses``: OpenAI's Responses API in front of any provider (what Codex speaks).

The request becomes a chat body (:mod:`gateway.surfaces.responses_request`), built again for
each deployment tried, so that replayed reasoning reaches only the upstream that produced it;
the provider's normalized stream becomes Responses events or one response object
(:mod:`gateway.surfaces.responses_render`). Before the first byte a failure is OpenAI's error
body with its real status; after it, the stream ends with ``response.failed``, never a silent
``response.completed``.
"""

from __future__ import annotations

from starlette.types import Send

from gateway.asgi import send_json
from gateway.dispatch import Session
from gateway.errors import APIError
from gateway.surfaces.responses_render import ResponseBuilder
from gateway.surfaces.responses_request import ResponsesRequest, parse_responses_request
from gateway.surfaces.shared import LimitedSurface, Parsed, answer_failure, keep_alive, send_head
from providers.base import ChatRequest, Chunk


class ResponsesEndpoint(LimitedSurface[ResponsesRequest]):
    path = "/v1/responses"
    surface = "responses"
    capability = None  # every provider chats, and a response is a chat
    capability_name = "the Responses API"

    def parse(self, raw: bytes) -> Parsed[ResponsesRequest]:
        request = parse_responses_request(raw, self.limits)
        # the chat body holds all the upstream reads (replayed reasoning aside: an upstream
        # reads its own signed thoughts, not counted here as chat's are not either)
        return Parsed.of_chat_body(
            request,
            request.body,
            model=request.model,
            stream=request.stream,
            output_cap=request.max_output_tokens,
        )

    async def serve(self, session: Session, request: ResponsesRequest, send: Send) -> None:
        call = session.call

        def start(deployment_model: str, deployment: str) -> ChatRequest:
            body = request.body_for(deployment)
            return session.chat_request(deployment_model, body, stream=request.stream)

        if request.stream:
            keep_alive(session, send)
        try:
            first = await session.open(
                lambda d: d.provider.stream(start(d.upstream_model, d.model_id))
            )
        except APIError as exc:

            def failed(error: APIError) -> bytes:
                """A stream begun by keep-alives: created, then failed."""
                model = request.model
                builder = ResponseBuilder(request, model=model, origin=model, stream=True)
                created = builder.render(Chunk(deltas=[]))
                return created + builder.finish(error)[0]

            await answer_failure(session, send, exc, plain=self.send_error, event=failed)
            return
        deployment = session.deployment.model_id
        builder = ResponseBuilder(
            request, model=deployment, origin=deployment, stream=request.stream
        )
        try:
            if not request.stream:
                error = await session.pump(first, builder.render)
                if error is not None:
                    await self.send_error(send, error)
                    return
                _, final = builder.finish(None)
                await send_json(send, 200, final)
                return
            await send_head(session, send)
            error = await session.pump(first, builder.render, send)
            end, _ = builder.finish(error)
            await send({"type": "http.response.body", "body": end, "more_body": False})
        finally:
            call.usage, call.finish_reason = builder.usage, builder.finish_reason
