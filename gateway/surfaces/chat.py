"""``POST /v1/chat/completions``: parse -> dispatch -> render, as a raw ASGI endpoint.

One path for both modes: the provider's stream is either framed as SSE or aggregated. Before
the first byte reaches the client, a failure gets a real HTTP status; after it, a stream ends
with ``data: {"error": ...}`` and no ``[DONE]``.
"""

from __future__ import annotations

import contextlib
import logging
import time

from starlette.types import Receive, Scope, Send

from gateway.asgi import ClientDisconnected, header, read_body, send_error, send_json
from gateway.dispatch import Dispatcher, Session
from gateway.errors import APIError, MethodNotAllowed
from gateway.observe import CALL_SCOPE_KEY, Call
from gateway.routing import Router
from gateway.surfaces.chat_render import DONE, Aggregator, ChunkRenderer, error_event
from gateway.validation import Limits, ParsedRequest, check_content_type, validate_chat_request
from providers.base import ChatRequest

logger = logging.getLogger("gateway")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


class ChatCompletions:
    def __init__(
        self, *, router: Router, dispatcher: Dispatcher, limits: Limits, max_body_bytes: int
    ) -> None:
        self.router = router
        self.dispatcher = dispatcher
        self.limits = limits
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call: Call | None = scope.get(CALL_SCOPE_KEY)
        if call is None:  # served outside RequestContext (a bare app in a test)
            call = Call("-", scope["method"], scope["path"], "-", time.perf_counter())
        call.surface = "chat"
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed("use POST for /v1/chat/completions")
            check_content_type(header(scope, b"content-type"))
            raw = await read_body(scope, receive, limit=self.max_body_bytes)
            request = validate_chat_request(raw, self.limits)
            call.model = _printable(request.model)
            call.stream = request.stream
            chain = self.router.chain(request.model)
        except ClientDisconnected:
            return
        except APIError as exc:
            call.error_code = exc.code
            await send_error(send, exc)
            return
        try:
            async with self.dispatcher.session(
                call, receive, chain, stream=request.stream
            ) as session:
                await self._serve(session, request, send)
        except ClientDisconnected:
            pass
        except Exception:  # a bug, not a client's or upstream's fault: say so, tell nothing
            logger.exception("request %s: unexpected error", call.request_id)
            call.error_code = "internal_error"
            with contextlib.suppress(Exception):  # fails if the response had started
                await send_error(
                    send, APIError("internal error in the gateway", code="internal_error")
                )

    async def _serve(self, session: Session, request: ParsedRequest, send: Send) -> None:
        call = session.call

        def start(deployment_model: str) -> ChatRequest:
            return ChatRequest(
                deployment_model,
                request.body,
                stream=request.stream,
                request_id=call.request_id,
                on_queue=session.queued,
            )

        try:
            first = await session.open(lambda d: d.provider.stream(start(d.upstream_model)))
        except APIError as exc:
            await send_error(send, exc)
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

        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        except OSError:
            raise ClientDisconnected from None
        error = await session.pump(first, renderer.render, send)
        call.usage, call.finish_reason = renderer.usage, renderer.finish_reason
        if error is not None:
            tail = error_event(error.payload())
        elif request.include_usage and call.usage is not None:
            tail = renderer.render_usage(call.usage) + DONE
        else:
            tail = DONE
        await send({"type": "http.response.body", "body": tail, "more_body": False})


def _printable(value: str) -> str:
    """A client's model name, fit for a log line: bounded, no control characters."""
    if len(value) <= 200 and value.isprintable():
        return value
    return "".join(ch if ch.isprintable() else "?" for ch in value[:200])
