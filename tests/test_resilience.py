"""Retry policy and circuit breaker: pure logic."""

from __future__ import annotations

import logging
import time

import pytest

from gateway.resilience import CircuitBreaker, RetryPolicy
from providers.errors import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
    status_error,
)


def test_retries_only_retryable_errors_and_at_most_max_retries() -> None:
    policy = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.02)
    connect = UpstreamConnectError("refused")
    assert policy.delay(0, connect) is not None
    assert policy.delay(1, connect) is not None
    assert policy.delay(2, connect) is None
    assert policy.delay(0, UpstreamProtocolError("cut", code="upstream_disconnected")) is None
    assert policy.delay(0, status_error(400, provider="p")) is None
    assert policy.delay(0, UpstreamTimeout("slow", phase="idle")) is None
    assert policy.delay(0, UpstreamTimeout("slow", phase="first_token")) is not None


def test_retry_after_is_honoured_up_to_a_bound() -> None:
    policy = RetryPolicy(max_retry_after=10)
    assert policy.delay(0, status_error(429, provider="p", retry_after=3)) == 3
    assert policy.delay(0, status_error(429, provider="p", retry_after=30)) is None


def test_backoff_is_jittered_within_its_cap() -> None:
    policy = RetryPolicy(max_retries=10, base_delay=0.25, max_delay=1.0)
    delays = [policy.delay(5, UpstreamConnectError("x")) for _ in range(200)]
    assert all(d is not None and 0 <= d <= 1.0 for d in delays)
    assert len({round(d or 0, 6) for d in delays}) > 50


def test_breaker_opens_after_threshold_consecutive_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    breaker = CircuitBreaker("p/m", threshold=3, cooldown=60)
    with caplog.at_level(logging.INFO, logger="gateway"):
        for _ in range(2):
            assert breaker.allow()
            breaker.failure()
        assert breaker.state == "closed"
        assert breaker.allow()
        breaker.failure()
        assert breaker.state == "open" and not breaker.allow() and not breaker.available()
        assert 59 < breaker.retry_after <= 60
        breaker.failure()  # a late failure of an attempt that started before: no second line
    opened = [r for r in caplog.records if "opened" in r.getMessage()]
    assert len(opened) == 1 and "p/m" in opened[0].getMessage()


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    breaker = CircuitBreaker("p/m", threshold=2, cooldown=60)
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state == "closed"


def test_first_chunks_do_not_hide_a_deployment_that_always_breaks_mid_stream() -> None:
    breaker = CircuitBreaker("p/m", threshold=3, cooldown=60)
    for _ in range(3):
        assert breaker.allow()
        breaker.alive()  # first chunk arrived...
        breaker.failure()  # ...then the stream was cut
    assert breaker.state == "open"


def _half_open(breaker: CircuitBreaker) -> None:
    breaker.failure()
    assert breaker.state == "open"
    time.sleep(breaker.cooldown + 0.01)
    assert breaker.state == "half-open"


def test_half_open_lets_one_probe_through_and_its_success_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    breaker = CircuitBreaker("p/m", threshold=1, cooldown=0.05)
    _half_open(breaker)
    assert breaker.available()
    with caplog.at_level(logging.INFO, logger="gateway"):
        assert breaker.allow()
        assert not breaker.allow() and not breaker.available()  # one probe at a time
        breaker.alive()
    assert breaker.state == "closed" and breaker.allow()
    assert any("closed" in r.getMessage() for r in caplog.records)


def test_a_failed_probe_opens_the_breaker_again() -> None:
    breaker = CircuitBreaker("p/m", threshold=1, cooldown=0.05)
    _half_open(breaker)
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()


def test_a_probe_without_a_verdict_lets_the_next_probe_through() -> None:
    # REVIEW finding 2: a probe that ended any other way kept the breaker open for good.
    breaker = CircuitBreaker("p/m", threshold=1, cooldown=0.05)
    _half_open(breaker)
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()


def test_threshold_zero_never_opens() -> None:
    breaker = CircuitBreaker("p/m", threshold=0, cooldown=60)
    for _ in range(100):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "closed"


@pytest.mark.parametrize(
    ("status", "retryable", "client_fault", "counts", "client_status", "code"),
    [
        (400, False, True, False, 400, "upstream_rejected_request"),
        (404, False, True, False, 404, "model_not_found"),
        (409, False, True, False, 400, "upstream_rejected_request"),
        (413, False, True, False, 413, "upstream_rejected_request"),
        (422, False, True, False, 400, "upstream_rejected_request"),
        (401, False, False, False, 502, "upstream_auth_failed"),
        (403, False, False, False, 502, "upstream_auth_failed"),
        (429, True, False, False, 429, "rate_limit_exceeded"),
        (408, True, False, True, 502, "upstream_error"),
        (500, True, False, True, 502, "upstream_error"),
        (501, False, False, True, 502, "upstream_error"),
        (502, True, False, True, 502, "upstream_error"),
        (503, True, False, True, 502, "upstream_error"),
        (504, True, False, True, 502, "upstream_error"),
        (529, True, False, True, 502, "upstream_error"),
        (302, False, False, True, 502, "upstream_error"),
    ],
)
def test_one_table_says_what_each_upstream_status_means(
    status: int, retryable: bool, client_fault: bool, counts: bool, client_status: int, code: str
) -> None:
    error = status_error(status, provider="p", detail="the upstream said so")
    assert error.upstream_status == status
    assert (error.retryable, error.client_fault, error.counts_against_breaker) == (
        retryable,
        client_fault,
        counts,
    )
    assert (error.status, error.code) == (client_status, code)
    # Only a refusal of the request itself shows the upstream's words: they help the client.
    assert ("the upstream said so" in error.message) == client_fault


@pytest.mark.parametrize(
    ("detail", "code"),
    [
        # OpenAI's and vLLM's words
        ("This model's maximum context length is 8192 tokens. However, you requested 9000", "c"),
        # Anthropic's
        ("prompt is too long: 210000 tokens > 200000 maximum", "c"),
        # Gemini's
        ("The input token count (1200000) exceeds the maximum number of tokens allowed", "c"),
        # llama.cpp's
        ("the request exceeds the available context size, try increasing it", "c"),
        ("temperature must be at most 2", "r"),
    ],
)
def test_a_prompt_too_long_for_the_model_is_context_length_exceeded(detail: str, code: str) -> None:
    """Codex compacts and LangChain trims on OpenAI's own code; every upstream's way of saying
    it becomes that code (a 400, the client's to fix, never retried or held against the
    upstream)."""
    error = status_error(400, provider="p", detail=detail)
    expected = "context_length_exceeded" if code == "c" else "upstream_rejected_request"
    assert (error.status, error.code, error.retryable) == (400, expected, False)
    assert not error.counts_against_breaker
