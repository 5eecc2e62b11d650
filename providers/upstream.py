"""What every provider that speaks HTTP to an upstream does at its boundary, in one place.

:class:`Upstream` posts JSON through the gateway's transport (:mod:`providers.http1`) with the
header lines encoded once; transport failures are mapped into the
error tree with their cause (:func:`mapped`), bodies read with a bound (:func:`read_limited`),
``Retry-After`` read (:func:`retry_after`), configured values checked for a header line
(:func:`header_value`) or a base URL (:func:`check_base_url`), and upstream text redacted of the
provider's key and anything key-like before a client or a log sees it (:class:`Redactor`).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from types import TracebackType

import httpx
import orjson

from providers import http1
from providers.errors import (
    PoolExhausted,
    ProviderError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    malformed,
    status_error,
)
from providers.spec import ProviderContext

MAX_ERROR_BODY = 64 * 1024  # what is read of an error answer
MAX_JSON_BODY = 64 * 1024 * 1024  # a whole answer larger than this is refused
TRACE_HEADERS: ContextVar[bytes] = ContextVar("llm_gateway_trace_headers", default=b"")
"""Header lines (each ending in CRLF) that tie the upstream request to the gateway's trace, such
as W3C ``traceparent``: set by the gateway's tracing for the attempt being made, in the task
that makes it. A context variable rather than a :class:`~providers.base.ChatRequest` field, so
that every request type and every provider carries it without passing it along; empty, and so
free, when tracing is off."""
# Keys of any kind an upstream message might show: Google's (AIza...) and the usual prefixes.
KEYISH = re.compile(
    r"\bAIza[0-9A-Za-z_\-]{20,}|\b(?:sk|pk|key|tok|token|gsk|xai)[-_][A-Za-z0-9_\-]{6,}", re.I
)


class Upstream:
    """One upstream origin that a provider POSTs JSON to, through the gateway's pool.

    The header lines every request shares (host, content type, what is accepted, the
    provider's own ``headers`` such as its key) are encoded once; a request adds its request
    line, the body's length and the client request's id.
    """

    __slots__ = ("_connect_timeout", "_fields", "_origin", "_pool_timeout", "_transport", "name")

    def __init__(
        self, context: ProviderContext, url: httpx.URL, headers: Sequence[tuple[bytes, bytes]]
    ) -> None:
        self.name = context.name
        self._transport = context.transport
        self._origin = context.transport.origin(url)
        self._connect_timeout = context.connect_timeout
        self._pool_timeout = context.pool_timeout
        fields = [
            (b"host", url.netloc),
            (b"content-type", b"application/json"),
            (b"accept", b"text/event-stream, application/json"),
            (b"accept-encoding", b"identity"),
            (b"user-agent", b"llm-gateway"),
            *headers,
        ]
        self._fields = b"".join(name + b": " + value + b"\r\n" for name, value in fields)

    async def post(
        self,
        path: bytes,
        content: bytes,
        *,
        request_id: str | None = None,
        on_queue: Callable[[bool], None] | None = None,
    ) -> http1.RawResponse:
        """Send ``content`` to ``path``; the response once its head arrived (any status)."""
        head = b"POST " + path + b" HTTP/1.1\r\n" + self._fields
        head += b"content-length: " + str(len(content)).encode() + b"\r\n"
        if request_id:
            head += b"x-request-id: " + request_id.encode("latin-1") + b"\r\n"
        head += TRACE_HEADERS.get()
        with mapped(self.name, before_head=True):
            return await self._transport.exchange(
                self._origin,
                head + b"\r\n",
                content,
                connect_timeout=self._connect_timeout,
                pool_timeout=self._pool_timeout,
                on_queue=on_queue,
            )


def transport_error(
    exc: http1.TransportError, *, provider: str, before_head: bool
) -> ProviderError:
    """A transport failure in the error tree. ``before_head``: no response head had come."""
    where = f"the upstream of provider '{provider}'"
    if isinstance(exc, http1.ConnectTimedOut):
        return UpstreamTimeout(f"connecting to {where} timed out", phase="connect")
    if isinstance(exc, http1.ConnectFailed):
        return UpstreamConnectError(f"{where} is unreachable")
    if isinstance(exc, http1.PoolTimedOut):
        return PoolExhausted(
            f"every connection to {where} stayed busy; try again later or raise the "
            "provider's MAX_CONNECTIONS"
        )
    if isinstance(exc, http1.MalformedResponse):
        return UpstreamProtocolError(
            f"{where} sent a malformed HTTP response", code="upstream_malformed"
        )
    if before_head:  # the request went out; the upstream may have acted on it: no replay
        return UpstreamProtocolError(
            f"{where} closed the connection without answering", code="upstream_disconnected"
        )
    return UpstreamProtocolError(
        f"{where} broke the connection mid-response", code="upstream_truncated"
    )


class mapped:
    """Transport failures inside -> :func:`transport_error`, raised ``from`` the original.

    A class rather than a generator-based context manager: providers read a stream's every
    piece inside one, and this costs a fifth as much.
    """

    __slots__ = ("before_head", "provider")

    def __init__(self, provider: str, *, before_head: bool) -> None:
        self.provider = provider
        self.before_head = before_head

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, http1.TransportError):
            error = transport_error(exc, provider=self.provider, before_head=self.before_head)
            raise error from exc


async def read_limited(response: http1.RawResponse, *, limit: int) -> bytes:
    """The body, or its first ``limit`` bytes when it is longer (then ``len() == limit``)."""
    parts: list[bytes] = []
    size = 0
    async for part in response.aiter_raw():
        parts.append(part)
        size += len(part)
        if size >= limit:
            break
    return b"".join(parts)[:limit]


async def read_whole(response: http1.RawResponse) -> bytes:
    """A whole answer; past :data:`MAX_JSON_BODY` it is malformed, not read on."""
    raw = await read_limited(response, limit=MAX_JSON_BODY)
    if len(raw) >= MAX_JSON_BODY:
        raise malformed("the upstream's answer is larger than the gateway accepts")
    return raw


async def read_error_body(response: http1.RawResponse) -> bytes:
    """What can be read of an error answer (nothing, if the connection fails meanwhile)."""
    try:
        return await read_limited(response, limit=MAX_ERROR_BODY)
    except http1.TransportError:
        return b""


def error_message(raw: bytes) -> str:
    """The ``error.message`` (or a string ``error``) of an OpenAI- or Anthropic-style error
    body; empty when there is none."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return error if isinstance(error, str) else ""


async def status_failure(
    response: http1.RawResponse, *, provider: str, redact: Callable[[str], str]
) -> UpstreamStatusError:
    """The error for a non-2xx answer with an OpenAI- or Anthropic-style error body."""
    return status_error(
        response.status,
        provider=provider,
        detail=redact(error_message(await read_error_body(response))),
        retry_after=retry_after(response.header(b"retry-after")),
    )


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header's seconds (delta or HTTP date); None when absent or invalid."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def header_value(value: str) -> bytes:
    """A configured value fit for a header line, or a ValueError naming the problem."""
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain line breaks")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("must be Latin-1 text") from None


def check_base_url(value: str) -> httpx.URL:
    """A configured base URL, parsed; ValueError unless it is a valid http(s) URL."""
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    try:
        return httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"not a valid URL ({exc})") from None


