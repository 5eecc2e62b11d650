"""What metrics and traces cost: the same load against the gateway with them off and on.

    .venv/bin/python bench/metrics_cost.py [--rounds 3] [--quick] [--scenarios ns_c64,st50_c64]

Configurations: ``off`` (GATEWAY_METRICS=false, no OTEL_*), ``metrics`` (the default:
/metrics on) and ``traces`` (metrics, plus OTLP/HTTP traces sampled at 1.0 to a local sink
that accepts and drops them). Each round starts a fresh gateway per configuration, in a rotated
order, so that a noisy neighbour hurts every configuration alike; each result is quoted as
a ratio to ``off`` of the same round, and the median of the rounds is the figure. The mock
upstream and the load generator are bench/run.py's, pinned the same way (target CPU 0, rig
CPU 1). Writes ``metrics_cost.json`` and ``metrics_cost.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from run import Scenario, run_loadgen, scenarios, wait_idle
from targets import BENCH, Proc, base_env, free_port, gateway_proc, log, mock_proc

CONFIGS: dict[str, dict[str, str]] = {
    "off": {"GATEWAY_METRICS": "false"},
    "metrics": {"GATEWAY_METRICS": "true"},
    "traces": {
        "GATEWAY_METRICS": "true",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "always_on",
    },
}


class _Sink(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that takes every export and keeps nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


def start_sink() -> tuple[http.server.ThreadingHTTPServer, int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def observer_cost(requests: int = 20_000) -> dict[str, float]:
    """CPU microseconds the metrics observer adds to one request, measured in this process
    alone (no neighbour disturbs it): every event of a successful request, on a warm label
    cache, minus building the same :class:`Call` without an observer."""
    import sys

    sys.path.insert(0, str(BENCH.parent))
    from gateway.metrics import GatewayMetrics, MetricsObserver
    from gateway.observe import Call
    from providers.base import Usage

    observer = MetricsObserver(GatewayMetrics(), models=["mock/mock"])

    def call(stream: bool) -> Call:
        c = Call("id", "POST", "/v1/chat/completions", "127.0.0.1", time.perf_counter())
        c.surface, c.model, c.stream, c.status = "chat", "mock/mock", stream, 200
        c.attempts, c.deployment, c.attempt_started_at = 1, "mock/mock", time.perf_counter()
        c.first_token_at = time.perf_counter()
        c.usage = Usage(input_tokens=12, output_tokens=50)
        return c

    def observed(stream: bool) -> None:
        c = call(stream)
        observer.attempt_started(c, "mock/mock")
        observer.attempt_finished(c, "mock/mock", None)
        observer.first_token(c)
        observer.finished(c)

    def per_request(fn: Any, stream: bool) -> float:
        for _ in range(1000):
            fn(stream)
        t0 = time.process_time()
        for _ in range(requests):
            fn(stream)
        return (time.process_time() - t0) / requests * 1e6

    result = {}
    for stream in (False, True):
        bare = min(per_request(call, stream) for _ in range(3))
        full = min(per_request(observed, stream) for _ in range(3))
        result["stream" if stream else "non_stream"] = round(full - bare, 2)
    return result


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="short scenarios: a smoke run")
    ap.add_argument("--scenarios", default="ns_c64,st50_c64", help="keys from bench/run.py")
    ap.add_argument("--configs", default="off,metrics,traces")
    ap.add_argument("--out", default=str(BENCH / "results"))
    ap.add_argument("--target-cpu", default="0")
    ap.add_argument("--rig-cpu", default="1")
    ap.add_argument("--no-pin", dest="pin", action="store_false")
    a = ap.parse_args()
    a.gateway_cmd = None
    return a


def run_one(
    a: argparse.Namespace,
    config: str,
    mock: Proc,
    sink_port: int,
    tmp: Path,
    chosen: list[Scenario],
) -> dict[str, dict[str, float]]:
    """Per scenario: requests/s and the gateway's CPU milliseconds per request."""
    port = free_port()
    proc = gateway_proc(port, mock.port, tmp, None, 1)
    if isinstance(proc, str):
        raise SystemExit(proc)
    env = {**base_env(), **CONFIGS[config]}
    for name in list(env):
        if name.startswith("OTEL_") and name not in CONFIGS[config]:
            env.pop(name)
    if "OTEL_TRACES_EXPORTER" in env:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink_port}"
    proc.start(a.target_cpu if a.pin else None, env, tmp, 30.0)
    results: dict[str, dict[str, float]] = {}
    try:
        for s in chosen:
            r = run_loadgen(a, proc.port, s, [proc.pid, mock.pid])
            if r.get("errors"):
                log(f"{config} {s.key}: {r['errors']} errors")
            cpu_ms = float(r["cpu_ms_per_req"][0])
            results[s.key] = {"rps": float(r["rps"]), "cpu_ms": cpu_ms}
            log(f"{config} {s.key}: {r['rps']} req/s, {cpu_ms:.3f} CPU ms/request")
            wait_idle(proc.pid)
    finally:
        proc.stop()
    return results


