"""Render bench results (the dict written to results.json) as a Markdown table + the bar."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Result = dict[str, Any]
Getter = Callable[[Result, str], float | None]
COLUMNS = ["direct", "gateway", "litellm"]


def _scn(res: Result, target: str, key: str) -> Result | None:
    t = res["targets"].get(target) or {}
    s = (t.get("scenarios") or {}).get(key)
    return s if isinstance(s, dict) else None


def metric(key: str, *path: str, index: int | None = None) -> Getter:
    def get(res: Result, target: str) -> float | None:
        v: Any = _scn(res, target, key)
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if index is not None:
            v = v[index] if isinstance(v, list) and len(v) > index else None
        return float(v) if isinstance(v, int | float) else None

    return get


def added(key: str, *path: str) -> Getter:
    """The target's value minus the direct-to-mock value (what the proxy adds)."""
    get = metric(key, *path)

    def diff(res: Result, target: str) -> float | None:
        v, d = get(res, target), get(res, "direct")
        return None if v is None or d is None else v - d

    return diff


def top(name: str) -> Getter:
    def get(res: Result, target: str) -> float | None:
        v = (res["targets"].get(target) or {}).get(name)
        return float(v) if isinstance(v, int | float) else None

    return get


def mock_cpu(key: str) -> Getter:
    """CPU % of the mock during the scenario (the direct target *is* the mock)."""
    return lambda res, t: metric(key, "cpu_pct", index=0 if t == "direct" else 1)(res, t)


def _rows() -> list[tuple[str, Getter]]:
    rows: list[tuple[str, Getter]] = []
    for key, title in [("ns_c1", "non-stream c=1"), ("ns_c64", "non-stream c=64")]:
        rows += [
            (f"{title}: requests/s", metric(key, "rps")),
            (f"{title}: latency p50 ms", metric(key, "latency_ms", "p50")),
            (f"{title}: latency p99 ms", metric(key, "latency_ms", "p99")),
            (f"{title}: added latency p50 ms", added(key, "latency_ms", "p50")),
            (f"{title}: target CPU ms/request", metric(key, "cpu_ms_per_req", index=0)),
            (f"{title}: errors", metric(key, "errors")),
        ]
    for key, title in [("st50_c1", "50-chunk stream c=1"), ("st50_c64", "50-chunk stream c=64")]:
        rows += [
            (f"{title}: chunks/s", metric(key, "chunks_per_s")),
            (f"{title}: requests/s", metric(key, "rps")),
            (f"{title}: TTFT p50 ms", metric(key, "ttft_ms", "p50")),
            (f"{title}: TTFT p99 ms", metric(key, "ttft_ms", "p99")),
            (f"{title}: latency p50 ms", metric(key, "latency_ms", "p50")),
            (f"{title}: target CPU ms/request", metric(key, "cpu_ms_per_req", index=0)),
            (f"{title}: errors", metric(key, "errors")),
        ]
    for c in (64, 256, 512):
        key, title = f"paced_c{c}", f"20ms-paced stream c={c}"
        rows += [
            (f"{title}: TTFT p50 ms", metric(key, "ttft_ms", "p50")),
            (f"{title}: TTFT p99 ms", metric(key, "ttft_ms", "p99")),
            (f"{title}: added TTFT p99 ms", added(key, "ttft_ms", "p99")),
            (f"{title}: chunks/s", metric(key, "chunks_per_s")),
            (f"{title}: streams completed", metric(key, "ok")),
            (f"{title}: errors", metric(key, "errors")),
        ]
    rows += [
        ("start-up s (spawn → ready)", top("startup_s")),
        ("RSS idle MB", top("rss_idle_mb")),
        ("RSS after load MB", top("rss_after_mb")),
        ("RSS peak MB (sum VmHWM)", top("rss_peak_mb")),
    ]
    for key in ("ns_c64", "st50_c64", "paced_c512"):
        rows += [
            (f"rig: loadgen CPU % ({key})", metric(key, "loadgen_cpu_pct")),
            (f"rig: mock CPU % ({key})", mock_cpu(key)),
        ]
    for key in ("ns_c1", "ns_c64", "st50_c1", "st50_c64", "paced_c64", "paced_c256", "paced_c512"):
        rows.append(
            (
                f"rig: other CPU % on the target CPU ({key})",
                metric(key, "unattributed_cpu_pct", "target"),
            )
        )
    return rows


def _noise(res: Result, cols: list[str]) -> float:
    """Largest 'other CPU %' on the target CPU over all scenarios (0 if below 10 %)."""
    worst = 0.0
    for name in cols:
        for s in ((res["targets"].get(name) or {}).get("scenarios") or {}).values():
            v = (s.get("unattributed_cpu_pct") or {}).get("target") if isinstance(s, dict) else None
            if isinstance(v, int | float) and name != "direct":
                worst = max(worst, float(v))
    return worst if worst >= 10 else 0.0


def fmt(v: float | None) -> str:
    if v is None:
        return "–"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if a >= 0.1 or v == 0 else f"{v:.3f}"


