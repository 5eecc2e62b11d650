"""Retry policy and circuit breakers: pure logic, no I/O but a log line when a breaker turns.

Retries happen in the dispatch loop only, and only before the first byte reached the client.
Whether an error is retried, falls back or counts against a breaker is the error's own say
(:mod:`providers.errors`); this module decides when and how often.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from providers.errors import ProviderError

logger = logging.getLogger("gateway")


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
        retry_after: float | None = getattr(error, "retry_after", None)
        if retry_after is not None:
            return None if retry_after > self.max_retry_after else retry_after
        # Full jitter: spreads retries so that many clients do not retry in lockstep.
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


class CircuitBreaker:
    """One deployment's: closed -> open after ``threshold`` consecutive failures -> half-open
    after ``cooldown`` seconds, when one probe goes through; its success closes the breaker, its
    failure opens it again. ``threshold`` 0: never opens.

    Every :meth:`allow` that returned True must be followed by exactly one of :meth:`success`,
    :meth:`failure` or :meth:`release` (the dispatch loop does so in ``finally`` blocks).
    """

    __slots__ = ("_failures", "_opened_at", "_probing", "cooldown", "name", "threshold")

    def __init__(self, name: str, *, threshold: int = 5, cooldown: float = 30.0) -> None:
        self.name = name
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

    def available(self) -> bool:
        """Whether :meth:`allow` would let a request through now (without taking the probe)."""
        if self._opened_at is None:
            return True
        return not self._probing and time.monotonic() - self._opened_at >= self.cooldown

    def allow(self) -> bool:
        """Whether a request may go to the deployment now; in half-open, takes the one probe."""
        if self._opened_at is None:
            return True
        if self._probing or time.monotonic() - self._opened_at < self.cooldown:
            return False
        self._probing = True
        return True

    def alive(self) -> None:
        """The upstream answered (a first chunk): a probe has its verdict, the breaker closes.

        Consecutive failures are not reset here: a deployment that always breaks mid-stream
        must still reach the threshold.
        """
        if self._probing:
            self._close()

    def success(self) -> None:
        """An attempt completed."""
        self._failures = 0
        if self._opened_at is not None:
            self._close()

    def failure(self) -> None:
        """An attempt failed in a way that shows the deployment is unhealthy."""
        self._failures += 1
        if self.threshold and (self._probing or self._failures >= self.threshold):
            if self._opened_at is None:
                logger.warning(
                    "circuit breaker for %s opened after %d consecutive failures; "
                    "cooling down for %.0fs",
                    self.name,
                    self._failures,
                    self.cooldown,
                )
            self._opened_at = time.monotonic()
        self._probing = False

    def release(self) -> None:
        """An attempt ended without a verdict (the client left, a client error): no change."""
        self._probing = False

    def _close(self) -> None:
        if self._opened_at is not None:
            logger.info("circuit breaker for %s closed: the upstream answers again", self.name)
        self._opened_at = None
        self._probing = False
        self._failures = 0
