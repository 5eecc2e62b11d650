"""The Dashboard page: the gateway's own ``/metrics``, read over HTTP, as a table and live charts.

``build(gateway_url)`` adds the page's components to the current Gradio page. Every few seconds
(:data:`POLL_SECONDS`) it scrapes ``/metrics`` (with the admin key the visitor typed, when the
gateway asks for one), keeps the last :data:`WINDOW_SECONDS` of totals in the visitor's session
and draws what changed between scrapes: requests/s, TTFT p50/p95, tokens/s and errors/s by code.

Everything is computed from counters and histogram buckets, as Prometheus would: rates are
differences between two scrapes, quantiles are interpolated within the buckets of the
difference. Under ``--workers N`` the gateway's ``/metrics`` already sums every worker, so one
scrape is the whole gateway.

Below the charts, usage and cost per key and model come from the usage ledger, through the
admin API, with the same admin key (:mod:`webui.dashboard_usage`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from webui import dashboard_usage

POLL_SECONDS = 2.0
WINDOW_SECONDS = 300.0
QUANTILE_SPAN = 5
"""TTFT quantiles use the buckets filled over this many scrapes (~10 s): one scrape's handful
of requests would make a jumpy line."""
REQUESTS = "llm_gateway_requests"
TOKENS = "llm_gateway_tokens"
TTFT = "gen_ai_server_time_to_first_token_seconds"
BREAKER = "llm_gateway_breaker_state"
DEPLOYMENT_INFLIGHT = "llm_gateway_deployment_inflight_requests"
POOL = "llm_gateway_pool_connections"
BREAKER_STATES = {0: "closed", 1: "half-open", 2: "open"}
TABLE_HEADERS = ["provider", "deployment", "breaker", "in flight"]
PLOT_COLUMNS = ["time", "rate", "series"]


@dataclass(slots=True)
class Snapshot:
    """The totals of one scrape that the charts need (a few numbers, kept per session)."""

    at: float
    requests: float = 0.0
    tokens: float = 0.0
    errors: dict[str, float] = field(default_factory=dict)
    ttft: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count


@dataclass(slots=True)
class Scrape:
    """What one scrape says: the snapshot, and the current state of deployments and pools."""

    snapshot: Snapshot
    deployments: list[list[Any]]
    pools: dict[str, dict[str, float]]


def parse(text: str, *, at: float) -> Scrape:
    """Read the exposition text of ``/metrics``."""
    snap = Snapshot(at=at)
    breakers: dict[str, tuple[str, float]] = {}
    inflight: dict[str, float] = {}
    pools: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels, value = sample.labels, sample.value
            if sample.name == REQUESTS + "_total":
                if labels.get("surface", "none") == "none":
                    continue  # health checks, scrapes, the UI's own pages
                snap.requests += value
                code = labels.get("error_type", "")
                if code:
                    snap.errors[code] = snap.errors.get(code, 0.0) + value
            elif sample.name == TOKENS + "_total":
                if labels.get("gen_ai_token_type") in ("input", "output"):
                    snap.tokens += value
            elif sample.name == TTFT + "_bucket":
                bound = float(labels["le"])
                snap.ttft[bound] = snap.ttft.get(bound, 0.0) + value
            elif sample.name == BREAKER:
                breakers[labels["deployment"]] = (labels.get("gen_ai_provider_name", ""), value)
            elif sample.name == DEPLOYMENT_INFLIGHT:
                inflight[labels["deployment"]] = value
            elif sample.name == POOL:
                provider = labels.get("gen_ai_provider_name", "")
                pools.setdefault(provider, {})[labels.get("state", "")] = value
    rows = [
        [provider, name, BREAKER_STATES.get(int(state), str(state)), int(inflight.get(name, 0))]
        for name, (provider, state) in sorted(breakers.items(), key=lambda kv: (kv[1][0], kv[0]))
    ]
    return Scrape(snapshot=snap, deployments=rows, pools=pools)


def _delta(new: float, old: float) -> float:
    """A counter's increase; after a restart (a reset) the new value is all increase."""
    return new - old if new >= old else new


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's ``histogram_quantile``: linear within the bucket that holds rank q.

    None without observations; the highest finite bound when the rank is in the +Inf bucket.
    """
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def _bucket_delta(new: dict[float, float], old: dict[float, float]) -> dict[float, float]:
    return {bound: _delta(count, old.get(bound, 0.0)) for bound, count in new.items()}


def series(history: Sequence[Snapshot], now: float) -> dict[str, pd.DataFrame]:
    """The four charts' data: one row per (scrape, series), x in seconds before ``now``."""
    rows: dict[str, list[tuple[float, float, str]]] = {
        "requests": [],
        "ttft": [],
        "tokens": [],
        "errors": [],
    }
    for i in range(1, len(history)):
        old, new = history[i - 1], history[i]
        span = new.at - old.at
        if span <= 0:
            continue
        x = round(new.at - now, 1)
        rows["requests"].append((x, _delta(new.requests, old.requests) / span, "requests/s"))
        rows["tokens"].append((x, _delta(new.tokens, old.tokens) / span, "tokens/s"))
        for code in sorted(set(new.errors) | set(old.errors)):
            rate = _delta(new.errors.get(code, 0.0), old.errors.get(code, 0.0)) / span
            rows["errors"].append((x, rate, code))
        window = _bucket_delta(new.ttft, history[max(0, i - QUANTILE_SPAN)].ttft)
        for q, name in ((0.5, "p50"), (0.95, "p95")):
            value = quantile(q, window)
            if value is not None:
                rows["ttft"].append((x, value, name))
    return {name: frame(data) for name, data in rows.items()}


