"""What the surfaces that pass a request to an optional provider capability share.

Embeddings and legacy completions are declared as pydantic ``TypeAdapter``s over TypedDicts
(strict: no ``"5"`` for 5, no ``true`` for 1); a validation error becomes OpenAI's 400 with
``param`` naming the field (``input[3]``). Before pydantic sees a body it goes through chat's
``parse_json`` and forbidden-key scan, so the same body limits and SSRF guard hold everywhere.

:class:`Surface` is the request's way through, the same as chat's: read and check the body,
keep the deployments whose provider has the capability (400 naming the provider if none has),
open a dispatch session, and let the surface serve the answer.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError
from starlette.types import Receive, Scope, Send

from gateway.asgi import (
    DISCONNECT_SCOPE_KEY,
    ClientDisconnected,
    header,
    read_body,
    send_error,
)
from gateway.dispatch import COMMENT, Dispatcher, Session
from gateway.errors import APIError, InvalidRequest, MethodNotAllowed
from gateway.observe import CALL_SCOPE_KEY, Call
from gateway.routing import Deployment, Router
from gateway.surfaces.chat_render import DONE, error_event
from gateway.tenancy.admission import TENANT_SCOPE_KEY, Tenant
from gateway.tenancy.estimate import chat_tokens
from gateway.validation import Limits, check_content_type, parse_json, scan_body
from providers.base import Usage

logger = logging.getLogger("gateway")
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]
T = TypeVar("T")
R = TypeVar("R")


# The tags of a discriminated "text(s) or token ids" union: see :func:`input_shape`.
SHAPE_TAGS = frozenset({"text", "texts", "tokens", "token_arrays"})


def input_shape(value: Any) -> str | None:
    """Which of OpenAI's four shapes of an ``input`` or ``prompt`` ``value`` tries to be (None:
    none), so that an error names the element at fault in that shape, not every shape's
    complaint."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        first = value[0] if value else ""
        if isinstance(first, str):
            return "texts"
        if isinstance(first, int) and not isinstance(first, bool):
            return "tokens"
        if isinstance(first, list):
            return "token_arrays"
    return None


def parse_body(
    raw: bytes, adapter: TypeAdapter[T], *, tags: frozenset[str]
) -> tuple[T, dict[str, Any]]:
    """The body checked by ``adapter`` and the body as sent (for pass-through), or 400.

    ``tags`` are the adapter's union tags, which pydantic puts in an error's ``loc`` but which
    name no field of the request.
    """
    body = parse_json(raw)
    scan_body(body)
    try:
        return adapter.validate_python(body), body
    except ValidationError as exc:
        raise invalid_request(exc, tags=tags) from None


def invalid_request(exc: ValidationError, *, tags: frozenset[str] = frozenset()) -> InvalidRequest:
    """pydantic's first error as OpenAI's: ``param`` is the field's path, ``input[2]``."""
    error = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    param = ""
    for part in error["loc"]:
        if isinstance(part, int):
            param += f"[{part}]"
        elif part not in tags:
            param += f".{part}" if param else str(part)
    kind, message = error["type"], error["msg"]
    if kind == "missing":
        message = f"{param} is required"
    elif param and not message.startswith(param):
        message = f"invalid {param}: {message}"
    return InvalidRequest(message, param=param or None)


def printable(value: str) -> str:
    """A client's string, fit for a message or a log line: bounded, no control characters."""
    if len(value) <= 200 and value.isprintable():
        return value
    return "".join(ch if ch.isprintable() else "?" for ch in value[:200])


