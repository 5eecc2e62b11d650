"""The errors a provider raises at its boundary, and the one policy for upstream failures.

Every transport or upstream failure is mapped once, inside the adapter, into this tree. Each
class says, as attributes, what the gateway does with it: whether another attempt at the same
deployment may succeed (``retryable``), whether the request itself is at fault so that no other
model would do better (``client_fault``), whether it shows the deployment is unhealthy
(``counts_against_breaker``), and what the client gets (``status``, ``code``)::

    ProviderError                          retry  client  breaker  client gets
    ├── UpstreamStatusError                (made by status_error(); never raised as itself)
    │   ├── UpstreamRejected  400 409 422     -      yes      -     400 (404 model_not_found, 413)
    │   │   └── UnsupportedRequest            -      yes      -     400, nothing was sent
    │   ├── UpstreamAuthFailed  401 403       -       -       -     502 upstream_auth_failed
    │   ├── UpstreamRateLimited  429         yes      -       -     429 rate_limit_exceeded
    │   └── UpstreamServerError  5xx, other  5xx*     -      yes    502 upstream_error
    ├── UpstreamConnectError                 yes      -      yes    502 upstream_unavailable
    ├── UpstreamTimeout                      c/ft     -      yes    504 <phase>_timeout
    ├── UpstreamStreamError                   -       -      yes    502 upstream_error
    ├── UpstreamProtocolError                 -       -      yes    502 upstream_malformed,
    │                                                               upstream_truncated, ...
    └── PoolExhausted                         -       -       -     503 pool_exhausted

    * 408, 500, 502, 503, 504 and 529 are retried; c/ft: connect and first-token timeouts.

Messages are written for the client: they never contain upstream bodies verbatim or keys.
"""

from __future__ import annotations

import re
from typing import ClassVar

# What upstreams say when a prompt does not fit the model: OpenAI and vLLM ("maximum context
# length", or the code itself), Anthropic ("prompt is too long"), Gemini ("The input token
# count (N) exceeds the maximum number of tokens allowed"), llama.cpp and others ("context
# window", "context size").
_CONTEXT_OVERFLOW = re.compile(
    r"maximum context length|context_length_exceeded|prompt is too long|context window"
    r"|context size|input token count .{0,40}exceeds",
    re.IGNORECASE,
)


class ProviderError(Exception):
    """Base class: a failure of the upstream (or of the provider code), not of the gateway."""

    retryable: bool = False
    client_fault: ClassVar[bool] = False
    counts_against_breaker: bool = True
    status: int = 502
    code: str = "upstream_error"
    # The upstream said it is overloaded (HTTP 503/529, or Anthropic's overloaded_error in a
    # stream): Anthropic's clients back off and retry on that, and on nothing else.
    overloaded: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class UpstreamStatusError(ProviderError):
    """The upstream answered with a non-2xx status (``upstream_status``)."""

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.upstream_status = status
        self.retry_after = retry_after
        self.overloaded = status in (503, 529)


class UpstreamRejected(UpstreamStatusError):
    """The upstream refused the request itself: any other attempt would get the same."""

    client_fault = True
    counts_against_breaker = False
    code = "upstream_rejected_request"

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message, status=status, retry_after=retry_after)
        if status == 404:
            self.status, self.code = 404, "model_not_found"
        elif status == 413:
            self.status = 413
        else:
            self.status = 400
            if _CONTEXT_OVERFLOW.search(message):  # clients compact or trim on this code
                self.code = "context_length_exceeded"


class UpstreamAuthFailed(UpstreamStatusError):
    """The upstream refused the gateway's credentials: the operator's problem, not the client's."""

    counts_against_breaker = False
    code = "upstream_auth_failed"


class UpstreamRateLimited(UpstreamStatusError):
    retryable = True
    counts_against_breaker = False
    status = 429
    code = "rate_limit_exceeded"


class UpstreamServerError(UpstreamStatusError):
    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message, status=status, retry_after=retry_after)
        self.retryable = status in RETRIED_STATUSES


class UpstreamConnectError(ProviderError):
    """No connection could be made: nothing reached the upstream."""

    retryable = True
    code = "upstream_unavailable"


class UpstreamTimeout(ProviderError):
    status = 504

    def __init__(self, message: str, *, phase: str) -> None:
        super().__init__(message, code=f"{phase}_timeout")
        self.phase = phase
        # A connect or first-token timeout produced nothing: another try is safe.
        self.retryable = phase in ("connect", "first_token")


class UpstreamStreamError(ProviderError):
    """The upstream reported an error inside its stream."""


class UpstreamProtocolError(ProviderError):
    """Malformed, truncated or otherwise broken output; also a provider's own bug."""

    code = "upstream_protocol_error"


class PoolExhausted(ProviderError):
    """No upstream connection became free in time: the gateway is busy, not the upstream."""

    counts_against_breaker = False
    status = 503
    code = "pool_exhausted"


class UnsupportedRequest(UpstreamRejected):
    """The request asks for what this provider's API cannot express: a 400 for the client,
    and nothing was sent. A rejection, so it is neither retried nor counted against the
    deployment."""

    def __init__(self, message: str, *, code: str = "unsupported_parameter") -> None:
        super().__init__(message, status=400)
        self.code = code


def malformed(message: str) -> UpstreamProtocolError:
    """What an upstream sent is not the shape its API promises."""
    return UpstreamProtocolError(message, code="upstream_malformed")


RETRIED_STATUSES = frozenset({408, 500, 502, 503, 504, 529})
REJECTED_STATUSES = frozenset({400, 404, 409, 413, 422})


def status_error(
    status: int, *, provider: str, detail: str = "", retry_after: float | None = None
) -> UpstreamStatusError:
    """The error for an upstream's non-2xx ``status``: the one place statuses are classified.

    ``detail`` (the upstream's own message, already redacted) is shown only when the request
    itself was refused, since only then does it tell the client something it can fix.
    """
    if status in REJECTED_STATUSES:
        message = f"the upstream rejected the request (HTTP {status})"
        return UpstreamRejected(
            message + (": " + detail if detail else ""), status=status, retry_after=retry_after
        )
    if status in (401, 403):
        return UpstreamAuthFailed(
            f"the upstream of provider '{provider}' refused the gateway's credentials "
            f"(HTTP {status}); check the provider's API key",
            status=status,
        )
    if status == 429:
        return UpstreamRateLimited(
            f"the upstream of provider '{provider}' is rate limiting (HTTP 429)",
            status=status,
            retry_after=retry_after,
        )
    return UpstreamServerError(
        f"the upstream of provider '{provider}' failed (HTTP {status})",
        status=status,
        retry_after=retry_after,
    )
