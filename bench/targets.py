"""Start, probe and stop the bench's processes: the mock, the gateway and LiteLLM."""

from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_SPEC = "1.106"
# A master key that LiteLLM accepts (it refuses to start without one); sent to every target.
API_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
MODELS = ["mock", "mock-50", "mock-50-paced-20"]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(port: int, path: str, timeout: float = 1.0) -> int:
    """Status of GET http://127.0.0.1:port/path, or 0 when it cannot connect."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


@dataclass
class Proc:
    """A process the bench spawned (in its own session, so its tree can be stopped)."""

    name: str
    cmd: list[str]
    port: int
    ready_path: str
    popen: subprocess.Popen[bytes] | None = None
    startup_s: float | None = None
    cpus: str | None = None
    logfile: Path | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self, cpus: str | None, env: dict[str, str], cwd: Path, timeout: float) -> None:
        """Spawn pinned to ``cpus`` and wait until ``ready_path`` answers 200."""
        self.cpus = cpus
        self.logfile = cwd / f"{self.name}.log"
        self._log = open(self.logfile, "wb")  # noqa: SIM115 - closed in stop()
        argv = (["taskset", "-c", cpus] if cpus else []) + self.cmd
        t0 = time.perf_counter()
        self.popen = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode}; see {self.logfile}"
                )
            if http_get(self.port, self.ready_path, timeout=0.5) == 200:
                self.startup_s = time.perf_counter() - t0
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s; see {self.logfile}")

    def stop(self) -> None:
        """SIGTERM the process group we created, SIGKILL it after 10 s."""
        p = self.popen
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "LITELLM_"))}
    for k in ("DATABASE_URL", "DIRECT_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(k, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def mock_env(mock_port: int, models: list[str] = MODELS) -> list[str]:
    """Env-file lines of a gateway whose one provider, ``mock``, is the bench's mock upstream."""
    return [
        "GATEWAY_PROVIDERS__MOCK__TYPE=openai",
        f"GATEWAY_PROVIDERS__MOCK__BASE_URL=http://127.0.0.1:{mock_port}/v1",
        "GATEWAY_PROVIDERS__MOCK__API_KEY=sk-bench",
        f"GATEWAY_PROVIDERS__MOCK__MODELS={json.dumps(models)}",
    ]


ADMIN_KEY = "bench-admin-key-0123456789"


def teams_env(database: Path) -> list[str]:
    """Env-file lines of a gateway with virtual keys: an admin key, the SQLite ledger, a price."""
    return [
        f"GATEWAY_ADMIN_KEY={ADMIN_KEY}",
        f"GATEWAY_DATABASE_URL=sqlite:///{database}",
        'GATEWAY_PRICES={"mock/mock": {"input": 0.15, "output": 0.6}}',
    ]


def virtual_key(port: int, timeout: float = 10.0) -> str:
    """A new virtual key with every limit on (RPM, TPM, a USD budget), none reachable in a run."""
    body = {
        "name": "bench",
        "models": ["mock/*", "mock"],
        "rpm": 1_000_000_000,
        "tpm": 1_000_000_000_000,
        "budget_usd": 1_000_000,
        "budget_period": "month",
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/admin/keys",
            body=json.dumps(body),
            headers={"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"},
        )
        reply = conn.getresponse()
        data = reply.read()
    finally:
        conn.close()
    if reply.status != 201:
        raise RuntimeError(f"creating a virtual key: {reply.status} {data[:300]!r}")
    key: str = json.loads(data)["key"]
    return key


def mock_proc(port: int) -> Proc:
    cmd = [sys.executable, str(BENCH / "mock_upstream.py"), "--port", str(port)]
    return Proc("mock", cmd, port, "/health")


