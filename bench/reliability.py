"""The reliability benchmark of issue 4, in one command:

    .venv/bin/python bench/reliability.py [--quick] [--out bench/results]

Runs the real gateway (``llm-gateway --no-ui``) as a subprocess, one fresh process per phase,
in front of the project's fault-injecting upstream (``tests/support/fault_upstream.py``) served
in a thread of this process, so the upstream's disconnect timestamps (``time.monotonic``) are
read directly. Phases: cancel latency, 503 storm, soak with disconnecting clients, SIGTERM
drain. Writes ``reliability.json`` and ``reliability.md`` into ``--out`` and prints the
Markdown. See bench/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvloop
from reliability_load import drain, soak
from reliability_phases import CANCEL_CASES, cancel_latency, log, storm
from reliability_report import markdown
from reliability_rig import ROOT, echo_env, fault_upstream, gateway, provider_env


async def run(a: argparse.Namespace) -> dict[str, Any]:
    q = a.quick
    tmp = a.out / "tmp"
    phases: dict[str, float] = {}
    result: dict[str, Any] = {}
    with fault_upstream() as (base_url, upstream):
        models = [m.split("/", 1)[1] for m, *_ in CANCEL_CASES.values()]
        provider, soak_model = a.soak_model.split("/", 1)
        fault = provider_env("fault", base_url, [*models, soak_model])
        if provider == "echo":  # a soak without the upstream: the gateway's echo provider
            fault.update(echo_env("echo", 0.0))
        t = time.monotonic()
        with gateway(fault, tmp, "cancel") as gw:
            result["cancel"] = await cancel_latency(gw, upstream, 10 if q else a.cancel_runs)
        phases["cancel"] = time.monotonic() - t

        # Two providers on the same upstream, so each storm meets a fresh circuit breaker.
        t = time.monotonic()
        storms = provider_env("burst", base_url, ["status:503"])
        storms |= provider_env("paced", base_url, ["status:503"])
        with gateway(storms, tmp, "storm") as gw:
            n = 60 if q else a.storm_requests
            result["storm_burst"] = await storm(gw, upstream, "burst/status:503", n, 0.0, 8)
            secs = 3.0 if q else a.storm_seconds
            result["storm"] = await storm(gw, upstream, "paced/status:503", n, secs, 8)
        phases["storm"] = time.monotonic() - t

        t = time.monotonic()
        with gateway(fault, tmp, "soak") as gw:
            total, warmup = (2_000, 500) if q else (a.soak_requests, a.soak_warmup)
            result["soak"] = await soak(
                gw,
                upstream,
                total=total,
                warmup=warmup,
                concurrency=32,
                model=a.soak_model,
                time_limit=120.0 if q else 420.0,
            )
        phases["soak"] = time.monotonic() - t
        log(f"soak: {result['soak']['rss_growth_kb_per_1000']} KB per 1,000 requests")

    t = time.monotonic()
    result["drain"] = await drain(tmp, 20, drain_timeout=5.0, sigterm_after=0.5)
    phases["drain"] = time.monotonic() - t
    result["meta"] = meta(a, phases)
    return result


def meta(a: argparse.Namespace, phases: dict[str, float]) -> dict[str, Any]:
    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return r.stdout.strip()

    return {
        "command": " ".join([".venv/bin/python", "bench/reliability.py", *sys.argv[1:]]),
        "quick": a.quick,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_head": git("rev-parse", "--short", "HEAD"),
        "git_dirty": git("status", "--porcelain", "--", "gateway", "providers").splitlines(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "phase_wall_s": {k: round(v, 1) for k, v in phases.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="small counts: a smoke run of ~1 min")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--cancel-runs", type=int, default=50)
    ap.add_argument("--storm-requests", type=int, default=300)
    ap.add_argument("--storm-seconds", type=float, default=35.0, help="> the 30 s breaker cooldown")
    ap.add_argument("--soak-requests", type=int, default=20_000)
    ap.add_argument("--soak-warmup", type=int, default=1_000, help="unmeasured soak streams")
    ap.add_argument("--soak-model", default="fault/slow:10", help="fault/<behaviour> or echo/echo")
    a = ap.parse_args()
    a.out = a.out.resolve()  # the gateway subprocess runs elsewhere
    a.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = uvloop.run(run(a))
    result["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    (a.out / "reliability.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (a.out / "reliability.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
