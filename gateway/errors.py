"""The gateway's one error tree, rendered as OpenAI's error body.

Each class carries its HTTP status and OpenAI ``type``, so rendering needs no if-chain::

    APIError
    ├── InvalidRequest        400 invalid_request_error (``param`` names the field)
    ├── AuthenticationError   401 (with WWW-Authenticate)
    ├── NotFound              404 (model_not_found, unknown route)
    ├── MethodNotAllowed      405
    ├── PayloadTooLarge       413
    ├── UnsupportedMediaType  415
    ├── PermissionDenied      403 (a virtual key's model list)
    ├── RateLimited           429 (with Retry-After)
    │   └── InsufficientQuota 429 a budget is spent (x-should-retry: false)
    ├── ServiceUnavailable    503 (shutting down; a provider cooling down, with Retry-After)
    ├── BadGateway            502 upstream failure
    └── GatewayTimeout        504 upstream too slow

Provider failures are mapped into it in one place, :func:`from_provider_error`, from the status
and code each provider error carries (the one policy lives in :mod:`providers.errors`).
:func:`anthropic_error` renders the same errors in Anthropic's shape, for ``/v1/messages``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import orjson

from providers.errors import PoolExhausted, ProviderError


class APIError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}
        # Whether the upstreams were overloaded or cooling down (Anthropic's 529 says so).
        self.overloaded = False

    def payload(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self.payload())


class InvalidRequest(APIError):
    status = 400
    type = "invalid_request_error"


class AuthenticationError(APIError):
    status = 401
    type = "authentication_error"

    def __init__(self, message: str, *, code: str = "invalid_api_key") -> None:
        super().__init__(
            message, code=code, headers={"www-authenticate": 'Bearer realm="llm-gateway"'}
        )


class PermissionDenied(APIError):
    status = 403
    type = "invalid_request_error"


class NotFound(APIError):
    status = 404
    type = "invalid_request_error"


class MethodNotAllowed(APIError):
    status = 405
    type = "invalid_request_error"


class PayloadTooLarge(APIError):
    status = 413
    type = "invalid_request_error"


class UnsupportedMediaType(APIError):
    status = 415
    type = "invalid_request_error"


class RateLimited(APIError):
    status = 429
    type = "rate_limit_error"


class InsufficientQuota(RateLimited):
    """A budget is spent: retrying cannot help before its window ends."""

    type = "insufficient_quota"


class BadGateway(APIError):
    status = 502
    type = "upstream_error"


class ServiceUnavailable(APIError):
    status = 503
    type = "server_error"


class GatewayTimeout(APIError):
    status = 504
    type = "timeout"


class CoolingDown(ProviderError):
    """Every deployment that could answer has its breaker open: none was tried."""

    counts_against_breaker = False
    status = 503
    code = "provider_cooling_down"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequest,
    404: NotFound,
    413: PayloadTooLarge,
    429: RateLimited,
    503: ServiceUnavailable,
    504: GatewayTimeout,
}


# Anthropic's error types by status (docs.claude.com/en/api/errors); other 4xx are the
# request's fault, other 5xx the API's.
ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    504: "api_error",
    529: "overloaded_error",
}
OVERLOADED = 529


def anthropic_error(error: APIError) -> tuple[int, dict[str, Any]]:
    """(status, Anthropic's error body) for ``error``: what an Anthropic client expects to see.

    Overloaded or cooling-down upstreams are Anthropic's ``overloaded_error`` 529, on which its
    clients (Claude Code) wait and retry; the gateway's own 503s (shutting down) stay 503.
    """
    status = OVERLOADED if error.overloaded else error.status
    kind = ANTHROPIC_TYPES.get(status)
    if kind is None:
        kind = "invalid_request_error" if status < 500 else "api_error"
    body = {"type": "error", "error": {"type": kind, "message": error.message}}
    return status, body


def from_provider_error(exc: ProviderError) -> APIError:
    """What the client sees of a provider's failure: the error's own status and code.

    Upstream bodies are never echoed (the provider's messages are written for the client).
    """
    headers: dict[str, str] = {}
    retry_after: float | None = getattr(exc, "retry_after", None)
    if retry_after is not None and exc.status in (429, 503):
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    error = _BY_STATUS.get(exc.status, BadGateway)(
        exc.message,
        code=exc.code,
        param="model" if exc.code == "model_not_found" else None,
        headers=headers,
    )
    error.overloaded = exc.overloaded or isinstance(exc, CoolingDown | PoolExhausted)
    return error
