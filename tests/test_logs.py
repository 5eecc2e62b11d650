"""GATEWAY_LOG_FORMAT=json: every line a process writes is one JSON object, and a request's
lines carry its fields — never a key."""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.logs import TEXT_FORMAT, JsonFormatter, TextFormatter
from tests.conftest import fault_provider, post_chat
from tests.support.clients import sdk
from tests.support.fault_upstream import FaultUpstream
from tests.support.servers import GATEWAY, free_port, spawn

CLIENT_KEY = "client-key-for-json-logs-0123"
UPSTREAM_KEY = "sk-upstream-canary-1234567890"  # fault_provider's


@pytest.mark.parametrize("workers", [1, 2])
def test_json_logs_are_one_object_per_line_with_the_requests_fields(
    fault_upstream: tuple[str, FaultUpstream], tmp_path: Path, workers: int
) -> None:
    provider = fault_provider(fault_upstream[0], models=["ok", "status:500"], max_retries=1)
    env = {
        "GATEWAY_LOG_FORMAT": "json",
        "GATEWAY_API_KEYS": json.dumps([CLIENT_KEY]),
        **{f"GATEWAY_PROVIDERS__FAULT__{k.upper()}": _env(v) for k, v in provider.items()},
    }
    port = free_port()
    with spawn(
        [GATEWAY, "--no-ui", "--port", str(port), "--workers", str(workers)],
        env=env,
        ready_url=f"http://127.0.0.1:{port}/health",
        cwd=tmp_path,
        timeout=40,
    ) as server:
        client = sdk(server.base_url, CLIENT_KEY)
        reply = client.chat.completions.with_raw_response.create(
            model="fault/ok", messages=[{"role": "user", "content": "alpha beta"}]
        )
        ok_id = reply.headers["x-request-id"]
        failed = post_chat(
            server.base_url,
            {"model": "fault/status:500", "messages": [{"role": "user", "content": "x"}]},
            headers={"authorization": f"Bearer {CLIENT_KEY}", "x-request-id": "trace-500"},
        )
        assert failed.status_code == 502
        server.terminate(signal.SIGTERM)
        server.wait(20)
        output = server.output()

    lines = [line for line in output.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert CLIENT_KEY not in output and UPSTREAM_KEY[:12] not in output

    ok = _one(records, lambda r: r.get("request_id") == ok_id and r["logger"] == "gateway.access")
    assert ok["status"] == 200 and ok["key_id"] == "static-0"
    assert (ok["surface"], ok["model"], ok["deployment"], ok["provider"]) == (
        "chat",
        "fault/ok",
        "fault/ok",
        "fault",
    )
    assert ok["attempts"] == 1 and ok["ttft_ms"] > 0 and ok["duration_ms"] >= ok["ttft_ms"]
    assert (ok["input_tokens"], ok["output_tokens"]) == (2, 2) and "error" not in ok

    bad = _one(
        records, lambda r: r.get("request_id") == "trace-500" and r["logger"] == "gateway.access"
    )
    assert (bad["status"], bad["attempts"], bad["error"]) == (502, 2, "upstream_error")
    assert "HTTP 500" in bad["cause"]
    warning = _one(
        records, lambda r: r.get("request_id") == "trace-500" and r["level"] == "warning"
    )
    assert warning["logger"] == "gateway" and warning["error"] == "upstream_error"
    retries = [r for r in records if "retrying" in r["message"]]
    assert retries and all("trace-500" in r["message"] for r in retries)


def _one(records: list[dict[str, Any]], match: Any) -> dict[str, Any]:
    found = [r for r in records if match(r)]
    assert len(found) == 1, found
    return found[0]


def _env(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def test_the_formatters_write_the_time_as_logging_does_each_second_once() -> None:
    """The seconds are formatted once a second: the lines read as logging's own formatter (text)
    and the ISO form (JSON) write them, across second boundaries and out of order."""
    text, json_lines, reference = TextFormatter(), JsonFormatter(), logging.Formatter(TEXT_FORMAT)
    base = 1_780_000_000.0
    for offset in (0.0, 0.004, 0.999, 1.0, 1.5, 0.25, 86_400.123, 3_600.9995, 2.0):
        record = logging.LogRecord("gateway.access", logging.INFO, "", 0, "a line", None, None)
        record.created = base + offset
        record.msecs = (record.created - int(record.created)) * 1000
        assert text.format(record) == reference.format(record)
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        assert json.loads(json_lines.format(record))["time"] == f"{iso}.{int(record.msecs):03d}Z"