def gateway_proc(
    port: int, mock_port: int, workdir: Path, cmd_override: str | None, workers: int
) -> Proc | str:
    """The gateway, or the reason it is skipped."""
    env_file = workdir / "gateway.env"
    env_file.write_text("".join(line + "\n" for line in mock_env(mock_port)))
    if cmd_override:
        cmd = shlex.split(cmd_override.format(port=port, env_file=env_file, mock_port=mock_port))
    else:
        exe = REPO / ".venv" / "bin" / "llm-gateway"
        if not exe.exists():
            return f"{exe} not found (install the project: pip install -e .)"
        cmd = [str(exe), "--no-ui", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--env-file", str(env_file)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        return f"gateway command {cmd[0]!r} not found"
    name = "gateway" if workers <= 1 else f"gateway-w{workers}"
    return Proc(name, cmd, port, "/health")


def _venv_run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def ensure_litellm(spec: str = LITELLM_SPEC) -> tuple[Path, str]:
    """Create bench/.venv-litellm with ``litellm[proxy]==<spec>.*`` if missing.

    If no ``<spec>.x`` installs (e.g. a pinned dependency is missing from the
    index), the closest installable version is taken. Returns (bin dir, version).
    """
    bindir = LITELLM_VENV / "bin"
    py = bindir / "python"
    probe = [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"]
    if (bindir / "litellm").exists():
        r = _venv_run(probe, 60)
        if r.returncode == 0:
            return bindir, r.stdout.strip()
    log(f"creating {LITELLM_VENV} and installing litellm[proxy]=={spec}.* (takes a few minutes)")
    if not py.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=120)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    candidates = [f"{spec}.*", *_closest_versions(py, spec)]
    for cand in candidates[:4]:
        r = _venv_run([*pip, f"litellm[proxy]=={cand}"], 900)
        if r.returncode == 0:
            v = _venv_run(probe, 60).stdout.strip()
            log(f"installed litellm {v}")
            return bindir, v
        log(f"litellm[proxy]=={cand} did not install: {r.stderr.strip().splitlines()[-1:]}")
    raise RuntimeError("could not install litellm[proxy]")


def _closest_versions(py: Path, spec: str) -> list[str]:
    """Newest patch of the nearest other minor versions, e.g. 1.105.x / 1.107.x for 1.106."""
    r = _venv_run([str(py), "-m", "pip", "index", "versions", "litellm"], 120)
    line = next((ln for ln in r.stdout.splitlines() if "Available versions:" in ln), "")
    want = [int(x) for x in spec.split(".")[:2]]
    best: dict[tuple[int, int], tuple[int, str]] = {}
    for v in (x.strip() for x in line.split(":", 1)[-1].split(",")):
        parts = v.split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            continue
        major, minor, patch = (int(p) for p in parts)
        if major != want[0] or minor == want[1]:
            continue
        if patch > best.get((major, minor), (-1, ""))[0]:
            best[(major, minor)] = (patch, v)
    order = sorted(best, key=lambda mm: abs(mm[1] - want[1]))
    return [best[mm][1] for mm in order[:3]]


def litellm_proc(port: int, mock_port: int, workdir: Path, bindir: Path) -> Proc:
    lines = ["model_list:"]
    for m in MODELS:
        lines += [
            f"  - model_name: mock/{m}",
            "    litellm_params:",
            f"      model: openai/{m}",
            f"      api_base: http://127.0.0.1:{mock_port}/v1",
            "      api_key: sk-bench",
        ]
    lines += [
        "litellm_settings:",
        "  telemetry: false",
        "general_settings:",
        f"  master_key: {API_KEY}",
    ]
    (workdir / "litellm_config.yaml").write_text("\n".join(lines) + "\n")
    cmd = [str(bindir / "litellm"), "--config", str(workdir / "litellm_config.yaml")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    return Proc("litellm", cmd, port, "/health/liveliness")


def litellm_env() -> dict[str, str]:
    env = base_env()
    env.update(
        LITELLM_TELEMETRY="False",  # no usage telemetry
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # no fetch of the model price map at start
        DISABLE_ADMIN_UI="True",  # compare against the gateway without its UI
    )
    return env
