"""The bench in one command: direct-to-mock | this gateway | LiteLLM, side by side.

    .venv/bin/python bench/run.py [--quick] [--targets direct,gateway,litellm] [--out bench/results]

Starts the mock upstream and the load generator on the rig CPU (1) and each
target on the target CPU (0) with taskset, runs every scenario against every
target, and writes ``results.json`` + ``results.md`` (also printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from procstats import (
    cpu_busy_seconds,
    idle_facts,
    tree_cpu_seconds,
    tree_peak_rss_mb,
    tree_rss_mb,
)
from report import bar, markdown
from targets import (
    API_KEY,
    BENCH,
    Proc,
    base_env,
    ensure_litellm,
    free_port,
    gateway_proc,
    litellm_env,
    litellm_proc,
    log,
    mock_proc,
)


@dataclass(frozen=True)
class Scenario:
    key: str
    model: str
    stream: bool
    concurrency: int
    requests: int  # upper bound on measured requests
    duration: float  # upper bound on the time new requests are started, s


def scenarios(quick: bool) -> list[Scenario]:
    q = quick
    paced = "mock/mock-50-paced-20"
    return [
        Scenario("ns_c1", "mock/mock", False, 1, 300 if q else 5_000, 1.0 if q else 5.0),
        Scenario("ns_c64", "mock/mock", False, 64, 2_000 if q else 200_000, 1.0 if q else 5.0),
        Scenario("st50_c1", "mock/mock-50", True, 1, 100 if q else 3_000, 1.0 if q else 5.0),
        Scenario("st50_c64", "mock/mock-50", True, 64, 1_000 if q else 100_000, 1.0 if q else 5.0),
        Scenario("paced_c64", paced, True, 64, 10_000, 1.5 if q else 4.0),
        Scenario("paced_c256", paced, True, 256, 20_000, 1.5 if q else 4.0),
        Scenario("paced_c512", paced, True, 512, 40_000, 1.5 if q else 4.0),
    ]


def run_loadgen(
    a: argparse.Namespace, port: int, s: Scenario, cpu_pids: list[int]
) -> dict[str, Any]:
    grace = 3.0 if a.quick else 10.0
    warm_s = 1.5 if a.quick else 5.0
    argv = ["taskset", "-c", a.rig_cpu] if a.pin else []
    argv += [sys.executable, str(BENCH / "loadgen.py"), "--url", f"http://127.0.0.1:{port}"]
    argv += ["--model", s.model, "-c", str(s.concurrency), "-n", str(s.requests)]
    argv += ["-d", str(s.duration), "--grace", str(grace), "--api-key", API_KEY]
    argv += ["--warmup", str(max(1, 32 // s.concurrency)), "--warmup-duration", str(warm_s)]
    argv += ["--stream"] if s.stream else []
    for pid in cpu_pids:
        argv += ["--cpu-pid", str(pid)]
    limit = s.duration + grace + warm_s + 60
    r = subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"loadgen failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    out: dict[str, Any] = json.loads(r.stdout)
    return out


class Noise:
    """CPU used on the target and rig CPUs by anything but the bench's own processes.

    Other work on the machine (or kernel time not charged to a process) shows up
    here; more than a few % on the target CPU means the numbers are disturbed.
    """

    def __init__(self, a: argparse.Namespace, proc: Proc, mock: Proc) -> None:
        self.pin, self.proc, self.mock = a.pin, proc, mock
        self.cpus = {"target": f"cpu{a.target_cpu}", "rig": f"cpu{a.rig_cpu}"}
        self.result: dict[str, float | None] = {}

    def _ours(self) -> tuple[float, float]:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the finished loadgen
        rig = kids.ru_utime + kids.ru_stime + time.process_time()
        rig += tree_cpu_seconds(self.mock.pid)
        target = 0.0 if self.proc is self.mock else tree_cpu_seconds(self.proc.pid)
        return target, rig

    def __enter__(self) -> Noise:
        self.t0, self.busy0, self.ours0 = time.monotonic(), cpu_busy_seconds(), self._ours()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self.t0
        busy, ours = cpu_busy_seconds(), self._ours()
        for i, (role, cpu) in enumerate(self.cpus.items()):
            foreign_cpus = self.proc is not self.mock and self.proc.cpus != self.cpus["target"][3:]
            if not self.pin or foreign_cpus or cpu not in busy or wall <= 0:
                self.result[role] = None
                continue
            other = (busy[cpu] - self.busy0[cpu]) - (ours[i] - self.ours0[i])
            self.result[role] = round(max(0.0, 100.0 * other / wall), 1)


def wait_idle(pid: int, limit: float = 20.0) -> None:
    """Let the target finish leftovers of the last scenario (CPU < 5 %), at most ``limit`` s."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        c0 = tree_cpu_seconds(pid)
        time.sleep(0.3)
        if tree_cpu_seconds(pid) - c0 < 0.015:
            return