def capable(
    chain: Sequence[Deployment], capability: type | None, *, model: str, what: str
) -> tuple[Deployment, ...]:
    """The deployments of ``chain`` whose provider implements ``capability`` (None: every
    provider, chat), in order.

    A fallback to a provider without it is skipped; when none has it the request is the
    client's mistake (that model cannot do this), not an upstream failure: 400.
    """
    if capability is None:
        return tuple(chain)
    able = tuple(d for d in chain if isinstance(d.provider, capability))
    if not able:
        provider = chain[0].provider.name
        raise InvalidRequest(
            f"the model '{printable(model)}' is served by provider '{provider}', which does not "
            f"support {what}",
            param="model",
            code="model_not_supported",
        )
    return able


def usage_from(value: Any) -> Usage | None:
    """OpenAI's usage object (already shape-checked by the provider) as a :class:`Usage`."""
    if not isinstance(value, dict):
        return None

    def count(v: Any) -> int:
        return v if type(v) is int and v >= 0 else 0

    details = value.get("prompt_tokens_details")
    return Usage(
        input_tokens=count(value.get("prompt_tokens")),
        output_tokens=count(value.get("completion_tokens")),
        cached_tokens=count(details.get("cached_tokens")) if isinstance(details, dict) else 0,
    )


@dataclass(slots=True)
class Parsed(Generic[R]):
    """A checked request: what the surface serves, and what observers, admission (a virtual
    key's limits: :mod:`gateway.tenancy.admission`) and dispatch need."""

    request: R
    model: str
    stream: bool = False
    # An upper bound of the input tokens, computed only for keys with limits.
    estimate_input: Callable[[], int] | None = None
    output_cap: int | None = None  # the client's bound on output tokens per choice (None: none)
    choices: int = 1
    # Sets an output bound on the upstream request when the client gave none (admission
    # injects one so that what it reserved is a real bound).
    cap_output: Callable[[int], None] | None = None

    @classmethod
    def of_chat_body(
        cls,
        request: R,
        body: dict[str, Any],
        *,
        model: str,
        stream: bool,
        output_cap: int | None,
        choices: int = 1,
    ) -> Parsed[R]:
        """For a request that goes upstream as the chat body ``body``: its input estimated from
        that body, and a missing output bound injected there as ``max_completion_tokens``."""

        def cap_output(tokens: int) -> None:
            body["max_completion_tokens"] = tokens

        return cls(
            request,
            model,
            stream,
            estimate_input=functools.partial(chat_tokens, body),  # no frame of its own
            output_cap=output_cap,
            choices=choices,
            cap_output=cap_output,
        )


class Surface(abc.ABC, Generic[R]):
    """A raw-ASGI endpoint for one capability: POST a JSON body, get OpenAI's answer.

    Before the first byte a failure gets a real status and the surface's error body
    (:meth:`send_error`: OpenAI's unless overridden); what happens after it is the surface's
    (:meth:`serve`).
    """

    path: ClassVar[str]
    surface: ClassVar[str]  # Call.surface
    capability: ClassVar[type | None]  # a runtime-checkable protocol of providers.base
    capability_name: ClassVar[str]  # for the 400 when no provider has it

    def __init__(self, *, router: Router, dispatcher: Dispatcher, max_body_bytes: int) -> None:
        self.router = router
        self.dispatcher = dispatcher
        self.max_body_bytes = max_body_bytes

    @abc.abstractmethod
    def parse(self, raw: bytes) -> Parsed[R]:
        """Check the body; raise :class:`InvalidRequest` with ``param``."""

    @abc.abstractmethod
    async def serve(self, session: Session, request: R, send: Send) -> None:
        """Answer through ``session`` (``open`` then ``pump``), errors included."""

    async def send_error(self, send: Send, error: APIError) -> None:
        """Answer ``error`` before the first byte, in the surface's own error shape (OpenAI's
        here; Anthropic's Messages surface renders its own)."""
        await send_error(send, error)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call: Call | None = scope.get(CALL_SCOPE_KEY)
        if call is None:  # served outside RequestContext (a bare app in a test)
            call = Call("-", scope["method"], scope["path"], "-", time.perf_counter())
        call.surface = self.surface
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"use POST for {self.path}")
            check_content_type(header(scope, b"content-type"))
            raw = await read_body(scope, receive, limit=self.max_body_bytes)
            parsed = self.parse(raw)
            call.model = printable(parsed.model)
            call.stream = parsed.stream
            chain = capable(
                self.router.chain(parsed.model),
                self.capability,
                model=parsed.model,
                what=self.capability_name,
            )
            tenant: Tenant | None = scope.get(TENANT_SCOPE_KEY)
            ticket = await tenant.admit(call, parsed, chain) if tenant is not None else None
        except ClientDisconnected:
            call.client_left = True
            return
        except APIError as exc:
            call.error_code = exc.code
            await self.send_error(send, exc)
            return
        try:
            async with self.dispatcher.session(
                call,
                receive,
                chain,
                stream=parsed.stream,
                disconnect=scope.get(DISCONNECT_SCOPE_KEY),
            ) as session:
                await self.serve(session, parsed.request, send)
        except ClientDisconnected:
            call.client_left = True
        except Exception:  # a bug, not a client's or upstream's fault: say so, tell nothing
            logger.exception("request %s: unexpected error", call.request_id)
            call.error_code = "internal_error"
            with contextlib.suppress(Exception):  # fails if the response had started
                await self.send_error(
                    send, APIError("internal error in the gateway", code="internal_error")
                )
        finally:
            if ticket is not None:  # exactly once, whatever ended the request
                pending = ticket.settle(call)  # None: settled at once (the compiled ticket)
                if pending is not None:
                    await pending


