"""A virtual key's x-ratelimit-* header lines, as admission formats them for the response head."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gateway.response_head import split
from gateway.tenancy.admission import Tenant
from gateway.tenancy.keys import KeyRecord
from gateway.tenancy.limits import Verdict


def lines(verdict: Verdict, **limits: Any) -> dict[str, str]:
    key = KeyRecord(id="key_1", name="k", prefix="sk-gw-ab", last4="wxyz", created_at=0, **limits)
    # Formatting reads no tenancy; the Python's lines (no compiled plan to build).
    tenant = Tenant(SimpleNamespace(compiled=None), key)  # type: ignore[arg-type]
    pairs = split(tenant.rate_lines(verdict))
    named = {name.decode(): value.decode() for name, value in pairs}
    assert len(named) == len(pairs)  # each header once
    return named


@pytest.mark.parametrize(
    ("requests_reset", "tokens_reset", "requests_shown", "tokens_shown"),
    [
        (0.0000001, 0.25, "1ms", "250ms"),  # both under a second: the one-format path
        (0.0, 0.0, "0ms", "0ms"),
        (1.5, 0.004, "1.5s", "4ms"),
        (0.5, 61.0, "500ms", "1m1s"),
    ],
)
def test_both_limits_give_six_lines(
    requests_reset: float, tokens_reset: float, requests_shown: str, tokens_shown: str
) -> None:
    verdict = Verdict(True, None, 0.0, 7, requests_reset, 900, tokens_reset)
    assert lines(verdict, rpm=60, tpm=1000) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "7",
        "x-ratelimit-reset-requests": requests_shown,
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-reset-tokens": tokens_shown,
    }


def test_one_limit_or_none_known() -> None:
    assert lines(Verdict(True, None, 0.0, 3, 0.2), rpm=10) == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "200ms",
    }
    tokens_only = Verdict(True, None, 0.0, None, 0.0, 5, 2.0)
    assert lines(tokens_only, rpm=10, tpm=50) == {
        "x-ratelimit-limit-tokens": "50",
        "x-ratelimit-remaining-tokens": "5",
        "x-ratelimit-reset-tokens": "2s",
    }
    assert lines(Verdict(True), budget_tokens=100) == {}
