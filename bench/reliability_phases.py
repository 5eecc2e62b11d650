"""Phases 1 and 2 of bench/reliability.py: cancel latency and the 503 storm."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

from reliability_client import Conn, chat_body
from reliability_rig import FaultUpstream, Gateway, percentile

HOST = "127.0.0.1"
LONG_TEXT = " ".join(f"word{i}" for i in range(300))  # 300 chunks: a stream that outlasts a run
SOAK_TEXT = "the quick brown fox jumps over the lazy dog"  # 9 content chunks


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


def log(message: str) -> None:
    print(f"[reliability {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- 1. Cancel latency: client close -> upstream sees the disconnect --------------------------

CANCEL_CASES: dict[str, tuple[str, bool, int | None, float | None]] = {
    # name: (model, stream, close after N events, close after S seconds)
    "mid_stream": ("fault/slow:20", True, 1, None),
    "mid_stream_stalled": ("fault/stall:2", True, 1, None),
    "first_token_wait": ("fault/slow-first-byte:30", True, None, 0.1),
    "non_stream": ("fault/slow-first:30", False, None, 0.1),
}


async def cancel_latency(gw: Gateway, upstream: FaultUpstream, runs: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, (model, stream, after_events, after_s) in CANCEL_CASES.items():
        body = chat_body(model, LONG_TEXT, stream=stream)
        latencies: list[float] = []
        misses: Counter[str] = Counter()
        deadline = time.monotonic() + 60.0  # per case; a run is ~0.1-0.2 s
        for _ in range(runs):
            if time.monotonic() > deadline:
                misses["not run (phase time limit)"] += 1
                continue
            upstream.reset()
            conn = Conn(HOST, gw.port)
            out = await conn.request(
                body, close_after_events=after_events, close_after_s=after_s, limit_s=10.0
            )
            conn.close()
            if out.kind != "closed_by_us" or out.closed_at is None:
                misses[f"{out.kind}/{out.status}"] += 1
                continue
            seen = await asyncio.to_thread(upstream.wait_for_disconnect, 5.0)
            if seen is None:
                misses["upstream_never_saw_it"] += 1
                continue
            latencies.append(seen - out.closed_at)
        results[name] = {
            "model": model,
            "stream": stream,
            "close": f"after {after_events} event" if after_events else f"after {after_s} s",
            "runs": runs,
            "measured": len(latencies),
            "misses": dict(misses),
            "p50_ms": ms(percentile(latencies, 50)),
            "p95_ms": ms(percentile(latencies, 95)),
            "max_ms": ms(max(latencies, default=None)),
            "samples_ms": [ms(x) for x in latencies],
        }
        log(f"cancel {name}: p50 {results[name]['p50_ms']} p95 {results[name]['p95_ms']} ms")
    return results


# --- 2. 503 storm: upstream attempts per client request --------------------------------------


async def storm(
    gw: Gateway, upstream: FaultUpstream, model: str, n: int, duration: float, concurrency: int
) -> dict[str, Any]:
    """``n`` non-stream requests to an upstream answering 503, started on an even schedule over
    ``duration`` seconds (0: all at once, a closed loop), at most ``concurrency`` in flight (one
    keep-alive connection each)."""
    upstream.reset()
    body = chat_body(model, "hello", stream=False)
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(concurrency):
        pool.put_nowait(Conn(HOST, gw.port))
    statuses: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    latencies: list[float] = []
    t0 = time.monotonic()

    async def one(i: int) -> None:
        await asyncio.sleep(max(0.0, t0 + i * duration / n - time.monotonic()))
        conn = await pool.get()
        if time.monotonic() > t0 + duration + 60.0:  # bounded in time as well as in count
            pool.put_nowait(conn)
            statuses["not sent (time limit)"] += 1
            return
        try:
            started = time.monotonic()
            out = await conn.request(body, limit_s=30.0)
            latencies.append(time.monotonic() - started)
        finally:
            pool.put_nowait(conn)
        statuses[str(out.status or out.kind)] += 1
        try:
            codes[str(json.loads(out.body)["error"]["code"])] += 1
        except (ValueError, KeyError, TypeError):
            codes["(no error body)"] += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.monotonic() - t0
    upstream_model = model.split("/", 1)[1]
    attempts = [r.at - t0 for r in upstream.requests if r.model == upstream_model]
    first_s = [a for a in attempts if a < 1.0]
    log(f"storm {model}: {len(attempts) / n:.3f} attempts per request")
    return {
        "model": model,
        "requests": n,
        "concurrency": concurrency,
        "duration_s": round(wall, 2),
        "upstream_attempts": len(attempts),
        "attempts_per_request": round(len(attempts) / n, 4),
        "attempts_in_first_second": len(first_s),
        "attempts_later_s": [round(a, 2) for a in attempts if a >= 1.0],
        "client_statuses": dict(statuses),
        "client_error_codes": dict(codes),
        "latency_p50_ms": ms(percentile(latencies, 50)),
        "latency_p95_ms": ms(percentile(latencies, 95)),
    }
