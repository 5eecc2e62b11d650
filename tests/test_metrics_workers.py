"""``/metrics`` under ``llm-gateway --workers 2``: every worker's requests are counted, whichever
worker answers the scrape.

The operator names the directory (``PROMETHEUS_MULTIPROC_DIR``), so the test can read each
worker's own snapshot: it sends requests on fresh connections until both workers have served
some (the kernel picks the worker), then checks that every scrape, from either worker, reports
the sum. A worker publishes its snapshot every second, so the test waits (bounded) for a
request's count to reach the files or a scrape, never sleeps blindly. A stale snapshot left in
the directory must not count: the CLI empties it at start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path

import httpx

from gateway.metrics import GatewayMetrics
from gateway.metrics_families import exposition
from gateway.metrics_workers import WorkerShare
from tests.support.fault_upstream import FaultUpstream
from tests.support.servers import GATEWAY, ProcessServer, free_port, spawn
from tests.test_metrics import Samples, parse, value

MAX_REQUESTS = 300


def two_workers(
    cwd: Path, env: dict[str, str], *, inherit_env: bool = True
) -> AbstractContextManager[ProcessServer]:
    """``llm-gateway --workers 2`` on a free port, ready once it answers ``/health``."""
    port = free_port()
    return spawn(
        [GATEWAY, "--workers", "2", "--port", str(port)],
        env=env,
        inherit_env=inherit_env,
        ready_url=f"http://127.0.0.1:{port}/health",
        cwd=cwd,
        timeout=40,
    )


def fault_env(base_url: str, models: str) -> dict[str, str]:
    """Provider ``fault`` (openai) in front of the fault upstream, serving ``models`` (JSON)."""
    return {
        "GATEWAY_PROVIDERS__FAULT__TYPE": "openai",
        "GATEWAY_PROVIDERS__FAULT__BASE_URL": base_url,
        "GATEWAY_PROVIDERS__FAULT__API_KEY": "sk-upstream-0123456789",
        "GATEWAY_PROVIDERS__FAULT__MODELS": models,
    }


def scrape(url: str) -> Samples:
    """One scrape on a new connection, so either worker may be the one that answers it."""
    with httpx.Client(timeout=10) as client:
        return parse(client.get(f"{url}/metrics").text)


def per_worker_chat_requests(directory: Path) -> dict[int, float]:
    """Chat requests counted by each worker, from its own published snapshot."""
    counts: dict[int, float] = {}
    for path in directory.glob("worker_*.json"):
        data = json.loads(path.read_text())
        counts[data["pid"]] = sum(
            count
            for labels, count in data["series"].get("llm_gateway_requests", [])
            if labels[0] == "chat"
        )
    return counts


def wait_for_files(directory: Path, sent: int) -> dict[int, float]:
    """Chat requests per worker, once the snapshots hold all ``sent`` (bounded: 10 s).

    A request is counted when its response is complete, just after the client has it, and
    reaches its worker's file within a second: so the wait."""
    deadline = time.monotonic() + 10
    counts = per_worker_chat_requests(directory)
    while sum(counts.values()) < sent and time.monotonic() < deadline:
        time.sleep(0.02)
        counts = per_worker_chat_requests(directory)
    assert sum(counts.values()) == sent, counts
    return counts


def scrape_until(url: str, name: str, expected: float, **labels: str) -> None:
    """Scrape (any worker) until ``name`` is ``expected``: another worker's snapshot may be up to
    a second old. Bounded: 10 s."""
    deadline = time.monotonic() + 10
    seen = None
    while time.monotonic() < deadline:
        seen = value(scrape(url), name, **labels)
        if seen == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} stayed at {seen}, expected {expected}")