def measure(a: argparse.Namespace, name: str, proc: Proc, mock: Proc) -> dict[str, Any]:
    time.sleep(1.0)  # settle before the idle RSS
    res: dict[str, Any] = {
        "cmd": proc.cmd,
        "pid": proc.pid,
        "startup_s": round(proc.startup_s or 0.0, 3),
        "rss_idle_mb": round(tree_rss_mb(proc.pid), 1),
        "scenarios": {},
    }
    cpu_pids = [proc.pid] if proc is mock else [proc.pid, mock.pid]
    for s in scenarios(a.quick):
        log(f"{name}: {s.key} (c={s.concurrency}, {s.model}, stream={s.stream})")
        try:
            with Noise(a, proc, mock) as noise:
                r = run_loadgen(a, proc.port, s, cpu_pids)
            r["unattributed_cpu_pct"] = noise.result
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            log(f"{name}: {s.key} failed: {exc}")
            res["scenarios"][s.key] = {"failed": str(exc)[-500:]}
            continue
        r["scenario"] = asdict(s)
        res["scenarios"][s.key] = r
        log(
            f"{name}: {s.key}: {r['rps']} req/s, p50 {r['latency_ms']['p50']} ms, "
            f"TTFT p99 {r['ttft_ms']['p99']} ms, {r['chunks_per_s']} chunks/s, "
            f"errors {r['errors']}, loadgen CPU {r['loadgen_cpu_pct']}%"
        )
        wait_idle(proc.pid)
        if proc.popen is not None and proc.popen.poll() is not None:
            log(f"{name} died (exit {proc.popen.returncode}); see {proc.logfile}")
            break
    res["rss_after_mb"] = round(tree_rss_mb(proc.pid), 1)
    res["rss_peak_mb"] = round(tree_peak_rss_mb(proc.pid), 1)
    return res


def run_target(
    a: argparse.Namespace, name: str, mock: Proc, tmp: Path, meta: dict[str, Any]
) -> dict[str, Any]:
    if name == "direct":
        return measure(a, name, mock, mock)
    port = free_port()
    cpus = a.target_cpu if a.pin else None
    if name.startswith("gateway"):
        workers = int(name.split("-w", 1)[1]) if "-w" in name else 1
        p = gateway_proc(port, mock.port, tmp, a.gateway_cmd, workers)
        if isinstance(p, str):
            log(f"{name} skipped: {p}")
            return {"skipped": p}
        env, timeout = base_env(), 30.0
        if workers > 1:
            cpus = a.workers_cpus if a.pin else None
    elif name == "litellm":
        bindir, version = ensure_litellm(a.litellm_version)
        meta["litellm_version"] = version
        p, env, timeout = litellm_proc(port, mock.port, tmp, bindir), litellm_env(), 90.0
    else:
        return {"skipped": f"unknown target {name!r}"}
    log(f"starting {name}: {' '.join(p.cmd)}")
    try:
        p.start(cpus, env, tmp, timeout)
        log(f"{name} ready after {p.startup_s:.2f}s (pid {p.pid})")
        return measure(a, name, p, mock)
    except RuntimeError as exc:
        log(f"{name} skipped: {exc}")
        return {"skipped": str(exc)}
    finally:
        p.stop()


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    ap.add_argument("--targets", default="direct,gateway,litellm")
    ap.add_argument("--out", default=str(BENCH / "results"))
    ap.add_argument(
        "--gateway-cmd",
        help="override the gateway command; {port}, {env_file}, {mock_port} are substituted",
    )
    ap.add_argument("--gateway-workers", type=int, default=1, help="also run gateway-wN")
    ap.add_argument("--workers-cpus", default="0-1", help="CPUs for gateway-wN")
    ap.add_argument("--litellm-version", default="1.106", help="major.minor to install")
    ap.add_argument("--target-cpu", default="0")
    ap.add_argument("--rig-cpu", default="1", help="CPU of the mock and the load generator")
    ap.add_argument(
        "--wait-quiet", type=float, default=0.0, help="wait up to S s for idle CPUs first"
    )
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="do not use taskset")
    return ap.parse_args()


def main() -> None:
    a = parse_args()
    t_start = time.monotonic()
    if a.pin and len(os.sched_getaffinity(0)) < 2:
        log("fewer than 2 CPUs available: running without pinning")
        a.pin = False
    if a.pin:  # the orchestrator itself stays off the target CPU
        os.sched_setaffinity(0, {int(a.rig_cpu.split(",")[0].split("-")[0])})
    names = [t.strip() for t in a.targets.split(",") if t.strip()]
    if a.gateway_workers > 1 and "gateway" in names:
        names.append(f"gateway-w{a.gateway_workers}")
    out = Path(a.out).resolve()  # targets run elsewhere: a relative path would not reach them
    tmp = out / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "quick": a.quick,
        "targets": names,
        "target_cpus": a.target_cpu if a.pin else "any",
        "rig_cpus": a.rig_cpu if a.pin else "any",
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "idle": idle_facts(),
        "scenarios": [asdict(s) for s in scenarios(a.quick)],
    }
    quiet_until = time.monotonic() + a.wait_quiet
    while True:
        busy0 = cpu_busy_seconds()
        time.sleep(1.0)
        busy1 = cpu_busy_seconds()
        meta["busy_before_pct"] = {k: round(100 * (busy1[k] - v), 1) for k, v in busy0.items()}
        if max(v for k, v in meta["busy_before_pct"].items() if k != "cpu") <= 15:
            break
        if time.monotonic() >= quiet_until:
            log(f"the machine is busy before the run ({meta['busy_before_pct']}): expect noise")
            break
    res: dict[str, Any] = {"meta": meta, "targets": {}}
    mock = mock_proc(free_port())
    try:
        mock.start(a.rig_cpu if a.pin else None, base_env(), tmp, 15.0)
        log(f"mock ready on port {mock.port} after {mock.startup_s:.2f}s")
        for name in names:
            res["targets"][name] = run_target(a, name, mock, tmp, meta)
    finally:
        mock.stop()
    meta["runtime_s"] = round(time.monotonic() - t_start, 1)
    res["bar"] = bar(res)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    md = markdown(res)
    (out / "results.md").write_text(md)
    print(md)
    log(f"wrote {out / 'results.json'} and {out / 'results.md'} in {meta['runtime_s']:.0f}s")


if __name__ == "__main__":
    main()
