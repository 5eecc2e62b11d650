"""The errors a provider raises at its boundary.

Every transport or upstream failure is mapped once, inside the adapter, into this tree::

    ProviderError
    ├── UpstreamStatusError      the upstream answered with a non-2xx status
    ├── UpstreamConnectError     no connection could be made
    ├── UpstreamTimeout          connect, first-token, idle or total time ran out
    ├── UpstreamStreamError      the upstream sent a ``data: {"error": ...}`` frame
    └── UpstreamProtocolError    malformed or truncated output

Messages are written for the client: they never contain upstream bodies verbatim or keys.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base class; ``retryable`` says whether another attempt may succeed."""

    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UpstreamStatusError(ProviderError):
    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.retryable = status in (429, 500, 502, 503, 504)


class UpstreamConnectError(ProviderError):
    retryable = True


class UpstreamTimeout(ProviderError):
    def __init__(self, message: str, *, phase: str) -> None:
        super().__init__(message)
        self.phase = phase
        # A connect or first-token timeout produced nothing: another try is safe.
        self.retryable = phase in ("connect", "first_token")


class UpstreamStreamError(ProviderError):
    pass


class UpstreamProtocolError(ProviderError):
    def __init__(self, message: str, *, code: str = "upstream_protocol_error") -> None:
        super().__init__(message)
        self.code = code
