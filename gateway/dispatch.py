"""The one attempt loop every API surface calls: deployments in order, retries, breakers and
the watchdog, reported to the observers.

A surface opens a :class:`Session` for a request, asks it for the first item of the first
deployment that gives one (:meth:`Session.open`), then has the rest pumped into its own sink
(:meth:`Session.pump`). Before the first item, failures are retried, fall back to the next
deployment and end as an :class:`APIError` with a real status; after it, :meth:`pump` returns
the error for the surface to render in its stream. A client that goes away raises
:class:`ClientDisconnected` and cancels the upstream call at once.

Every attempt is paired structurally: whatever ends it, its stream is closed, its deployment's
in-flight count given back and its breaker told exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from starlette.types import Receive, Send

from gateway.asgi import ClientDisconnected, DisconnectSignal
from gateway.errors import (
    APIError,
    CoolingDown,
    GatewayTimeout,
    ServiceUnavailable,
    from_provider_error,
)
from gateway.observe import Call, Observers, describe_cause
from gateway.routing import Deployment
from gateway.watchdog import Watchdog
from providers.base import ChatRequest
from providers.errors import ProviderError, UpstreamProtocolError, UpstreamTimeout

logger = logging.getLogger("gateway")
T = TypeVar("T")
GUARD_GRACE = 1.0  # seconds a plugin's step has to end once cancelled
Start = Callable[[Deployment], AsyncGenerator[T, None]]


COMMENT = b": keep-alive\n\n"  # an SSE comment: every client's parser skips it


class Dispatcher:
    """Holds what every request's session shares: the observers, the keep-alive interval."""

    def __init__(self, *, observers: Observers, keepalive: float = 0.0) -> None:
        self.observers = observers
        self.keepalive = keepalive

    def session(
        self,
        call: Call,
        receive: Receive,
        chain: Sequence[Deployment],
        *,
        stream: bool,
        disconnect: DisconnectSignal | None = None,
    ) -> Session:
        return Session(
            call,
            receive,
            chain,
            stream=stream,
            observers=self.observers,
            disconnect=disconnect,
            keepalive=self.keepalive,
        )


