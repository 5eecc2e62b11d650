"""Aggregation of the load generator's per-request records."""

from __future__ import annotations

import math
from typing import Protocol


class Finished(Protocol):
    """What a completed request exposes (``loadgen.Conn`` after ``request()``)."""

    stream: bool
    error: str | None
    detail: bytes
    latency: float
    ttft: float | None
    chunks: int


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.ttfts: list[float] = []
        self.chunks = 0
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.samples: list[str] = []
        self.ttft_censored = 0

    def add(self, c: Finished) -> None:
        if c.error is None:
            self.ok += 1
            self.latencies.append(c.latency)
        else:
            self.errors[c.error] = self.errors.get(c.error, 0) + 1
            if len(self.samples) < 5:
                detail = c.detail.decode(errors="replace")
                self.samples.append(f"{c.error}: {detail}" if detail else c.error)
        if c.ttft is not None:
            self.ttfts.append(c.ttft)
        elif c.stream and c.error == "timeout":
            # no first token before the cut: count the time waited (a lower bound)
            self.ttfts.append(c.latency)
            self.ttft_censored += 1
        self.chunks += c.chunks


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, math.ceil(q / 100.0 * len(s)) - 1))] * 1000.0, 3)