def bar(res: Result) -> list[Result]:
    """The performance bar as pass/fail checks (None = not measurable in this run)."""

    def g(getter: Getter, target: str) -> float | None:
        return getter(res, target)

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b == 0 else a / b

    checks: list[Result] = []

    def check(name: str, value: float | None, ok: bool | None, need: str) -> None:
        checks.append({"check": name, "value": value, "need": need, "pass": ok})

    r = ratio(g(metric("ns_c64", "rps"), "gateway"), g(metric("ns_c64", "rps"), "litellm"))
    check("non-stream req/s (c=64), gateway ÷ litellm", r, None if r is None else r >= 20, "≥ 20")
    ga, la = (
        g(added("ns_c1", "latency_ms", "p50"), "gateway"),
        g(added("ns_c1", "latency_ms", "p50"), "litellm"),
    )
    r = ratio(ga, la)
    ok = None if ga is None or la is None else ga <= la / 10
    check("added p50 latency (c=1), gateway ÷ litellm", r, ok, "≤ 0.1")
    cps = metric("st50_c64", "chunks_per_s")
    r = ratio(g(cps, "gateway"), g(cps, "litellm"))
    check("streamed chunks/s (c=64), gateway ÷ litellm", r, None if r is None else r >= 25, "≥ 25")
    t = g(added("paced_c256", "ttft_ms", "p99"), "gateway")
    errs = g(metric("paced_c256", "errors"), "gateway")
    ok = None if t is None or errs is None else (t <= 50 and errs == 0)
    check("256 paced streams: gateway added TTFT p99 ms (and 0 errors)", t, ok, "≤ 50, 0 err")
    v = g(top("rss_idle_mb"), "gateway")
    check("gateway RSS idle MB", v, None if v is None else v <= 100, "≤ 100")
    v = g(top("startup_s"), "gateway")
    check("gateway ready after start, s", v, None if v is None else v <= 2, "≤ 2")
    return checks


def markdown(res: Result) -> str:
    meta = res["meta"]
    cols = [c for c in COLUMNS if c in res["targets"]] + [
        c for c in res["targets"] if c not in COLUMNS
    ]
    out = [f"# llm-gateway bench — {meta['date']}", ""]
    out.append(
        f"mode: {'quick' if meta['quick'] else 'full'}; "
        f"targets pinned to CPU {meta['target_cpus']}, "
        f"mock + loadgen on CPU {meta['rig_cpus']}; "
        f"LiteLLM {meta.get('litellm_version') or '–'}; "
        f"run time {meta.get('runtime_s', 0):.0f} s"
    )
    noisy = _noise(res, cols)
    if noisy:
        out.append(
            f"- **disturbed run**: up to {noisy:.0f} % of the target CPU went to other "
            "processes during a scenario (see the rig rows); re-run on a quiet machine"
        )
    for name in cols:
        skipped = (res["targets"].get(name) or {}).get("skipped")
        if skipped:
            out.append(f"- **{name} skipped**: {skipped}")
    out += ["", "| metric | " + " | ".join(cols) + " | gateway ÷ litellm |"]
    out.append("|---|" + "---:|" * (len(cols) + 1))
    for label, getter in _rows():
        vals = [getter(res, c) for c in cols]
        gw, lt = getter(res, "gateway"), getter(res, "litellm")
        ratio = None if gw is None or lt is None or lt == 0 else gw / lt
        if any(k in label for k in ("errors", "completed", "rig:")):
            ratio = None
        out.append(f"| {label} | " + " | ".join(fmt(v) for v in vals) + f" | {fmt(ratio)} |")
    out += ["", "## The bar", "", "| check | value | need | result |", "|---|---:|---|---|"]
    for c in res.get("bar") or bar(res):
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[c["pass"]]
        out.append(f"| {c['check']} | {fmt(c['value'])} | {c['need']} | {verdict} |")
    errs = []
    for name in cols:
        for key, s in ((res["targets"].get(name) or {}).get("scenarios") or {}).items():
            if not isinstance(s, dict):
                continue
            if s.get("failed"):
                errs.append(f"- {name} / {key}: scenario failed: {s['failed']}")
            elif s.get("error_kinds"):
                sample = s.get("error_samples", [])[:1]
                cens = s.get("ttft_censored") or 0
                note = f"; {cens} cut before their first token" if cens else ""
                errs.append(f"- {name} / {key}: {s['error_kinds']} {sample}{note}")
    if errs:
        out += ["", "## Errors", "", _ERRORS_NOTE, "", *errs]
    return "\n".join(out) + "\n"


_ERRORS_NOTE = (
    "`timeout` = cut by the bench (per-request timeout, or the scenario's grace period "
    "after its duration); a stream cut before its first token counts the time it waited "
    "as its TTFT, so such a TTFT is a lower bound."
)


if __name__ == "__main__":  # re-render: python bench/report.py bench/results/results.json
    import json
    import sys
    from pathlib import Path

    print(markdown(json.loads(Path(sys.argv[1]).read_text())), end="")
