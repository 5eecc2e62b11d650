"""How late the gateway's event loop runs a 1 ms timer: the loop's busy turns, over time.

    LAG_OUT=/tmp/lag.json PYTHONPATH=bench/lagprobe .venv/bin/llm-gateway --no-ui ...
    .venv/bin/python bench/lagprobe/sitecustomize.py /tmp/lag.json     # the summary

On ``PYTHONPATH`` this file is imported at start-up (as every ``sitecustomize`` is). With
``LAG_OUT`` set it starts a task beside uvicorn's that sleeps 1 ms in a loop and records how
late each wake-up is: a late wake-up is a turn of the event loop that ran that long. Every
second it writes ``[[time, ms late], ...]`` to ``LAG_OUT``. Under the 256-paced-stream load
this is how the waves were seen (README, Performance): turns of 10-20 ms, back to back for
~100 ms, once a second.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

_OUT = os.environ.get("LAG_OUT")


def _install(out: str) -> None:
    import uvicorn.server

    startup = uvicorn.server.Server.startup
    lags: list[tuple[float, float]] = []
    keep: set[asyncio.Task[None]] = set()

    async def probe() -> None:
        clock = time.perf_counter
        written = clock()
        while True:
            before = clock()
            await asyncio.sleep(0.001)
            lags.append((round(before, 4), round((clock() - before - 0.001) * 1000, 2)))
            if before - written > 1:  # a write a second: a sub-millisecond turn of its own
                written = before
                _write(out, lags)

    async def started(self: Any, *args: Any, **kwargs: Any) -> None:
        await startup(self, *args, **kwargs)
        keep.add(asyncio.get_running_loop().create_task(probe()))

    uvicorn.server.Server.startup = started  # type: ignore[method-assign]


def _write(out: str, lags: list[tuple[float, float]]) -> None:
    Path(out).write_text(json.dumps(lags), encoding="utf-8")


def summary(path: str) -> None:
    lags: list[list[float]] = json.loads(Path(path).read_text(encoding="utf-8"))
    late = sorted(ms for _, ms in lags)
    if not late:
        raise SystemExit("no samples")
    points = {q: late[min(len(late) - 1, int(len(late) * q))] for q in (0.5, 0.9, 0.99, 0.999)}
    quantiles = ", ".join(f"p{q * 100:g} {v}" for q, v in points.items())
    print(f"{len(late)} wake-ups; ms late at {quantiles}")
    start = lags[0][0]
    busy = [(round(t - start, 3), ms) for t, ms in lags if ms > 4]
    print(f"turns over 4 ms ({len(busy)}), at seconds since the first sample:", busy[:60])


if __name__ == "__main__":
    summary(sys.argv[1])
elif _OUT:
    _install(_OUT)