class LimitedSurface(Surface[R]):
    """A surface whose bodies are checked against the request limits (messages, sizes)."""

    def __init__(
        self, *, router: Router, dispatcher: Dispatcher, limits: Limits, max_body_bytes: int
    ) -> None:
        super().__init__(router=router, dispatcher=dispatcher, max_body_bytes=max_body_bytes)
        self.limits = limits


PING = b'event: ping\ndata: {"type": "ping"}\n\n'  # Anthropic's keep-alive event


def keep_alive(session: Session, send: Send, *, frame: bytes = COMMENT) -> None:
    """A streamed answer's keep-alive frames (``GATEWAY_STREAM_KEEPALIVE``): an SSE comment,
    or the surface's own ``frame`` once its stream flows."""
    session.keep_alive(send, SSE_HEADERS, frame)


async def send_head(session: Session, send: Send) -> None:
    """The SSE response head, unless a keep-alive already sent it."""
    if not session.committed:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        except OSError:  # ASGI 2.4 servers raise it once the client is gone
            raise ClientDisconnected from None


def stream_error(error: APIError) -> bytes:
    """OpenAI's error frame in a stream (no ``[DONE]`` after it)."""
    return error_event(error.payload())


async def answer_failure(
    session: Session,
    send: Send,
    error: APIError,
    *,
    plain: Callable[[Send, APIError], Awaitable[None]],
    event: Callable[[APIError], bytes],
) -> None:
    """A request that failed before its first item: its own error response with its status
    (``plain``), or, when keep-alive frames already began a 200 stream, the surface's error
    ``event`` to end that stream."""
    await session.quiet()
    if session.committed:
        await send({"type": "http.response.body", "body": event(error), "more_body": False})
    else:
        await plain(send, error)


async def serve_sse(
    session: Session,
    first: T,
    render: Callable[[T], bytes],
    send: Send,
    *,
    tail: Callable[[], bytes],
) -> None:
    """Answer as OpenAI's SSE grammar: the response head, every item as ``render`` frames it,
    then ``tail()`` (a usage event, or nothing) and ``[DONE]``; after a failure, an error
    event and no ``[DONE]``."""
    await send_head(session, send)
    error = await session.pump(first, render, send)
    end = stream_error(error) if error is not None else tail() + DONE
    await send({"type": "http.response.body", "body": end, "more_body": False})
