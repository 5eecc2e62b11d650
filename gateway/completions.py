"""``POST /v1/chat/completions`` as a raw ASGI endpoint: the gateway's hot path.

One path for both modes: the provider's chunk stream is either framed as SSE or aggregated.
Before the first byte reaches the client, failures are retried, fall back to other models and
get a real HTTP status; after it, a stream ends with ``data: {"error": ...}`` and no ``[DONE]``.
A client that goes away cancels the upstream request at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from gateway.asgi import (
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    send_error,
    send_json,
)
from gateway.errors import (
    APIError,
    GatewayTimeout,
    MethodNotAllowed,
    ServiceUnavailable,
    from_provider_error,
)
from gateway.resilience import (
    CircuitBreaker,
    CoolingDown,
    RetryPolicy,
    counts_against_provider,
    may_fall_back,
)
from gateway.routing import Route, Router
from gateway.streaming import DONE, Aggregator, ChunkRenderer, error_event
from gateway.validation import Limits, ParsedRequest, check_content_type, validate_chat_request
from gateway.watchdog import Watchdog
from providers.base import ChatRequest, Chunk, Timeouts
from providers.errors import (
    ProviderError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

logger = logging.getLogger("gateway")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


class _Disconnected(Exception):
    pass


@dataclass(slots=True)
class ProviderPolicy:
    timeouts: Timeouts
    retry: RetryPolicy
    breaker: CircuitBreaker


class ChatCompletions:
    """The endpoint, holding the router and each provider's timeouts, retries and breaker."""

    def __init__(
        self,
        *,
        router: Router,
        policies: Mapping[str, ProviderPolicy],
        limits: Limits,
        max_body_bytes: int,
    ) -> None:
        self.router = router
        self.policies = dict(policies)
        self.limits = limits
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed("use POST for /v1/chat/completions")
            check_content_type(header(scope, b"content-type"))
            raw = await read_body(scope, receive, limit=self.max_body_bytes)
            request = validate_chat_request(raw, self.limits)
            chain = self.router.chain(request.model)
        except ClientDisconnected:
            return
        except APIError as exc:
            await send_error(send, exc)
            return
        first_policy = self.policies[chain[0].provider.name]
        dog = Watchdog(
            first_token=first_policy.timeouts.first_token,
            idle=first_policy.timeouts.idle,
            total=first_policy.timeouts.total,
        )
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, dog))
        try:
            await self._serve(request, chain, dog, send)
        except _Disconnected:
            pass
        except Exception:  # a bug, not a client's or upstream's fault: say so, tell nothing
            logger.exception("unexpected error serving %s", request.model)
            with contextlib.suppress(Exception):  # fails if the response had started
                await send_error(send, APIError("internal error in the gateway", code="internal"))
        finally:
            dog.close()
            watcher.cancel()

    async def _serve(
        self, request: ParsedRequest, chain: tuple[Route, ...], dog: Watchdog, send: Send
    ) -> None:
        try:
            route, stream, first = await self._open(request, chain, dog)
        except APIError as exc:
            await send_error(send, exc)
            return
        try:
            if request.stream:
                await self._stream(request, route, stream, first, dog, send)
            else:
                await self._aggregate(route, stream, first, dog, send)
        finally:
            await _aclose(stream)

    async def _open(
        self, request: ParsedRequest, chain: tuple[Route, ...], dog: Watchdog
    ) -> tuple[Route, AsyncIterator[Chunk], Chunk]:
        """Get the first chunk from the first model that gives one, with retries and fallbacks."""
        error: ProviderError | None = None
        for route in chain:
            policy = self.policies[route.provider.name]
            dog.idle = policy.timeouts.idle or dog.idle
            attempt = 0
            while policy.breaker.allow():
                # A whole answer fetched at once has no first token to time: the total applies.
                dog.restart_first_token(policy.timeouts.first_token if request.stream else None)
                stream = route.provider.stream(
                    ChatRequest(route.upstream_model, request.body, stream=request.stream)
                )
                try:
                    first = await stream.__anext__()
                except StopAsyncIteration:
                    error = UpstreamProtocolError(
                        "the upstream ended the stream without any output",
                        code="upstream_truncated",
                    )
                except ProviderError as exc:
                    error = exc
                except asyncio.CancelledError:
                    reason = dog.claim()
                    if reason != "first_token":
                        policy.breaker.release()
                        await _aclose(stream)
                        if reason == "disconnect":
                            raise _Disconnected from None
                        raise _stop_error(reason, route) from None
                    error = UpstreamTimeout(
                        f"no first token from {route.model_id} in time", phase="first_token"
                    )
                else:
                    dog.received()
                    policy.breaker.success()
                    return route, stream, first
                await _aclose(stream)
                if counts_against_provider(error):
                    policy.breaker.failure()
                else:
                    policy.breaker.release()
                delay = policy.retry.delay(attempt, error)
                if delay is None:
                    break
                attempt += 1
                dog.pause()
                logger.info("retrying %s in %.2fs: %s", route.model_id, delay, error.message)
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    reason = dog.claim()
                    if reason == "disconnect":
                        raise _Disconnected from None
                    raise _stop_error(reason, route) from None
            else:
                if error is None:
                    error = CoolingDown(
                        f"provider '{route.provider.name}' is cooling down after repeated failures",
                        retry_after=policy.breaker.retry_after,
                    )
            if not may_fall_back(error):
                break
        assert error is not None
        raise from_provider_error(error, model=chain[0].model_id)

    async def _stream(
        self,
        request: ParsedRequest,
        route: Route,
        stream: AsyncIterator[Chunk],
        chunk: Chunk,
        dog: Watchdog,
        send: Send,
    ) -> None:
        renderer = ChunkRenderer(model=route.model_id)
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        usage = None
        try:
            while True:
                if chunk.usage:
                    usage = chunk.usage
                if chunk.choices:
                    body = renderer.render(chunk)
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                dog.waiting()
                chunk = await stream.__anext__()
                dog.received()
        except StopAsyncIteration:
            pass
        except ProviderError as exc:
            await _end_with_error(send, dog, from_provider_error(exc, model=route.model_id))
            return
        except asyncio.CancelledError:
            reason = dog.claim()
            if reason != "disconnect":
                await _end_with_error(send, dog, _stop_error(reason, route))
            return
        tail = DONE
        if request.include_usage and usage is not None:
            tail = renderer.render_usage(usage) + DONE
        dog.close()
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _aggregate(
        self,
        route: Route,
        stream: AsyncIterator[Chunk],
        chunk: Chunk,
        dog: Watchdog,
        send: Send,
    ) -> None:
        aggregator = Aggregator()
        try:
            while True:
                aggregator.add(chunk)
                dog.waiting()
                chunk = await stream.__anext__()
                dog.received()
        except StopAsyncIteration:
            pass
        except ProviderError as exc:
            await send_error(send, from_provider_error(exc, model=route.model_id))
            return
        except asyncio.CancelledError:
            reason = dog.claim()
            if reason != "disconnect":
                await send_error(send, _stop_error(reason, route))
            return
        dog.close()
        await send_json(
            send, 200, aggregator.completion(renderer=ChunkRenderer(model=route.model_id))
        )


def _stop_error(reason: str, route: Route) -> APIError:
    if reason == "shutdown":
        return ServiceUnavailable(
            "the gateway is shutting down; the response was cut short", code="shutdown"
        )
    what = {"idle": "stopped sending", "first_token": "sent nothing", "total": "ran too long"}
    return GatewayTimeout(
        f"the upstream for {route.model_id} {what.get(reason, 'timed out')} "
        f"({reason.replace('_', ' ')} timeout)",
        code=f"{reason}_timeout",
    )


async def _end_with_error(send: Send, dog: Watchdog, error: APIError) -> None:
    dog.close()
    await send(
        {"type": "http.response.body", "body": error_event(error.payload()), "more_body": False}
    )


async def _aclose(stream: AsyncIterator[Chunk]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


async def _watch_disconnect(receive: Receive, dog: Watchdog) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            dog.trip("disconnect")
            return
