"""``/metrics`` under ``llm-gateway --workers 2``: every worker's requests are counted, whichever
worker answers the scrape.

The operator names the directory (``PROMETHEUS_MULTIPROC_DIR``), so the test can read each
worker's own file: it sends requests on fresh connections until both workers have served some
(the kernel picks the worker), then checks that every scrape, from either worker, reports the
sum. A stale file left in the directory must not count: the CLI empties it at start.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import time
from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector

from tests.support.fault_upstream import FaultUpstream
from tests.support.servers import GATEWAY, free_port, spawn
from tests.test_metrics import parse, value

MAX_REQUESTS = 300


def per_worker_chat_requests(directory: Path) -> dict[int, float]:
    """Chat requests counted by each worker, from its own counter file."""
    counts: dict[int, float] = {}
    for path in glob.glob(str(directory / "counter_*.db")):
        pid = int(re.findall(r"counter_(\d+)\.db$", path)[0])
        metrics = MultiProcessCollector.merge([path], accumulate=True)  # type: ignore[no-untyped-call]
        counts[pid] = sum(
            s.value
            for metric in metrics
            for s in metric.samples
            if s.name == "llm_gateway_requests_total" and s.labels.get("surface") == "chat"
        )
    return counts


def test_two_workers_are_counted_together(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    stale = directory / "counter_999999.db"
    stale.write_bytes(b"left over from an earlier run")
    port = free_port()
    with spawn(
        [GATEWAY, "--workers", "2", "--port", str(port)],
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory)},
        ready_url=f"http://127.0.0.1:{port}/health",
        cwd=tmp_path,
        timeout=40,
    ) as server:
        assert not stale.exists()
        url = server.base_url
        body = {"model": "echo/echo", "messages": [{"role": "user", "content": "count me"}]}
        sent = 0
        while sent < MAX_REQUESTS:
            # a new connection each time, so either worker may accept it
            with httpx.Client(timeout=10) as client:
                assert client.post(f"{url}/v1/chat/completions", json=body).status_code == 200
            sent += 1
            counts = per_worker_chat_requests(directory)
            if sent >= 10 and len([c for c in counts.values() if c > 0]) >= 2:
                break
        # A request is counted when its response is complete, just after the client has it:
        # wait (bounded) for the last one rather than race it.
        deadline = time.monotonic() + 10
        counts = per_worker_chat_requests(directory)
        while sum(counts.values()) < sent and time.monotonic() < deadline:
            time.sleep(0.02)
            counts = per_worker_chat_requests(directory)
        assert len([c for c in counts.values() if c > 0]) == 2, counts
        assert sum(counts.values()) == sent

        seen: set[float] = set()
        for _ in range(8):  # fresh connections: the scrapes land on both workers
            with httpx.Client(timeout=10) as client:
                text = client.get(f"{url}/metrics").text
            samples = parse(text)
            seen.add(value(samples, "llm_gateway_requests_total", surface="chat"))
            assert (
                value(samples, "gen_ai_server_request_duration_seconds_count", error_type="")
                == sent
            )
            assert value(samples, "llm_gateway_inflight_requests") == 0
            # live gauges: one breaker state per deployment (the worst worker's), not one each
            assert value(samples, "llm_gateway_breaker_state", deployment="echo/echo") == 0
        assert seen == {sent}
        server.terminate(signal.SIGTERM)
        assert server.wait(20) == 0
    assert "Traceback" not in server.output()


def test_workers_get_a_private_directory_when_none_is_named(tmp_path: Path) -> None:
    temp = tmp_path / "temp"  # TMPDIR of the gateway: where its private directory goes
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    port = free_port()
    with spawn(
        [GATEWAY, "--workers", "2", "--port", str(port)],
        env={**env, "TMPDIR": str(temp)},
        inherit_env=False,
        ready_url=f"http://127.0.0.1:{port}/health",
        cwd=tmp_path,
        timeout=40,
    ) as server:
        url = server.base_url
        body = {"model": "echo/echo", "messages": [{"role": "user", "content": "count me"}]}
        for _ in range(6):
            with httpx.Client(timeout=10) as client:
                assert client.post(f"{url}/v1/chat/completions", json=body).status_code == 200
        for _ in range(8):
            with httpx.Client(timeout=10) as client:
                samples = parse(client.get(f"{url}/metrics").text)
            assert value(samples, "llm_gateway_requests_total", surface="chat") == 6
        assert len(list(temp.glob("llm-gateway-metrics-*"))) == 1
        server.terminate(signal.SIGTERM)
        assert server.wait(20) == 0
    assert not list(temp.glob("llm-gateway-metrics-*")), "the private directory was left behind"


def test_an_open_breaker_in_one_worker_shows_whichever_worker_is_scraped(
    tmp_path: Path, fault_upstream: tuple[str, FaultUpstream], upstream: FaultUpstream
) -> None:
    port = free_port()
    env = {
        "GATEWAY_PROVIDERS__FAULT__TYPE": "openai",
        "GATEWAY_PROVIDERS__FAULT__BASE_URL": fault_upstream[0],
        "GATEWAY_PROVIDERS__FAULT__API_KEY": "sk-upstream-0123456789",
        "GATEWAY_PROVIDERS__FAULT__MODELS": '["status:500"]',
        "GATEWAY_PROVIDERS__FAULT__MAX_RETRIES": "0",
        "GATEWAY_BREAKER_THRESHOLD": "1",
        "GATEWAY_BREAKER_COOLDOWN": "300",
    }
    with spawn(
        [GATEWAY, "--workers", "2", "--port", str(port)],
        env=env,
        ready_url=f"http://127.0.0.1:{port}/health",
        cwd=tmp_path,
        timeout=40,
    ) as server:
        url = server.base_url
        body = {"model": "fault/status:500", "messages": [{"role": "user", "content": "x"}]}
        with httpx.Client(timeout=10) as client:  # one connection: one worker's breaker
            assert client.post(f"{url}/v1/chat/completions", json=body).status_code == 502

        def breaker() -> float:
            with httpx.Client(timeout=10) as client:  # a new connection: either worker
                samples = parse(client.get(f"{url}/metrics").text)
            return value(samples, "llm_gateway_breaker_state", deployment="fault/status:500")

        # the opened worker publishes its state within its refresh period (2 s)
        for _ in range(100):
            if breaker() == 2:
                break
            time.sleep(0.1)
        assert [breaker() for _ in range(8)] == [2] * 8  # the worst worker's, from any worker