class Redactor:
    """Upstream text without the provider's key (whole, a 12+ character piece of it, in any
    case) or anything else shaped like a key, cut to 500 characters."""

    __slots__ = ("_pieces",)

    def __init__(self, secret: str | None) -> None:
        self._pieces = _pieces_pattern(secret) if secret else None

    def __call__(self, text: str) -> str:
        if self._pieces is not None:
            text = self._pieces.sub("[redacted]", text)
        return KEYISH.sub("[redacted]", text)[:500]


def _pieces_pattern(secret: str, size: int = 12) -> re.Pattern[str]:
    """Matches any run of ``size``+ characters of ``secret`` (ignoring case), and what follows.

    An upstream may echo a key upper-cased, masked or cut (``Incorrect API key: abcd1234...``):
    every window of the key is an alternative, and the token characters after a window go too.
    Shorter windows would also hit plain words inside a key ("upstream" in "sk-upstream-..."),
    and the 3-4 character ends that upstreams show of a masked key identify nothing.
    """
    windows = {secret[i : i + size] for i in range(max(1, len(secret) - size + 1))}
    alternatives = "|".join(re.escape(w) for w in sorted(windows, key=len, reverse=True))
    return re.compile(f"(?:{alternatives})[\\w.\\-]*", re.IGNORECASE)