class Session:
    """One client request's way through its deployments. Use it as ``async with``."""

    # Keep-alives (keep_alive()); class-level defaults: most requests never set them.
    committed = False  # a keep-alive sent the response head before the first item
    _ka: tuple[Send, list[tuple[bytes, bytes]], bytes] | None = None  # send, headers, frame
    _ka_task: asyncio.Task[None] | None = None  # the keep-alive being written

    def __init__(
        self,
        call: Call,
        receive: Receive,
        chain: Sequence[Deployment],
        *,
        stream: bool,
        observers: Observers,
        disconnect: DisconnectSignal | None = None,
        keepalive: float = 0.0,
    ) -> None:
        self.call = call
        self.chain = chain
        self.stream = stream
        self.observers = observers
        self._receive = receive
        self._disconnect = disconnect
        self._open: tuple[Deployment, AsyncGenerator[Any, None]] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.keepalive = keepalive  # seconds; 0: no keep-alive frames

    async def __aenter__(self) -> Session:
        first = self.chain[0].policy
        dog = self.dog = Watchdog(idle=first.idle, total=first.total)
        if self._disconnect is not None:  # the gateway's own server says when the client left
            self._disconnect.add(dog.client_left)
        else:  # another ASGI server: only receive() says it
            self._watcher = asyncio.get_running_loop().create_task(
                _watch_disconnect(self._receive, dog)
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._end(None, None)
        finally:
            self.dog.close()
            if self._ka_task is not None:
                await self.quiet()
            if self._watcher is not None:
                self._watcher.cancel()

    def keep_alive(self, send: Send, headers: list[tuple[bytes, bytes]], frame: bytes) -> None:
        """For a streamed answer, called before :meth:`open`: whenever :attr:`keepalive`
        seconds pass with nothing for the client, send a frame, so that no proxy or client
        between here and the user takes a slow first token or a long pause for a dead
        connection. Before the first item the frame is an SSE comment, after a 200 head with
        ``headers`` (sent once: :attr:`committed` then says a failure must be told in the
        stream); after it, ``frame``. Nothing per chunk: the watchdog's one timer says when
        the stream has been quiet."""
        if self.keepalive > 0:
            self._ka = (send, headers, frame)
            self.dog.keep_quiet(self.keepalive, self._quiet_for_long)

    def _quiet_for_long(self) -> None:
        if self._ka_task is None or self._ka_task.done():
            self._ka_task = asyncio.get_running_loop().create_task(self._keep_alive())

    async def _keep_alive(self) -> None:
        if self._ka is None:
            return
        send, headers, frame = self._ka
        try:
            flowing = self.dog.phase == "idle"  # the first item came: the surface's head
            if not flowing and not self.committed:
                self.committed = True
                await send({"type": "http.response.start", "status": 200, "headers": headers})
            body = frame if flowing else COMMENT
            await send({"type": "http.response.body", "body": body, "more_body": True})
        except Exception as exc:  # OSError: the client left (the disconnect watch ends it)
            logger.debug("request %s: keep-alive not sent: %r", self.call.request_id, exc)

    async def quiet(self) -> None:
        """No more keep-alive frames: the surface is about to send the response's end. One
        being written is let finish (its head may be the response's)."""
        self._ka = None
        self.dog.on_quiet, self.dog.keepalive = None, math.inf
        task, self._ka_task = self._ka_task, None
        if task is not None:
            await task

    @property
    def deployment(self) -> Deployment:
        """The deployment whose stream is open (after :meth:`open` returned)."""
        assert self._open is not None
        return self._open[0]

    def queued(self, waiting: bool) -> None:
        """For providers' ``on_queue``: time queued for a connection is not the upstream's."""
        self.dog.queued(waiting)

    def chat_request(self, model: str, body: dict[str, Any], *, stream: bool) -> ChatRequest:
        """A chat request for one attempt at upstream ``model``, tied to this session: it
        carries the client request's id, and its waits for a connection pause the watchdog."""
        return ChatRequest(
            model, body, stream=stream, request_id=self.call.request_id, on_queue=self.queued
        )

    async def open(self, start: Start[T]) -> T:
        """The first item of the first deployment that gives one, with retries and fallbacks."""
        call, dog = self.call, self.dog
        error: ProviderError | None = None
        for deployment in self.chain:
            policy = deployment.policy
            dog.idle = policy.idle or math.inf
            attempt = 0
            while True:
                if not deployment.breaker.allow():
                    error = error or CoolingDown(
                        f"'{deployment.model_id}' is cooling down after repeated failures",
                        retry_after=deployment.breaker.retry_after,
                    )
                    break
                call.attempts += 1
                call.deployment = deployment.model_id
                call.attempt_started_at = time.perf_counter()
                self.observers.attempt_started(call, deployment.model_id)
                # A whole answer fetched at once has no first token to time: the total applies.
                dog.restart_first_token(policy.first_token if self.stream else None)
                deployment.in_flight += 1
                stream = start(deployment)
                if deployment.guarded:
                    stream = guarded(stream, provider=deployment.provider.name)
                self._open = (deployment, stream)
                try:
                    first = await stream.__anext__()
                    if dog.reason is not None:  # the provider swallowed our cancellation
                        raise asyncio.CancelledError
                except StopAsyncIteration:
                    error = UpstreamProtocolError(
                        "the upstream ended the stream without any output",
                        code="upstream_truncated",
                    )
                except ProviderError as exc:
                    # Kept past this block: without its traceback, which holds this frame
                    # (and so the error itself: a cycle left to the collector each failure).
                    error = exc.with_traceback(None)
                except asyncio.CancelledError:
                    reason = dog.claim()
                    if reason != "first_token":
                        await self._end(False if reason == "total" else None, None)
                        if reason == "disconnect":
                            raise ClientDisconnected from None
                        raise self._stopped(reason, deployment) from None
                    error = UpstreamTimeout(
                        f"no first token from {deployment.model_id} in time", phase="first_token"
                    )
                except Exception as exc:
                    error = _contained(exc, deployment)
                else:
                    dog.received()
                    deployment.breaker.alive()
                    call.error_code = call.cause = None  # earlier attempts failed; this one did not
                    call.first_token_at = time.perf_counter()
                    self.observers.attempt_finished(call, deployment.model_id, None)
                    self.observers.first_token(call)
                    return first
                await self._end(False if error.counts_against_breaker else None, error)
                delay = policy.retry.delay(attempt, error)
                if delay is None:
                    break
                attempt += 1
                dog.pause()
                logger.info(
                    "request %s: retrying %s in %.2fs: %s",
                    call.request_id,
                    deployment.model_id,
                    delay,
                    error.message,
                )
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    reason = dog.claim()
                    if reason == "disconnect":
                        raise ClientDisconnected from None
                    raise self._stopped(reason, deployment) from None
            if error is not None and error.client_fault:
                break
        assert error is not None
        raise self._failed(from_provider_error(error))

    async def pump(
        self, first: T, render: Callable[[T], bytes], send: Send | None = None
    ) -> APIError | None:
        """``render`` ``first`` and every later item; what it returns, when not empty, goes to
        ``send`` as a part of the response body. None when the stream completed, else the
        error to render (the stream is over either way).

        ``render`` is a plain function and the body part is sent from here: this loop runs
        once per streamed chunk, and a coroutine per chunk would cost more than the work.
        """
        assert self._open is not None
        deployment, stream = self._open
        dog = self.dog
        try:
            return await self._pump(deployment, stream, first, render, send)
        finally:
            dog.close()  # the stream is over: nothing may cancel what the surface sends last
            if self._ka_task is not None:
                await self.quiet()  # nor come after it

    async def _pump(
        self,
        deployment: Deployment,
        stream: AsyncGenerator[Any, None],
        first: T,
        render: Callable[[T], bytes],
        send: Send | None,
    ) -> APIError | None:
        dog = self.dog
        item = first
        next_item = stream.__anext__
        try:
            while True:
                body = render(item)
                if body and send is not None:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                dog.waiting()
                try:
                    item = await next_item()
                except (StopAsyncIteration, ProviderError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    raise _contained(exc, deployment) from exc
                if dog.reason is not None:  # the provider swallowed our cancellation
                    raise asyncio.CancelledError
                dog.received()
        except StopAsyncIteration:
            await self._end(True, None)
            return None
        except ProviderError as exc:
            await self._end(False if exc.counts_against_breaker else None, exc)
            return self._failed(from_provider_error(exc))
        except asyncio.CancelledError:
            reason = dog.claim()
            await self._end(False if reason in ("idle", "total") else None, None)
            if reason == "disconnect":
                raise ClientDisconnected from None
            return self._stopped(reason, deployment)
        except OSError:  # ASGI 2.4 servers raise it from send() once the client is gone
            await self._end(None, None)
            raise ClientDisconnected from None

    async def _end(self, verdict: bool | None, error: ProviderError | None) -> None:
        """Close the open attempt: its stream, its in-flight count, its breaker's verdict
        (True: completed, False: counts as a failure, None: no verdict)."""
        if self._open is None:
            return
        deployment, stream = self._open
        self._open = None
        deployment.in_flight -= 1
        if verdict is True:
            deployment.breaker.success()
        elif verdict is False:
            deployment.breaker.failure()
        else:
            deployment.breaker.release()
        if error is not None:
            self.call.error_code = error.code
            self.call.cause = describe_cause(error)
            self.observers.attempt_finished(self.call, deployment.model_id, error)
        await stream.aclose()

    def _stopped(self, reason: str, deployment: Deployment) -> APIError:
        """The error for a request the watchdog (or the server's shutdown) stopped."""
        if reason == "shutdown":
            error: APIError = ServiceUnavailable(
                "the gateway is shutting down; the response was cut short", code="shutdown"
            )
        else:
            what = {
                "idle": "stopped sending",
                "first_token": "sent nothing",
                "total": "ran too long",
            }
            error = GatewayTimeout(
                f"the upstream for {deployment.model_id} {what.get(reason, 'timed out')} "
                f"({reason.replace('_', ' ')} timeout)",
                code=f"{reason}_timeout",
            )
        self.call.cause = f"{reason} timeout" if reason != "shutdown" else "shutdown"
        return self._failed(error)

    def _failed(self, error: APIError) -> APIError:
        self.call.error_code = error.code
        return error


async def guarded(
    stream: AsyncGenerator[T, None], *, provider: str, grace: float = GUARD_GRACE
) -> AsyncGenerator[T, None]:
    """``stream`` with each step awaited in a task of its own.

    A provider's code runs in the request's task, so a provider that catches every
    cancellation could hold a request (and a drain) for ever. Behind this guard, a cancelled
    request cancels the step, gives it ``grace`` seconds, then leaves it behind and goes on.
    Plugins' streams get it (a task per step); the built-in providers, whose cancellation is
    tested, do not.
    """

    async def step() -> T:
        return await stream.__anext__()

    pending: asyncio.Task[T] | None = None
    try:
        while True:
            pending = asyncio.ensure_future(step())
            try:
                item = await asyncio.shield(pending)
            except asyncio.CancelledError:
                pending.cancel()
                await asyncio.wait({pending}, timeout=grace)
                if not pending.done():
                    logger.error(
                        "provider '%s' ignored a cancellation for %.1fs: left behind",
                        provider,
                        grace,
                    )
                raise
            except StopAsyncIteration:
                pending = None
                return
            pending = None
            yield item
    finally:
        if pending is None or pending.done():
            await stream.aclose()


def _contained(exc: Exception, deployment: Deployment) -> UpstreamProtocolError:
    """A provider raised something outside the error tree: a bug there, a 502 here."""
    logger.error(
        "provider '%s' raised an unexpected %s",
        deployment.provider.name,
        type(exc).__name__,
        exc_info=exc,
    )
    return UpstreamProtocolError(
        f"the provider for {deployment.model_id} failed", code="provider_failed"
    )


async def _watch_disconnect(receive: Receive, dog: Watchdog) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            dog.client_left()
            return
