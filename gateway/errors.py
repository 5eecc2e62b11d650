"""The gateway's one error tree, rendered as OpenAI's error body.

Each class carries its HTTP status and OpenAI ``type``, so rendering needs no if-chain::

    APIError
    ├── InvalidRequest        400 invalid_request_error (``param`` names the field)
    ├── AuthenticationError   401 (with WWW-Authenticate)
    ├── NotFound              404 (model_not_found, unknown route)
    ├── MethodNotAllowed      405
    ├── PayloadTooLarge       413
    ├── UnsupportedMediaType  415
    ├── RateLimited           429 (with Retry-After)
    ├── ServiceUnavailable    503 (shutting down; a provider cooling down, with Retry-After)
    ├── BadGateway            502 upstream failure
    └── GatewayTimeout        504 upstream too slow

Provider failures are mapped into it in one place, :func:`from_provider_error`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import orjson

from gateway.resilience import CoolingDown
from providers.errors import (
    ProviderError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeout,
)


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


class BadGateway(APIError):
    status = 502
    type = "upstream_error"


class ServiceUnavailable(APIError):
    status = 503
    type = "server_error"


class GatewayTimeout(APIError):
    status = 504
    type = "timeout"


def from_provider_error(exc: ProviderError, *, model: str) -> APIError:
    """Map a provider's failure to what the client sees; upstream bodies are never echoed."""
    if isinstance(exc, CoolingDown):
        return ServiceUnavailable(
            exc.message,
            code="provider_cooling_down",
            headers={"retry-after": str(max(1, math.ceil(exc.retry_after)))},
        )
    if isinstance(exc, UpstreamStatusError):
        status = exc.status
        if status == 429:
            headers = {}
            if exc.retry_after is not None:
                headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
            return RateLimited(
                f"the upstream for {model} is rate limiting requests",
                code="rate_limit_exceeded",
                headers=headers,
            )
        if status in (400, 409, 422):
            return InvalidRequest(exc.message, code="upstream_rejected_request")
        if status == 404:
            return NotFound(exc.message, param="model", code="model_not_found")
        if status == 413:
            return PayloadTooLarge(exc.message, code="upstream_rejected_request")
        return BadGateway(exc.message, code="upstream_error")
    if isinstance(exc, UpstreamTimeout):
        return GatewayTimeout(exc.message, code=f"{exc.phase}_timeout")
    if isinstance(exc, UpstreamConnectError):
        return BadGateway(exc.message, code="upstream_unavailable")
    if isinstance(exc, UpstreamProtocolError):
        return BadGateway(exc.message, code=exc.code)
    if isinstance(exc, UpstreamStreamError):
        return BadGateway(exc.message, code="upstream_error")
    return BadGateway(exc.message, code="upstream_error")