def frame(rows: list[tuple[float, float, str]]) -> pd.DataFrame:
    """A chart's data with its column types set even when empty: the plot reads its scales'
    kinds (numbers or names) from them."""
    columns: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [(), (), ()]
    return pd.DataFrame(
        {
            "time": pd.Series(columns[0], dtype="float64"),
            "rate": pd.Series(columns[1], dtype="float64"),
            "series": pd.Series(columns[2], dtype="str"),
        }
    )


def summary(history: Sequence[Snapshot]) -> str:
    """The last few scrapes in one line: rates and TTFT quantiles over them."""
    if len(history) < 2:
        return "Collecting… (rates start after the second scrape)"
    new, old = history[-1], history[max(0, len(history) - 1 - QUANTILE_SPAN)]
    span = new.at - old.at
    if span <= 0:
        return ""
    errors = sum(
        _delta(new.errors.get(code, 0.0), old.errors.get(code, 0.0)) for code in new.errors
    )
    window = _bucket_delta(new.ttft, old.ttft)
    p50, p95 = quantile(0.5, window), quantile(0.95, window)
    ttft = "–" if p50 is None or p95 is None else f"{p50 * 1000:.0f} / {p95 * 1000:.0f} ms"
    return (
        f"Last {span:.0f} s: **{_delta(new.requests, old.requests) / span:.2f} requests/s**, "
        f"TTFT p50 / p95 **{ttft}**, **{_delta(new.tokens, old.tokens) / span:.1f} tokens/s**, "
        f"**{errors / span:.2f} errors/s**"
    )


def trim(history: Iterable[Snapshot], now: float) -> list[Snapshot]:
    return [s for s in history if now - s.at <= WINDOW_SECONDS + POLL_SECONDS]


def describe_pools(pools: dict[str, dict[str, float]]) -> str:
    if not pools:
        return ""
    parts = [
        f"**{provider}**: " + ", ".join(f"{n:g} {state}" for state, n in sorted(states.items()))
        for provider, states in sorted(pools.items())
    ]
    return "Upstream connections: " + "; ".join(parts)


