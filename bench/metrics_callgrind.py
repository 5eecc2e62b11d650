"""What metrics cost per request, in instructions: immune to a noisy machine, unlike requests/s.

    .venv/bin/python bench/metrics_callgrind.py [--requests 200] [--mode ns|stream]

For each configuration (``off``: GATEWAY_METRICS=false; ``metrics``: on) it starts the bench's
mock upstream and the gateway under ``valgrind --tool=callgrind`` with instrumentation off,
warms the gateway up with 20 requests, switches instrumentation on (``callgrind_control -i on``)
only around ``--requests`` sequential requests on one keep-alive connection, and divides the
instructions counted by the number of requests. Needs valgrind (``apt-get install valgrind``).
Issue 12's bar: metrics add at most ~5 % (never 10 %) to a non-streamed request.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def send(port: int, n: int, mode: str) -> None:
    body = {"model": "mock/mock", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": "Bearer k"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120, headers=headers) as c:
        for _ in range(n):
            if mode == "ns":
                assert c.post("/v1/chat/completions", json=body).status_code == 200
                continue
            stream = {**body, "model": "mock/mock-50", "stream": True}
            with c.stream("POST", "/v1/chat/completions", json=stream) as s:
                assert s.status_code == 200
                for _ in s.iter_bytes():
                    pass


def wait_ready(port: int, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the gateway exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the gateway did not start")


def measure(metrics: bool, requests: int, mode: str, tmp: Path) -> float:
    """Instructions per request of one fresh gateway."""
    mock_port, port = free_port(), free_port()
    mock = subprocess.Popen(
        [sys.executable, str(BENCH / "mock_upstream.py"), "--port", str(mock_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env_file = tmp / f"gateway-{metrics}.env"
    env_file.write_text(
        "GATEWAY_PROVIDERS__MOCK__TYPE=openai\n"
        f"GATEWAY_PROVIDERS__MOCK__BASE_URL=http://127.0.0.1:{mock_port}/v1\n"
        "GATEWAY_PROVIDERS__MOCK__API_KEY=sk-bench\n"
        'GATEWAY_PROVIDERS__MOCK__MODELS=["mock", "mock-50"]\n'
        'GATEWAY_API_KEYS=["k"]\n'
        f"GATEWAY_METRICS={'true' if metrics else 'false'}\n"
    )
    out = tmp / f"callgrind-{metrics}.out"
    gateway = subprocess.Popen(
        [
            *("valgrind", "--tool=callgrind", "--instr-atstart=no"),
            f"--callgrind-out-file={out}",
            *(sys.executable, str(VENV_BIN / "llm-gateway"), "--no-ui"),
            *("--host", "127.0.0.1", "--port", str(port), "--env-file", str(env_file)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp,
    )
    try:
        wait_ready(port, gateway, 300)
        send(port, 20, mode)  # warm: imports, caches, the first connection
        subprocess.run(
            ["callgrind_control", "-i", "on", str(gateway.pid)], check=True, capture_output=True
        )
        send(port, requests, mode)
        subprocess.run(
            ["callgrind_control", "-d", str(gateway.pid)], check=True, capture_output=True
        )
    finally:
        gateway.terminate()
        mock.terminate()
        gateway.wait(120)
        mock.wait(30)
    dumps = sorted(tmp.glob(f"callgrind-{metrics}.out.*"))
    text = dumps[0].read_text(errors="replace") if dumps else ""
    found = re.search(r"^summary: (\d+)", text, re.MULTILINE)
    if found is None:
        raise SystemExit(f"no callgrind summary in {dumps}")
    return int(found.group(1)) / requests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--mode", choices=["ns", "stream"], default="ns")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="metrics-callgrind-") as name:
        tmp = Path(name)
        off = measure(False, a.requests, a.mode, tmp)
        on = measure(True, a.requests, a.mode, tmp)
    print(f"{a.mode}: off {off / 1000:.0f} K instructions/request, metrics {on / 1000:.0f} K")
    print(f"metrics add {(on - off) / 1000:.1f} K ({100 * (on - off) / off:+.1f} %)")


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
