"""The Gemini provider's failures, mapped into :mod:`providers.errors` in one place.

One error of its own joins the tree::

    ProviderError
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
from typing import Any

from providers.errors import UpstreamStreamError

# ErrorInfo reasons Google sends with a 400 that are about the key, not the request.
AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})


class ModelOutputError(UpstreamStreamError):
    """The model ended its turn with unusable output (a malformed function call...).

    Another sample may well succeed, so it is retried while nothing was sent to the client;
    and it says nothing about the deployment's health.
    """

    retryable = True
    counts_against_breaker = False


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
