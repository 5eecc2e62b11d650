"""The rig of bench/reliability.py: the real gateway as a subprocess, the fault upstream in a
thread of the bench process (so its disconnect timestamps are directly readable), /proc reads.

Everything listens on 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # for tests.support when run as ``python bench/reliability.py``
    sys.path.insert(0, str(ROOT))

from tests.support.fault_upstream import FaultUpstream  # noqa: E402
from tests.support.servers import free_port, serve_in_thread  # noqa: E402

__all__ = ["FaultUpstream", "Gateway", "echo_env", "fault_upstream", "gateway"]
__all__ += ["percentile", "provider_env", "slope"]

GATEWAY_EXE = ROOT / ".venv" / "bin" / "llm-gateway"


@contextlib.contextmanager
def fault_upstream() -> Iterator[tuple[str, FaultUpstream]]:
    """The project's fault-injecting upstream in a thread: ``(base_url + "/v1", app)``."""
    app = FaultUpstream()
    with serve_in_thread(app, timeout_graceful_shutdown=2) as url:
        yield f"{url}/v1", app


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kb(self) -> int:
        """VmRSS of the gateway process (one process: no --workers), in KB."""
        with open(f"/proc/{self.pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def sigterm(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None


def provider_env(name: str, base_url: str, models: list[str]) -> dict[str, str]:
    p = f"GATEWAY_PROVIDERS__{name.upper()}__"
    return {
        p + "TYPE": "openai",
        p + "BASE_URL": base_url,
        p + "API_KEY": "sk-bench-upstream-key",
        p + "MODELS": json.dumps(models),
    }


def echo_env(name: str, chunk_delay_ms: float) -> dict[str, str]:
    p = f"GATEWAY_PROVIDERS__{name.upper()}__"
    return {p + "TYPE": "echo", p + "CHUNK_DELAY_MS": str(chunk_delay_ms)}


@contextlib.contextmanager
def gateway(env: dict[str, str], workdir: Path, tag: str) -> Iterator[Gateway]:
    """Start ``llm-gateway --no-ui`` with ``env`` written to an env file; stop it after
    (SIGTERM, then SIGKILL of this one pid after 15 s)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env_file = workdir / f"reliability-{tag}.env"
    settings = {"GATEWAY_ACCESS_LOG": "false", "GATEWAY_DRAIN_TIMEOUT": "2", **env}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    log = workdir / f"reliability-{tag}.log"
    cmd = [str(GATEWAY_EXE), "--no-ui", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--env-file", str(env_file), "--log-level", "warning"]
    clean_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GATEWAY_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env={**clean_env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    gw = Gateway(proc, port, log)
    try:
        _wait_ready(gw, timeout=30.0)
        yield gw
    finally:
        gw.sigterm()
        if gw.wait(15.0) is None:
            proc.kill()
            proc.wait(5.0)


def _wait_ready(gw: Gateway, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{gw.port}/health"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {gw.proc.returncode}: {gw.log.read_text()}")
        with contextlib.suppress(OSError), opener.open(url, timeout=1.0) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"gateway not ready in {timeout} s: {gw.log.read_text()}")


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (no interpolation), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100.0 * len(ordered))))
    return ordered[rank - 1]


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs, or None with fewer than two points."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else None
