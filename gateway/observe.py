"""What happens to each request, told to observers: the access log now; metrics, traces and the
usage ledger later, each one more :class:`Observer`, with no change to the hot path.

Every HTTP request gets a :class:`Call` (made by :class:`gateway.middleware.RequestContext`,
which reports :meth:`Observer.finished` when the response is done). The dispatch loop fills in
the model, the deployments tried, the first token, usage and the error, and reports each
attempt as it starts and ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.logs import FIELDS_ATTRIBUTE
from providers.base import Usage
from providers.errors import ProviderError

CALL_SCOPE_KEY = "llm_gateway.call"
access_logger = logging.getLogger("gateway.access")
_ACCESS = '%s "%s %s" %d %.1fms id=%s%s'
logger = logging.getLogger("gateway")


@dataclass(eq=False, slots=True)
class Call:
    """One client request, as observers see it. Never holds a key, a body or a prompt."""

    request_id: str
    method: str
    path: str
    client: str
    started: float  # time.perf_counter()
    key_id: str | None = None
    surface: str | None = None  # "chat", ...
    model: str | None = None  # the name the client asked for
    deployment: str | None = None  # the model id that answered (or was tried last)
    stream: bool = False
    attempts: int = 0
    first_token_at: float | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    status: int = 0
    error_code: str | None = None
    cause: str | None = None  # why the last attempt failed, with the transport's reason
    client_left: bool = False  # the client went away before the answer was complete
    attempt_started_at: float | None = None  # perf_counter() when the current attempt began
    # Micro-USD charged and whether the model had a price, once a virtual key's request is
    # settled (the ledger bills the same figure, not a second lookup).
    cost: tuple[int, bool] | None = None
    # Header lines ("name: value\r\n") the response carries besides its own: a limited
    # virtual key's x-ratelimit-* (gateway.response_head).
    head_lines: bytes | None = None
    trace: Any = None  # the tracing observer's state for this request (None when tracing is off)

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started


class Observer(Protocol):
    def attempt_started(self, call: Call, deployment: str) -> None: ...

    def attempt_finished(self, call: Call, deployment: str, error: ProviderError | None) -> None:
        """``error``: None when the attempt produced a first chunk."""
        ...

    def first_token(self, call: Call) -> None: ...

    def finished(self, call: Call) -> None:
        """The response is complete (or the client left): ``call.status`` is final."""
        ...


class QuietObserver:
    """An observer that ignores every report: subclass it and override only the reports you
    need; :class:`Observers` does not even call the others."""

    def attempt_started(self, call: Call, deployment: str) -> None:
        return None

    def attempt_finished(self, call: Call, deployment: str, error: ProviderError | None) -> None:
        return None

    def first_token(self, call: Call) -> None:
        return None

    def finished(self, call: Call) -> None:
        return None


class Observers:
    """Fans each report out to the observers that handle it (a :class:`QuietObserver`'s
    untouched reports are skipped: these run several times per request)."""

    __slots__ = ("_attempt_finished", "_attempt_started", "_finished", "_first_token", "observers")

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = tuple(observers)
        self._attempt_started = self._handlers("attempt_started")
        self._attempt_finished = self._handlers("attempt_finished")
        self._first_token = self._handlers("first_token")
        self._finished = self._handlers("finished")

    def _handlers(self, report: str) -> tuple[Callable[..., None], ...]:
        quiet = getattr(QuietObserver, report)
        return tuple(
            getattr(o, report) for o in self.observers if getattr(type(o), report) is not quiet
        )

    def attempt_started(self, call: Call, deployment: str) -> None:
        for handle in self._attempt_started:
            handle(call, deployment)

    def attempt_finished(self, call: Call, deployment: str, error: ProviderError | None) -> None:
        for handle in self._attempt_finished:
            handle(call, deployment, error)

    def first_token(self, call: Call) -> None:
        for handle in self._first_token:
            handle(call)

    def finished(self, call: Call) -> None:
        for handle in self._finished:
            handle(call)


class LogObserver(QuietObserver):
    """The access log (one line per request) and one warning per failed request.

    Lines carry the request id; never a key, a body or upstream text beyond our own messages.
    With ``structured``, both also carry the request's fields (:func:`call_fields`) for the
    JSON log format.
    """

    def __init__(self, *, access_log: bool = True, structured: bool = False) -> None:
        self.access_log = access_log
        self.structured = structured

    def finished(self, call: Call) -> None:
        extra = {FIELDS_ATTRIBUTE: call_fields(call)} if self.structured else None
        if self.access_log and access_logger.isEnabledFor(logging.INFO):
            # A record made here rather than by .info(): that would walk the stack for a
            # caller's file and line, which an access line does not need, on every request.
            args = (
                call.client,
                call.method,
                call.path,
                call.status,
                (time.perf_counter() - call.started) * 1000,
                call.request_id,
                _details(call),
            )
            access_logger.handle(
                access_logger.makeRecord(
                    access_logger.name, logging.INFO, "", 0, _ACCESS, args, None, extra=extra
                )
            )
        if call.error_code is not None and call.attempts:
            logger.warning(
                "request %s failed: %s %s model=%s deployment=%s attempts=%d error=%s cause=%s",
                call.request_id,
                call.method,
                call.path,
                call.model,
                call.deployment,
                call.attempts,
                call.error_code,
                call.cause,
                extra=extra,
            )


def call_fields(call: Call) -> dict[str, Any]:
    """The request's fields for a structured log line."""
    fields: dict[str, Any] = {
        "request_id": call.request_id,
        "key_id": call.key_id,
        "client": call.client,
        "method": call.method,
        "path": call.path,
        "status": call.status,
        "duration_ms": round((time.perf_counter() - call.started) * 1000, 3),
    }
    if call.surface is not None:
        deployment = call.deployment
        fields.update(
            surface=call.surface,
            model=call.model,
            deployment=deployment,
            provider=deployment.split("/", 1)[0] if deployment else None,
            stream=call.stream,
            attempts=call.attempts,
            ttft_ms=None if call.ttft is None else round(call.ttft * 1000, 3),
            finish_reason=call.finish_reason,
        )
        usage = call.usage
        if usage is not None:
            fields.update(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_tokens=usage.cached_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                usage_source=usage.source,
            )
    if call.error_code is not None:
        fields.update(error=call.error_code, cause=call.cause)
    return fields


def _details(call: Call) -> str:
    if call.surface is None:
        return ""
    line = f" model={call.model} deployment={call.deployment} attempts={call.attempts}"
    first_token_at = call.first_token_at
    if first_token_at is not None:
        line += f" ttft={(first_token_at - call.started) * 1000:.1f}ms"
    usage = call.usage
    if usage is not None:
        line += f" tokens={usage.input_tokens}+{usage.output_tokens}"
    if call.error_code is not None:
        line += f" error={call.error_code}"
    return line


def describe_cause(exc: BaseException) -> str:
    """An exception and its causes, one ``Class: message`` each, for operators' logs."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < 4:
        seen.add(id(current))
        text = str(current)[:300]
        parts.append(f"{type(current).__name__}: {text}" if text else type(current).__name__)
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)