def test_two_workers_are_counted_together(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    stale = directory / "worker_999999.json"  # a dead pid: its counters would be counted
    stale.write_text(
        json.dumps({"pid": 999999, "series": {"llm_gateway_requests": [[["chat"] * 5, 1000.0]]}})
    )
    with two_workers(tmp_path, {"PROMETHEUS_MULTIPROC_DIR": str(directory)}) as server:
        assert not stale.exists()
        url = server.base_url
        body = {"model": "echo/echo", "messages": [{"role": "user", "content": "count me"}]}
        sent = 0
        counts: dict[int, float] = {}
        while sent < MAX_REQUESTS and len([c for c in counts.values() if c > 0]) < 2:
            for _ in range(10):  # a new connection each time, so either worker may accept it
                with httpx.Client(timeout=10) as client:
                    response = client.post(f"{url}/v1/chat/completions", json=body)
                    assert response.status_code == 200
                sent += 1
            counts = wait_for_files(directory, sent)
        assert len([c for c in counts.values() if c > 0]) == 2, counts
        assert sum(counts.values()) == sent

        seen: set[float] = set()
        for _ in range(8):  # fresh connections: the scrapes land on both workers
            samples = scrape(url)
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
    with two_workers(tmp_path, {**env, "TMPDIR": str(temp)}, inherit_env=False) as server:
        url = server.base_url
        body = {"model": "echo/echo", "messages": [{"role": "user", "content": "count me"}]}
        for _ in range(6):
            with httpx.Client(timeout=10) as client:
                assert client.post(f"{url}/v1/chat/completions", json=body).status_code == 200
        scrape_until(url, "llm_gateway_requests_total", 6, surface="chat")
        for _ in range(8):
            assert value(scrape(url), "llm_gateway_requests_total", surface="chat") == 6
        assert len(list(temp.glob("llm-gateway-metrics-*"))) == 1
        server.terminate(signal.SIGTERM)
        assert server.wait(20) == 0
    assert not list(temp.glob("llm-gateway-metrics-*")), "the private directory was left behind"


def test_an_open_breaker_in_one_worker_shows_whichever_worker_is_scraped(
    tmp_path: Path, fault_upstream: tuple[str, FaultUpstream], upstream: FaultUpstream
) -> None:
    env = {
        **fault_env(fault_upstream[0], '["status:500"]'),
        "GATEWAY_PROVIDERS__FAULT__MAX_RETRIES": "0",
        "GATEWAY_BREAKER_THRESHOLD": "1",
        "GATEWAY_BREAKER_COOLDOWN": "300",
    }
    with two_workers(tmp_path, env) as server:
        url = server.base_url
        body = {"model": "fault/status:500", "messages": [{"role": "user", "content": "x"}]}
        with httpx.Client(timeout=10) as client:  # one connection: one worker's breaker
            assert client.post(f"{url}/v1/chat/completions", json=body).status_code == 502

        def breaker() -> float:
            return value(scrape(url), "llm_gateway_breaker_state", deployment="fault/status:500")

        # the opened worker publishes its state within its publish period (1 s)
        for _ in range(100):
            if breaker() == 2:
                break
            time.sleep(0.1)
        assert [breaker() for _ in range(8)] == [2] * 8  # the worst worker's, from any worker


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


def test_a_scrape_merges_other_workers_snapshots(tmp_path: Path) -> None:
    """In one process, three "workers" sharing a directory: this one, a live one (the test's
    parent pid) and a dead one. Counters and histograms add up, the dead worker's gauges are
    dropped, the breaker is the worst live state, and the text is prometheus_client's."""
    me, live, dead = GatewayMetrics(), GatewayMetrics(), GatewayMetrics()
    for metrics, requests in ((me, 1), (live, 2), (dead, 4)):
        for _ in range(requests):
            metrics.requests.inc(("chat", "m", "p", "2xx", ""))
            metrics.duration.observe(("chat", "p", "m", ""), 0.5)
        metrics.inflight.set(("chat",), requests)
    me.breaker.set(("d/m", "d"), 0)
    live.breaker.set(("d/m", "d"), 1)
    dead.breaker.set(("d/m", "d"), 2)
    live.tokens.inc(("chat", "p", "m", "input"), 7)  # a series only another worker has
    WorkerShare(live, str(tmp_path), pid=os.getppid()).publish()
    WorkerShare(dead, str(tmp_path), pid=dead_pid()).publish()
    share = WorkerShare(me, str(tmp_path))
    samples = parse(exposition(me.families, share.merged(share.publish())).decode())
    assert value(samples, "llm_gateway_requests_total") == 7
    assert value(samples, "gen_ai_server_request_duration_seconds_count") == 7
    assert value(samples, "gen_ai_server_request_duration_seconds_sum") == 3.5
    assert value(samples, "gen_ai_server_request_duration_seconds_bucket", le="0.32") == 0
    assert value(samples, "gen_ai_server_request_duration_seconds_bucket", le="0.64") == 7
    assert value(samples, "llm_gateway_tokens_total", gen_ai_token_type="input") == 7
    assert value(samples, "llm_gateway_inflight_requests") == 3  # 1 + 2; not the dead one's 4
    assert value(samples, "llm_gateway_breaker_state") == 1  # the worst of the live ones
    assert list(tmp_path.glob(f"worker_{os.getpid()}_*.json"))  # this worker published too
    assert not list(tmp_path.glob(".worker_*"))  # no temporary file left behind


def test_a_pid_given_again_neither_erases_a_dead_workers_counts_nor_revives_its_gauges(
    tmp_path: Path,
) -> None:
    """The kernel reuses pids: a dead worker's snapshot under this process's pid (a start time
    that is not ours) keeps its counts and loses its gauges, and this worker's own snapshot goes
    to a file of its own; so does one under a live pid whose process started at another time."""
    me, dead_here, dead_there = GatewayMetrics(), GatewayMetrics(), GatewayMetrics()
    for metrics, requests in ((me, 1), (dead_here, 2), (dead_there, 4)):
        metrics.requests.inc(("chat", "m", "p", "2xx", ""), requests)
        metrics.inflight.set(("chat",), requests)
    for pid, metrics in ((os.getpid(), dead_here), (os.getppid(), dead_there)):
        share = WorkerShare(metrics, str(tmp_path), pid=pid)
        assert share.started is not None  # Linux: /proc says when the process started
        share.started -= 1  # as if an earlier process with the same pid had written it
        share.name = f"worker_{pid}_{share.started}"
        share.path = str(tmp_path / f"{share.name}.json")
        share.publish()
    share = WorkerShare(me, str(tmp_path))
    merged = share.merged(share.publish())
    assert merged["llm_gateway_requests"] == {("chat", "m", "p", "2xx", ""): 7}
    assert merged["llm_gateway_inflight_requests"] == {("chat",): 1}  # only this live worker's
    assert len(list(tmp_path.glob(f"worker_{os.getpid()}_*.json"))) == 2  # nothing overwritten


def test_a_stopping_worker_withdraws_its_gauges_but_not_its_counts(tmp_path: Path) -> None:
    me, other = GatewayMetrics(), GatewayMetrics()
    other.requests.inc(("chat", "m", "p", "2xx", ""), 3)
    other.inflight.set(("chat",), 5)
    WorkerShare(other, str(tmp_path), pid=os.getppid()).publish(final=True)
    share = WorkerShare(me, str(tmp_path))
    merged = share.merged(me.snapshot())
    assert merged["llm_gateway_requests"] == {("chat", "m", "p", "2xx", ""): 3}
    assert merged["llm_gateway_inflight_requests"] == {}


def test_an_unreadable_snapshot_is_skipped_not_fatal(tmp_path: Path) -> None:
    (tmp_path / f"worker_{os.getppid()}.json").write_text("{not json")
    me = GatewayMetrics()
    me.requests.inc(("chat", "m", "p", "2xx", ""))
    share = WorkerShare(me, str(tmp_path))
    assert share.merged(me.snapshot())["llm_gateway_requests"] == {
        ("chat", "m", "p", "2xx", ""): 1.0
    }


def snapshot_value(directory: Path, pid: int, family: str) -> float:
    """The sum of one family's series in worker ``pid``'s published snapshot (0 if none yet)."""
    paths = list(directory.glob(f"worker_{pid}_*.json"))
    if not paths:
        return 0.0
    series = json.loads(paths[0].read_text())["series"].get(family, [])
    return float(sum(v for _, v in series))


def wait_for_stream(directory: Path) -> int:
    """The worker whose published snapshot shows one stream in flight (bounded: 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for path in directory.glob("worker_*.json"):
            pid = int(path.stem.split("_")[1])  # worker_<pid>_<start time>
            if snapshot_value(directory, pid, "llm_gateway_inflight_streams") == 1:
                return pid
        time.sleep(0.05)
    raise AssertionError("no worker published the stream in flight")


def test_a_killed_workers_counts_stay_and_its_gauges_go(
    tmp_path: Path, fault_upstream: tuple[str, FaultUpstream], upstream: FaultUpstream
) -> None:
    """SIGKILL a worker in the middle of a stream: its requests stay counted (its last
    snapshot), its in-flight gauges vanish from every scrape (its pid is dead)."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        **fault_env(fault_upstream[0], '["ok", "stall:2"]'),
    }
    with two_workers(tmp_path, env) as server:
        url = server.base_url
        question = {"messages": [{"role": "user", "content": "a b c"}]}
        stream = {**question, "model": "fault/stall:2", "stream": True}
        sent = 0
        try:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=stream, timeout=10) as r:
                lines = r.iter_lines()  # kept: a collected iterator would close the stream
                assert next(lines).startswith("data: ")
                victim = wait_for_stream(directory)
                # requests on fresh connections until the victim has served some, all published
                counts: dict[int, float] = {}
                while sent < MAX_REQUESTS and counts.get(victim, 0) == 0:
                    for _ in range(5):
                        with httpx.Client(timeout=10) as client:
                            body = {**question, "model": "fault/ok"}
                            response = client.post(f"{url}/v1/chat/completions", json=body)
                            assert response.status_code == 200
                        sent += 1
                    counts = wait_for_files(directory, sent)
                assert counts.get(victim, 0) > 0, counts
                during = parse(httpx.get(f"{url}/metrics", timeout=10).text)
                assert value(during, "llm_gateway_inflight_streams") == 1
                os.kill(victim, signal.SIGKILL)
        except httpx.HTTPError:
            pass  # the stream's worker is gone: its connection breaks
        scrape_until(url, "llm_gateway_inflight_streams", 0)
        for _ in range(8):  # fresh connections: whichever worker answers
            samples = scrape(url)
            assert value(samples, "llm_gateway_requests_total", surface="chat") == sent
            assert value(samples, "llm_gateway_inflight_streams") == 0
            assert value(samples, "llm_gateway_inflight_requests") == 0
        server.terminate(signal.SIGTERM)
        server.wait(20)
    assert "Traceback" not in server.output()