async def scrape(client: httpx.AsyncClient, url: str, admin_key: str) -> tuple[str | None, str]:
    """``/metrics``'s text, or None and what to tell the visitor."""
    headers = dashboard_usage.admin_headers(admin_key)
    if headers is None:
        return None, dashboard_usage.REFUSED
    try:
        response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"⚠ cannot reach the gateway ({type(exc).__name__})"
    if response.status_code in (401, 403):
        if headers:
            return None, dashboard_usage.REFUSED
        return None, "🔑 This gateway's metrics need the admin key: enter it above."
    if response.status_code == 404:
        return None, "Metrics are off on this gateway (GATEWAY_METRICS=false)."
    if response.status_code != 200:
        return None, f"⚠ /metrics answered {response.status_code}"
    return response.text, ""


def build(gateway_url: str) -> None:
    """Add the dashboard to the current Gradio page; it reaches the gateway only over HTTP."""
    import gradio as gr  # here: the gateway's tests import this module's helpers without it

    url = gateway_url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    metrics_url = f"{url}/metrics"
    clients: list[httpx.AsyncClient] = []

    def client() -> httpx.AsyncClient:
        if not clients:
            clients.append(httpx.AsyncClient(timeout=httpx.Timeout(5.0)))
        return clients[0]

    gr.Markdown("## Dashboard\nLive from the gateway's `/metrics`, refreshed every few seconds.")
    admin_key = gr.Textbox(
        label="Admin key (only when the gateway has one)",
        type="password",
        elem_id="dashboard-admin-key",
    )
    status = gr.Markdown("Loading…", elem_id="dashboard-status")
    table = gr.Dataframe(
        headers=TABLE_HEADERS,
        value=[],
        label="Deployments",
        interactive=False,
        elem_id="dashboard-deployments",
    )
    pools = gr.Markdown("", elem_id="dashboard-pools")
    empty = frame([])
    plot_options: dict[str, Any] = {
        "x": "time",
        "y": "rate",
        "color": "series",
        "x_title": "seconds ago",
        "height": 220,
    }
    with gr.Row():
        requests_plot = gr.LinePlot(
            empty, title="Requests/s", elem_id="dashboard-requests", **plot_options
        )
        ttft_plot = gr.LinePlot(
            empty, title="Time to first token (s)", elem_id="dashboard-ttft", **plot_options
        )
    with gr.Row():
        tokens_plot = gr.LinePlot(
            empty, title="Tokens/s", elem_id="dashboard-tokens", **plot_options
        )
        errors_plot = gr.LinePlot(
            empty, title="Errors/s by code", elem_id="dashboard-errors", **plot_options
        )
    history = gr.State([])
    timer = gr.Timer(POLL_SECONDS)

    async def refresh(key: str, kept: list[Snapshot]) -> tuple[Any, ...]:
        text, problem = await scrape(client(), metrics_url, key or "")
        if text is None:  # nothing stale stays on screen, nor in the session
            nothing = frame([])
            rows = pd.DataFrame([], columns=TABLE_HEADERS)
            return (problem, rows, "", nothing, nothing, nothing, nothing, [])
        now = time.time()
        result = parse(text, at=now)
        kept = [*trim(kept, now), result.snapshot]
        charts = series(kept, now)
        note = f"Updated {time.strftime('%H:%M:%S', time.localtime(now))}. {summary(kept)}"
        return (
            note,
            pd.DataFrame(result.deployments, columns=TABLE_HEADERS),
            describe_pools(result.pools),
            charts["requests"],
            charts["ttft"],
            charts["tokens"],
            charts["errors"],
            kept,
        )

    outputs = [status, table, pools, requests_plot, ttft_plot, tokens_plot, errors_plot, history]
    timer.tick(refresh, inputs=[admin_key, history], outputs=outputs, show_progress="hidden")
    admin_key.submit(refresh, inputs=[admin_key, history], outputs=outputs)
    dashboard_usage.build(admin_key, client, url)
