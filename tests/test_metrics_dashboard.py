"""The dashboard's arithmetic (webui/dashboard.py): rates and quantiles from scraped totals,
as Prometheus computes them, on a real gateway's exposition."""

from __future__ import annotations

import httpx
import pytest

from gateway.app import create_app
from tests.conftest import settings
from tests.support.servers import serve_in_thread
from webui.dashboard import Snapshot, parse, quantile, series, summary


def test_quantile_interpolates_within_the_bucket_like_histogram_quantile() -> None:
    # 10 observations: 4 up to 0.1 s, 4 more up to 0.5 s, 2 more up to 1 s
    buckets = {0.1: 4.0, 0.5: 8.0, 1.0: 10.0, float("inf"): 10.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (5 - 4) / 4)
    assert quantile(0.95, buckets) == pytest.approx(0.5 + 0.5 * (9.5 - 8) / 2)
    assert quantile(0.2, buckets) == pytest.approx(0.05)
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    # in the +Inf bucket: the highest finite bound, as Prometheus answers
    assert quantile(0.99, {0.1: 1.0, float("inf"): 10.0}) == 0.1


def test_rates_are_differences_between_scrapes_and_survive_a_restart() -> None:
    history = [
        Snapshot(at=100.0, requests=10, tokens=100, errors={"upstream_error": 1}),
        Snapshot(at=102.0, requests=30, tokens=500, errors={"upstream_error": 5}),
        Snapshot(at=104.0, requests=4, tokens=40, errors={}),  # the gateway restarted
    ]
    charts = series(history, now=104.0)
    assert list(charts["requests"]["rate"]) == [10.0, 2.0]
    assert list(charts["requests"]["time"]) == [-2.0, 0.0]
    assert list(charts["tokens"]["rate"]) == [200.0, 20.0]
    assert list(charts["errors"]["rate"]) == [2.0, 0.0]
    assert set(charts["errors"]["series"]) == {"upstream_error"}
    assert "6.50 requests/s" in summary([*history[:2], Snapshot(at=104.0, requests=36)])


def test_parse_reads_a_real_gateways_metrics() -> None:
    with serve_in_thread(create_app(settings())) as url:
        for stream in (True, False):
            body = {
                "model": "echo/echo",
                "messages": [{"role": "user", "content": "a b c"}],
                "stream": stream,
            }
            assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 200
        unknown = {"model": "nope", "messages": [{"role": "user", "content": "a"}]}
        assert httpx.post(f"{url}/v1/chat/completions", json=unknown).status_code == 404
        text = httpx.get(f"{url}/metrics").text
    scrape = parse(text, at=1.0)
    snap = scrape.snapshot
    assert snap.requests == 3  # API requests only: not the scrape, not health checks
    assert snap.errors == {"model_not_found": 1}
    assert snap.tokens > 0
    assert snap.ttft[float("inf")] == 1  # the one stream
    assert scrape.deployments == [["echo", "echo/echo", "closed", 0]]
