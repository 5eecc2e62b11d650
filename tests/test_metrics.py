"""``GET /metrics`` after known traffic: every count and every token sum is what was sent.

A real gateway in front of the fault upstream, real clients (the openai SDK, raw httpx), and the
exposition parsed with prometheus_client's own parser. Durations are checked for what can be
known without timing: a count per request, a positive sum, buckets that add up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from tests.conftest import fault_provider, settings
from tests.support.clients import sdk
from tests.support.fault_upstream import FaultUpstream
from tests.support.servers import serve_in_thread

ADMIN_KEY = "admin-key-0123456789-abcdef"
API_KEY = "api-key-0123456789-abcdef"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, **headers: str) -> Samples:
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(ls)[label] for (n, ls) in samples if n == name and label in dict(ls)}


def wait_for(url: str, name: str, expected: float, **labels: str) -> Samples:
    """Scrape until ``name`` reaches ``expected`` (a request's end is reported just after its
    last byte), for at most 10 s."""
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(url)
        if value(samples, name, **labels) == expected or time.monotonic() > deadline:
            return samples
        time.sleep(0.02)


@pytest.fixture
def gateway(fault_upstream: tuple[str, FaultUpstream]) -> Iterator[str]:
    providers = {
        "fault": fault_provider(
            fault_upstream[0], models=["ok", "status:500", "stall:2"], max_retries=1
        ),
        "echo": {"type": "echo"},
    }
    with serve_in_thread(create_app(settings(providers=providers, breaker_threshold=0))) as url:
        yield url


def test_counts_and_token_sums_equal_the_traffic_sent(
    gateway: str, upstream: FaultUpstream
) -> None:
    client = sdk(gateway)
    question: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "one two three four five"}
    ]
    sent_in = sent_out = 0
    for _ in range(4):
        stream = client.chat.completions.create(
            model="fault/ok",
            messages=question,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if chunk.usage is not None:
                sent_in += chunk.usage.prompt_tokens
                sent_out += chunk.usage.completion_tokens
    for _ in range(3):
        reply = client.chat.completions.create(model="fault/ok", messages=question)
        assert reply.usage is not None
        sent_in += reply.usage.prompt_tokens
        sent_out += reply.usage.completion_tokens
    assert sent_out > 4 * 2  # several tokens per answer: time per output token is defined
    body = {"messages": question}
    for _ in range(2):  # two attempts each (one retry), both failing
        assert (
            httpx.post(
                f"{gateway}/v1/chat/completions", json={**body, "model": "fault/status:500"}
            ).status_code
            == 502
        )
    wild = "my-secret-prompt-model-name"
    assert (
        httpx.post(f"{gateway}/v1/chat/completions", json={**body, "model": wild}).status_code
        == 404
    )

    m = wait_for(gateway, "llm_gateway_requests_total", 10, surface="chat")
    ok = {"surface": "chat", "gen_ai_request_model": "fault/ok", "gen_ai_provider_name": "fault"}
    assert value(m, "llm_gateway_requests_total", **ok, status_class="2xx", error_type="") == 7
    failed = {"gen_ai_request_model": "fault/status:500", "error_type": "upstream_error"}
    assert value(m, "llm_gateway_requests_total", **failed, status_class="5xx") == 2
    assert (
        value(m, "llm_gateway_requests_total", gen_ai_request_model="other", status_class="4xx")
        == 1
    )
    # attempts, retries and their errors
    assert value(m, "llm_gateway_upstream_attempts_total", deployment="fault/ok") == 7
    assert value(m, "llm_gateway_upstream_attempts_total", deployment="fault/status:500") == 4
    assert value(m, "llm_gateway_upstream_retries_total", deployment="fault/status:500") == 2
    assert value(m, "llm_gateway_upstream_retries_total", deployment="fault/ok") == 0
    assert (
        value(
            m,
            "llm_gateway_upstream_errors_total",
            deployment="fault/status:500",
            error_type="upstream_error",
        )
        == 4
    )
    # tokens: the counters and the per-request histogram hold exactly what the client was told
    labels = {"gen_ai_operation_name": "chat", "gen_ai_request_model": "fault/ok"}
    assert value(m, "llm_gateway_tokens_total", **labels, gen_ai_token_type="input") == sent_in
    assert value(m, "llm_gateway_tokens_total", **labels, gen_ai_token_type="output") == sent_out
    usage = "gen_ai_client_token_usage"
    assert value(m, f"{usage}_sum", **labels, gen_ai_token_type="input") == sent_in
    assert value(m, f"{usage}_sum", **labels, gen_ai_token_type="output") == sent_out
    assert value(m, f"{usage}_count", **labels, gen_ai_token_type="output") == 7
    # one duration per request; time to first token and per output token: streams only
    duration = "gen_ai_server_request_duration_seconds"
    assert value(m, f"{duration}_count", **labels, error_type="") == 7
    assert value(m, f"{duration}_count", error_type="upstream_error") == 2
    assert value(m, f"{duration}_sum", **labels) > 0
    assert value(m, "gen_ai_server_time_to_first_token_seconds_count", **labels) == 4
    assert value(m, "gen_ai_server_time_per_output_token_seconds_count", **labels) == 4
    attempt = "gen_ai_client_operation_duration_seconds"
    assert value(m, f"{attempt}_count", **labels) == 7
    assert value(m, f"{attempt}_count", error_type="upstream_error") == 4
    # buckets are cumulative and end at the count
    for name in (duration, "gen_ai_server_time_to_first_token_seconds", usage, attempt):
        check_buckets(m, name)
    # nothing is in flight any more
    assert value(m, "llm_gateway_inflight_requests") == 0
    assert value(m, "llm_gateway_inflight_streams") == 0
    # bounded labels: the unknown model is "other"; no key, prompt or request id anywhere
    text = httpx.get(f"{gateway}/metrics").text
    assert wild not in text and "one two three" not in text
    assert "sk-upstream-canary" not in text
    assert label_values(parse(text), "llm_gateway_requests_total", "gen_ai_request_model") == {
        "fault/ok",
        "fault/status:500",
        "other",
        "none",  # GET /metrics itself: no model
    }


def check_buckets(samples: Samples, name: str) -> None:
    series: dict[frozenset[tuple[str, str]], list[tuple[float, float]]] = {}
    for (n, labels), v in samples.items():
        if n == f"{name}_bucket":
            rest = frozenset((k, x) for k, x in labels if k != "le")
            series.setdefault(rest, []).append((float(dict(labels)["le"]), v))
    assert series, f"no buckets for {name}"
    for rest, buckets in series.items():
        counts = [c for _, c in sorted(buckets)]
        assert counts == sorted(counts), f"{name} buckets not cumulative"
        assert counts[-1] == samples[(f"{name}_count", rest)]


def test_client_disconnects_and_in_flight_streams(gateway: str, upstream: FaultUpstream) -> None:
    body = {
        "model": "fault/stall:2",
        "messages": [{"role": "user", "content": "a b c d"}],
        "stream": True,
    }
    with httpx.stream("POST", f"{gateway}/v1/chat/completions", json=body, timeout=10) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        during = wait_for(gateway, "llm_gateway_inflight_streams", 1, surface="chat")
        assert value(during, "llm_gateway_inflight_requests", surface="chat") == 1
        assert (
            value(during, "llm_gateway_deployment_inflight_requests", deployment="fault/stall:2")
            == 1
        )
    m = wait_for(gateway, "llm_gateway_client_disconnects_total", 1, surface="chat")
    assert value(m, "llm_gateway_client_disconnects_total", surface="chat") == 1
    assert (
        value(m, "llm_gateway_requests_total", error_type="client_disconnected", status_class="2xx")
        == 1
    )
    m = wait_for(gateway, "llm_gateway_inflight_streams", 0)
    assert value(m, "llm_gateway_inflight_requests") == 0
    assert value(m, "llm_gateway_deployment_inflight_requests") == 0


def test_breaker_and_pool_gauges(
    fault_upstream: tuple[str, FaultUpstream], upstream: FaultUpstream
) -> None:
    providers = {
        "fault": fault_provider(
            fault_upstream[0], models=["ok", "status:500"], max_retries=0, breaker_threshold=2
        )
    }
    with serve_in_thread(create_app(settings(providers=providers))) as url:
        m = scrape(url)
        assert value(m, "llm_gateway_breaker_state", deployment="fault/status:500") == 0
        assert value(m, "llm_gateway_pool_connections", gen_ai_provider_name="fault") == 0
        body: dict[str, Any] = {"messages": [{"role": "user", "content": "x"}]}
        assert (
            httpx.post(f"{url}/v1/chat/completions", json={**body, "model": "fault/ok"}).status_code
            == 200
        )
        for status in (502, 502, 503):  # the third is refused by the open breaker
            response = httpx.post(
                f"{url}/v1/chat/completions", json={**body, "model": "fault/status:500"}
            )
            assert response.status_code == status
        m = scrape(url)
        assert value(m, "llm_gateway_breaker_state", deployment="fault/status:500") == 2
        assert value(m, "llm_gateway_breaker_state", deployment="fault/ok") == 0
        # the connection the requests used waits, idle, for the next one
        assert value(m, "llm_gateway_pool_connections", state="idle") >= 1
        assert value(m, "llm_gateway_pool_connections", state="in_use") == 0
        assert value(m, "llm_gateway_pool_waiting_requests") == 0
        assert value(m, "llm_gateway_requests_total", error_type="provider_cooling_down") == 1


def test_metrics_are_open_even_with_api_keys() -> None:
    with serve_in_thread(create_app(settings(api_keys=[API_KEY]))) as url:
        assert (
            httpx.post(
                f"{url}/v1/chat/completions", json={"model": "echo/echo", "messages": []}
            ).status_code
            == 401
        )
        m = scrape(url)
        # a request refused before its surface ran still counts under its surface
        assert value(m, "llm_gateway_requests_total", surface="chat", error_type="401") == 1
        assert API_KEY not in httpx.get(f"{url}/metrics").text


def test_admin_mode_needs_the_admin_key_and_answers_in_the_api_shape() -> None:
    admin = settings(api_keys=[API_KEY], admin_key=ADMIN_KEY, metrics_auth="admin")
    with serve_in_thread(create_app(admin)) as url:
        for headers in ({}, {"authorization": f"Bearer {API_KEY}"}, {"authorization": "Basic x"}):
            response = httpx.get(f"{url}/metrics", headers=headers)
            assert response.status_code == 401
            error = response.json()["error"]
            assert error["type"] == "authentication_error"
            assert ADMIN_KEY not in response.text
        assert scrape(url, authorization=f"Bearer {ADMIN_KEY}")
        response = httpx.post(f"{url}/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert response.status_code == 405
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_admin_mode_without_an_admin_key_is_a_config_error() -> None:
    from gateway.settings import ConfigError

    with pytest.raises(ConfigError, match="GATEWAY_ADMIN_KEY"):
        create_app(settings(metrics_auth="admin"))


METRICS_KEY = "metrics-key-0123456789-abcdef"


def test_a_metrics_key_scrapes_and_opens_nothing_else(tmp_path: Any) -> None:
    """A scraper gets a secret of its own: the admin key, which mints keys, stays with admins
    (who may still scrape: the dashboard asks for their key)."""
    keyed = settings(
        api_keys=[API_KEY],
        admin_key=ADMIN_KEY,
        metrics_key=METRICS_KEY,
        database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
    )
    with serve_in_thread(create_app(keyed)) as url:
        assert scrape(url, authorization=f"Bearer {METRICS_KEY}")
        assert scrape(url, authorization=f"Bearer {ADMIN_KEY}")
        refused = {
            "none": httpx.get(f"{url}/metrics"),
            "api key": httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {API_KEY}"}),
            "a prefix": httpx.get(
                f"{url}/metrics", headers={"authorization": f"Bearer {METRICS_KEY[:-1]}"}
            ),
        }
        metrics_bearer = {"authorization": f"Bearer {METRICS_KEY}"}
        admin_api = httpx.get(f"{url}/admin/keys", headers=metrics_bearer)
        models = httpx.get(f"{url}/v1/models", headers=metrics_bearer)
    codes = {what: r.json()["error"]["code"] for what, r in refused.items()}
    assert {r.status_code for r in refused.values()} == {401}
    assert codes == {
        "none": "missing_metrics_key",
        "api key": "invalid_metrics_key",
        "a prefix": "invalid_metrics_key",
    }
    assert all(METRICS_KEY not in r.text and ADMIN_KEY not in r.text for r in refused.values())
    assert admin_api.status_code == 401 and models.status_code == 401


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"metrics_auth": "key"}, "GATEWAY_METRICS_AUTH=key needs GATEWAY_METRICS_KEY"),
        ({"metrics_key": METRICS_KEY, "metrics_auth": "open"}, "would not accept it"),
        (
            {"metrics_key": METRICS_KEY, "metrics_auth": "admin", "admin_key": ADMIN_KEY},
            "would not accept it",
        ),
        ({"metrics_key": "short"}, "at least 16 characters"),
        ({"metrics_key": f" {METRICS_KEY}"}, "no surrounding spaces"),
    ],
)
def test_a_metrics_key_that_could_not_work_stops_the_start(
    options: dict[str, Any], says: str
) -> None:
    from gateway.settings import ConfigError

    with pytest.raises(ConfigError, match=says) as caught:
        create_app(settings(**options))
    assert METRICS_KEY not in str(caught.value)


def test_metrics_off_means_no_route_and_no_observer() -> None:
    app = create_app(settings(metrics=False))
    with serve_in_thread(app) as url:
        response = httpx.get(f"{url}/metrics")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "unknown_url"


def test_an_admin_key_puts_metrics_behind_it_unless_told_open() -> None:
    with serve_in_thread(create_app(settings(admin_key=ADMIN_KEY))) as url:
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert scrape(url, authorization=f"Bearer {ADMIN_KEY}")
    with serve_in_thread(create_app(settings(admin_key=ADMIN_KEY, metrics_auth="open"))) as url:
        assert scrape(url)


def test_the_gateways_families_write_what_prometheus_clients_types_wrote() -> None:
    """The cheap families (dict counters, bisect histograms) against prometheus_client's own
    Counter, Histogram and Gauge fed the same values: the same text, byte for byte, including
    values exactly on a bucket bound (``le`` is inclusive) and past the last one."""
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        disable_created_metrics,
        generate_latest,
    )

    from gateway.metrics import DURATION_BUCKETS, TOKEN_BUCKETS
    from gateway.metrics_families import CounterFamily, GaugeFamily, HistogramFamily, exposition

    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    theirs_counter = Counter("c", "a counter", ["a", "b"], registry=registry)
    theirs_hist = Histogram(
        "h_seconds", "a histogram", ["a"], buckets=DURATION_BUCKETS, registry=registry
    )
    theirs_tokens = Histogram(
        "t", 'tokens "quoted"\nhelp', ["a"], buckets=TOKEN_BUCKETS, registry=registry
    )
    theirs_gauge = Gauge("g", "a gauge", ["a"], registry=registry)
    counter = CounterFamily("c", "a counter", ["a", "b"])
    hist = HistogramFamily("h_seconds", "a histogram", ["a"], DURATION_BUCKETS)
    tokens = HistogramFamily("t", 'tokens "quoted"\nhelp', ["a"], TOKEN_BUCKETS)
    gauge = GaugeFamily("g", "a gauge", ["a"])
    for i, v in enumerate([0.0, 0.01, 0.010001, 0.32, 1.28, 5, 327.68, 400.0, 1e9, 0.5, 0.64]):
        label = ("x", 'y "q"\\')[i % 2]
        theirs_counter.labels(label, "b").inc(v)
        counter.inc((label, "b"), v)
        theirs_hist.labels(label).observe(v)
        hist.observe((label,), v)
        theirs_tokens.labels(label).observe(int(v))
        tokens.observe((label,), int(v))
        theirs_gauge.labels(label).set(i)
        gauge.set((label,), i)
    ours = [counter, hist, tokens, gauge]
    assert exposition(ours, {f.name: f.copy() for f in ours}) == generate_latest(registry)
