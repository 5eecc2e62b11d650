"""Retry policy and per-provider circuit breakers: pure logic, no I/O.

Retries happen in this one layer only, and only before the first byte reached the client.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from providers.errors import ProviderError, UpstreamStatusError


class CoolingDown(ProviderError):
    """The provider's breaker is open: it was not tried. ``retry_after``: seconds left."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# Client errors: another attempt, or another model, would get the same answer.
CLIENT_ERROR_STATUSES = frozenset({400, 404, 409, 413, 422})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 2
    base_delay: float = 0.25
    max_delay: float = 4.0
    # A Retry-After longer than this is not waited for: the client gets the 429 instead.
    max_retry_after: float = 10.0

    def delay(self, attempt: int, error: ProviderError) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None: do not retry."""
        if not error.retryable or attempt >= self.max_retries:
            return None
        retry_after = error.retry_after if isinstance(error, UpstreamStatusError) else None
        if retry_after is not None:
            return None if retry_after > self.max_retry_after else retry_after
        # Full jitter: spreads retries so that many clients do not retry in lockstep.
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


def may_fall_back(error: ProviderError) -> bool:
    """Whether another model may be tried after ``error`` (not for the client's own mistakes)."""
    return not (isinstance(error, UpstreamStatusError) and error.status in CLIENT_ERROR_STATUSES)


def counts_against_provider(error: ProviderError) -> bool:
    """Whether ``error`` says the provider is unhealthy (not that the request was bad)."""
    if isinstance(error, UpstreamStatusError):
        return error.status >= 500 or error.status in (401, 403, 429)
    return True


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> half-open after ``cooldown``.

    Half-open lets one probe through; its success closes the breaker, its failure reopens it
    for another cooldown.
    """

    __slots__ = ("_failures", "_opened_at", "_probing", "cooldown", "threshold")

    def __init__(self, *, threshold: int = 5, cooldown: float = 30.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if time.monotonic() - self._opened_at >= self.cooldown:
            return "half-open"
        return "open"

    @property
    def retry_after(self) -> float:
        """Seconds until the breaker lets a probe through (0 when it would now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown - (time.monotonic() - self._opened_at))

    def allow(self) -> bool:
        """Whether a request may go to the provider now."""
        if self._opened_at is None:
            return True
        if time.monotonic() - self._opened_at < self.cooldown or self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.threshold:
            self._opened_at = time.monotonic()
        self._probing = False

    def release(self) -> None:
        """A probe that ended without a verdict (e.g. the client left): let another probe."""
        self._probing = False
