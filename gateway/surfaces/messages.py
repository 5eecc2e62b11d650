"""``POST /v1/messages`` (Anthropic's Messages API) in front of any provider, and
``POST /v1/messages/count_tokens``.

The request becomes an OpenAI chat body (:mod:`messages_request`), made for each deployment it
is tried on, since replayed reasoning goes back only to the provider that made it; the
provider's normalized stream is rendered in Anthropic's grammar (:mod:`messages_render`).
Clients send the query ``?beta=true`` and ``anthropic-beta`` headers: routing ignores the
first, the second asks for nothing the gateway must refuse. Failures before the first byte get
Anthropic's error body and status (``overloaded_error`` 529 when the upstreams are overloaded
or cooling down, which Claude Code retries); after it, an ``error`` event ends the stream.
"""

from __future__ import annotations

import logging
import time

from starlette.types import Receive, Scope, Send

from gateway.asgi import ClientDisconnected, header, read_body, send_anthropic_error, send_json
from gateway.dispatch import Session
from gateway.errors import APIError, MethodNotAllowed, from_provider_error
from gateway.observe import CALL_SCOPE_KEY, Call
from gateway.routing import Deployment, Router
from gateway.surfaces.messages_render import MessageRenderer, error_event
from gateway.surfaces.messages_request import MessagesRequest, Target, parse_messages_request
from gateway.surfaces.shared import (
    PING,
    Parsed,
    Surface,
    answer_failure,
    keep_alive,
    printable,
    send_head,
)
from gateway.validation import check_content_type
from providers.anthropic import AnthropicProvider
from providers.base import ChatRequest, Chunk
from providers.errors import ProviderError
from providers.gemini import GeminiProvider

__all__ = ["CountTokens", "Messages", "target_of"]

logger = logging.getLogger("gateway")


def target_of(deployment: Deployment) -> Target:
    """What the request body depends on of ``deployment``'s provider."""
    provider = deployment.provider
    if isinstance(provider, AnthropicProvider):
        kind = "anthropic"
    elif isinstance(provider, GeminiProvider):
        kind = "gemini"
    else:
        kind = "other"
    return Target(kind, provider.name)


class Messages(Surface[MessagesRequest]):
    path = "/v1/messages"
    surface = "messages"
    capability = None  # every provider chats
    capability_name = "messages"

    def parse(self, raw: bytes) -> Parsed[MessagesRequest]:
        request = parse_messages_request(raw)
        return Parsed(
            request=request,
            model=request.model,
            stream=request.stream,
            estimate_input=lambda: request.prompt_tokens,
            output_cap=request.max_tokens,  # required by the API: nothing to inject
        )

    async def send_error(self, send: Send, error: APIError) -> None:
        await send_anthropic_error(send, error)

    async def serve(self, session: Session, request: MessagesRequest, send: Send) -> None:
        call = session.call

        def start(deployment: Deployment) -> ChatRequest:
            body = request.body_for(target_of(deployment))
            return session.chat_request(deployment.upstream_model, body, stream=request.stream)

        if request.stream:
            keep_alive(session, send, frame=PING)
        try:
            first = await session.open(lambda d: d.provider.stream(start(d)))
        except APIError as exc:
            await answer_failure(session, send, exc, plain=send_anthropic_error, event=error_event)
            return
        target = target_of(session.deployment)
        renderer = MessageRenderer(
            model=request.model,
            input_estimate=request.prompt_tokens,
            signer=None if target.kind == "anthropic" else target.name,
            collect=not request.stream,
        )
        try:
            if request.stream:
                await self._stream(session, first, renderer, send)
            else:
                await self._whole(session, first, renderer, send)
        finally:  # for the observers, in every surface's words (OpenAI's)
            if renderer.dropped_reasoning:
                logger.info(
                    "request %s: reasoning that came after the answer began was left out "
                    "(Anthropic's grammar has thinking first)",
                    call.request_id,
                )
            call.usage = renderer.usage
            call.finish_reason = renderer.finish.finish_reason if renderer.finish else None

    async def _whole(
        self, session: Session, first: Chunk, renderer: MessageRenderer, send: Send
    ) -> None:
        error = await session.pump(first, renderer.render)
        if error is not None:
            await send_anthropic_error(send, error)
            return
        try:
            renderer.end()
            message = renderer.message()
        except ProviderError as exc:  # no finish, or tool arguments that are not JSON
            await send_anthropic_error(send, _upstream_fault(exc, session))
            return
        await send_json(send, 200, message)

    async def _stream(
        self, session: Session, first: Chunk, renderer: MessageRenderer, send: Send
    ) -> None:
        await send_head(session, send)
        try:
            await send({"type": "http.response.body", "body": renderer.start(), "more_body": True})
        except OSError:  # ASGI 2.4 servers raise it once the client is gone
            raise ClientDisconnected from None
        error = await session.pump(first, renderer.render, send)
        if error is None:
            try:
                end = renderer.end()
            except ProviderError as exc:
                error = _upstream_fault(exc, session)
        if error is not None:
            end = error_event(error)
        await send({"type": "http.response.body", "body": end, "more_body": False})


def _upstream_fault(exc: ProviderError, session: Session) -> APIError:
    session.call.error_code = exc.code
    return from_provider_error(exc)


class CountTokens:
    """``POST /v1/messages/count_tokens``: the request's estimated input tokens
    (:mod:`messages_tokens`), for a model the gateway serves; nothing goes upstream."""

    path = "/v1/messages/count_tokens"

    def __init__(self, *, router: Router, max_body_bytes: int) -> None:
        self.router = router
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call: Call | None = scope.get(CALL_SCOPE_KEY)
        if call is None:
            call = Call("-", scope["method"], scope["path"], "-", time.perf_counter())
        call.surface = "count_tokens"
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"use POST for {self.path}")
            check_content_type(header(scope, b"content-type"))
            raw = await read_body(scope, receive, limit=self.max_body_bytes)
            request = parse_messages_request(raw, counting=True)
            call.model = printable(request.model)
            self.router.group(request.model)  # 404 for a model the gateway does not serve
        except ClientDisconnected:
            return
        except APIError as exc:
            call.error_code = exc.code
            await send_anthropic_error(send, exc)
            return
        await send_json(send, 200, {"input_tokens": request.prompt_tokens})