def main() -> None:
    a = parse_args()
    if a.pin and len(os.sched_getaffinity(0)) < 2:
        a.pin = False
    if a.pin:
        os.sched_setaffinity(0, {int(a.rig_cpu)})
    wanted = [k.strip() for k in a.scenarios.split(",") if k.strip()]
    chosen = [s for s in scenarios(a.quick) if s.key in wanted]
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    out = Path(a.out).resolve()
    tmp = out / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    sink, sink_port = start_sink()
    mock = mock_proc(free_port())
    rounds: list[dict[str, dict[str, dict[str, float]]]] = []
    try:
        mock.start(a.rig_cpu if a.pin else None, base_env(), tmp, 15.0)
        for i in range(a.rounds):
            order = configs[i % len(configs) :] + configs[: i % len(configs)]
            log(f"round {i + 1}/{a.rounds}: {', '.join(order)}")
            rounds.append({c: run_one(a, c, mock, sink_port, tmp, chosen) for c in order})
    finally:
        mock.stop()
        sink.shutdown()
    result = summarize(rounds, configs, [s.key for s in chosen])
    result["observer_us_per_request"] = observer_cost()
    result["meta"] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": a.quick}
    (out / "metrics_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result, configs)
    (out / "metrics_cost.md").write_text(md)
    print(md)


def summarize(
    rounds: list[dict[str, dict[str, dict[str, float]]]], configs: list[str], keys: list[str]
) -> dict[str, Any]:
    """Ratios to ``off`` of the same round: of requests/s, and of CPU per request inverted
    (off's CPU ms / this one's), which is what the throughput of a CPU-bound gateway would be
    on a quiet machine, and much less disturbed by neighbours than requests/s."""
    ratios: dict[str, dict[str, dict[str, list[float]]]] = {
        measure: {c: {k: [] for k in keys} for c in configs} for measure in ("rps", "cpu")
    }
    for r in rounds:
        for c in configs:
            for k in keys:
                base = r.get("off", {}).get(k)
                if not base:
                    continue
                ratios["rps"][c][k].append(r[c][k]["rps"] / base["rps"])
                ratios["cpu"][c][k].append(base["cpu_ms"] / r[c][k]["cpu_ms"])
    return {
        "rounds": rounds,
        "median_ratio_to_off": {
            measure: {
                c: {k: round(statistics.median(v), 3) if v else None for k, v in per.items()}
                for c, per in by_config.items()
            }
            for measure, by_config in ratios.items()
        },
        "ratios_each_round": ratios,
    }


def markdown(result: dict[str, Any], configs: list[str]) -> str:
    medians = result["median_ratio_to_off"]
    keys = list(next(iter(medians["rps"].values())).keys())
    lines = ["# Cost of metrics and traces", ""]
    titles = {
        "cpu": "Gateway CPU per request, as off's / this one's (1.0 = free; less noisy)",
        "rps": "Requests/s, as a ratio to off in the same round (noisy on a shared machine)",
    }
    for measure in ("cpu", "rps"):
        lines += [f"## {titles[measure]}", "", "| config | " + " | ".join(keys) + " |"]
        lines.append("|---|" + "---|" * len(keys))
        for c in configs:
            cells = []
            for k in keys:
                ratio = medians[measure][c][k]
                each = ", ".join(f"{x:.3f}" for x in result["ratios_each_round"][measure][c][k])
                cells.append(f"**{ratio}** ({each})" if ratio is not None else "-")
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("")
    cost = result.get("observer_us_per_request")
    if cost:
        lines += [
            "Metrics observer alone, CPU µs per request (in-process, undisturbed): "
            + ", ".join(f"{k} {v}" for k, v in cost.items()),
            "",
        ]
    lines += ["Per round:", ""]
    for i, r in enumerate(result["rounds"], 1):
        cells = [
            f"{c} {k}: {v['rps']:.0f} req/s, {v['cpu_ms']:.3f} CPU ms/req"
            for c, per in r.items()
            for k, v in per.items()
        ]
        lines.append(f"- round {i}: " + "; ".join(cells))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
