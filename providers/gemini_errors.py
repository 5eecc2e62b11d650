"""The Gemini provider's failures, mapped into :mod:`providers.errors` in one place.

Two errors of its own join the tree::

    ProviderError
    ├── UnsupportedRequest       400  the request asks what Gemini cannot express; not retried
    └── UpstreamStreamError
        └── ModelOutputError     502  the model ended with unusable output (a malformed
                                      function call...); retried before the first byte

Google's error bodies are ``{"error": {"code", "message", "status", "details": [...]}}``,
sometimes inside a one-element array; :func:`google_error` reads the message and the two
details that matter: ``google.rpc.RetryInfo`` (a wait, like ``Retry-After``) and
``google.rpc.ErrorInfo`` (whose ``API_KEY_INVALID`` marks a 400 that means 401).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, ClassVar

from providers import http1
from providers.errors import (
    PoolExhausted,
    ProviderError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStreamError,
    UpstreamTimeout,
)

# Keys of any kind an upstream message might show: Google's (AIza...) and the usual prefixes.
KEYISH = re.compile(
    r"\bAIza[0-9A-Za-z_\-]{20,}|\b(?:sk|pk|key|tok|token|gsk|xai)[-_][A-Za-z0-9_\-]{6,}", re.I
)
# ErrorInfo reasons Google sends with a 400 that are about the key, not the request.
AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})


class UnsupportedRequest(ProviderError):
    """The request asks for something the Gemini API cannot express: the client's to fix."""

    client_fault: ClassVar[bool] = True
    counts_against_breaker = False
    status = 400
    code = "unsupported_parameter"


class ModelOutputError(UpstreamStreamError):
    """The model ended its turn with unusable output (a malformed function call...).

    Another sample may well succeed, so it is retried while nothing was sent to the client;
    and it says nothing about the deployment's health.
    """

    retryable = True
    counts_against_breaker = False


def malformed(message: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(message, code="upstream_malformed")


def transport_error(
    exc: http1.TransportError, *, provider: str, before_head: bool
) -> ProviderError:
    """A transport failure in the error tree (the same words as the openai provider's)."""
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


def google_error(data: Any) -> tuple[str, float | None, str | None]:
    """From a Google error body: its message, ``RetryInfo`` delay (s) and ``ErrorInfo`` reason."""
    if type(data) is list and data:
        data = data[0]
    error = data.get("error") if type(data) is dict else None
    if type(error) is str:
        return error, None, None
    if type(error) is not dict:
        return "", None, None
    message = error.get("message")
    delay: float | None = None
    reason: str | None = None
    details = error.get("details")
    for detail in details if type(details) is list else ():
        if type(detail) is not dict:
            continue
        kind = detail.get("@type")
        if kind == "type.googleapis.com/google.rpc.RetryInfo":
            value = detail.get("retryDelay")  # a protobuf Duration in JSON: "37s", "0.5s"
            if type(value) is str and value.endswith("s"):
                with contextlib.suppress(ValueError):
                    delay = max(0.0, float(value[:-1]))
        elif kind == "type.googleapis.com/google.rpc.ErrorInfo":
            value = detail.get("reason")
            reason = value if type(value) is str else None
    return (message if type(message) is str else ""), delay, reason
