"""What virtual keys cost: non-stream requests/s of a gateway with a static key (no admin key:
no tenancy, no ledger) against a gateway with a virtual key (RPM, TPM and a budget on, never
reached) and the SQLite ledger.

    .venv/bin/python bench/tenancy_cost.py [--rounds 5] [--duration 4] [-c 32] [--redis] [--no-pin]

The gateways run side by side in front of the bench's mock upstream and are loaded one at a
time, the arms interleaved round by round, their order turned every round so that each runs
first, last (and in the middle) equally often and a noisy machine disturbs them alike; the
ratios are taken per round. ``--redis`` adds an arm on a third gateway that shares its
counters through a ``redis-server`` the script starts (Debian's; tests/setup-services.sh
installs it). Prints one JSON object: per-round figures, the median ratio of each arm to the
static one, and a 95 % bootstrap interval of each median (single rounds on a shared host move
by 0.7-1.7x, so a median of a dozen rounds is good to a few hundredths only).

As in ``run.py``, each gateway runs on the target CPU (0) and the mock, the load generator
and Redis on the rig's (1), so that a gateway's threads (the ledger's SQLite writer) are
charged to its own CPU rather than slowing the load generator; ``--no-pin`` lets the
scheduler place everything (the figure then also depends on how the rig shares its CPU).

``--tree NAME=PATH[:VAR=VALUE...]`` (repeatable) adds a virtual-key arm whose gateway runs the
code of another source tree (a ``git worktree`` of a change, say) with this venv's packages,
and extra environment variables: a change is then measured against this tree's ``virtual`` arm
in the same rounds, as ``cpu_vs_virtual`` (this tree's CPU a request over the other's, per
round: above 1, the change is cheaper). The same path as this repository gives an A/A control:
how far two processes of the same code drift apart on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procstats import idle_facts
from targets import (
    API_KEY,
    BENCH,
    REPO,
    Proc,
    base_env,
    free_port,
    log,
    mock_env,
    mock_proc,
    teams_env,
    virtual_key,
)


def gateway(
    name: str, port: int, mock_port: int, workdir: Path, *, teams: bool, redis_url: str | None
) -> Proc:
    env_file = workdir / f"{name}.env"
    lines = [
        *mock_env(mock_port),
        f"GATEWAY_API_KEYS={json.dumps([API_KEY])}",
        "GATEWAY_ACCESS_LOG=false",
    ]
    if teams:
        lines += teams_env(workdir / (name + ".db"))
    if redis_url:
        lines.append(f"GATEWAY_REDIS_URL={redis_url}")
    env_file.write_text("\n".join(lines) + "\n")
    exe = REPO / ".venv" / "bin" / "llm-gateway"
    cmd = [str(exe), "--no-ui", "--port", str(port), "--env-file", str(env_file)]
    return Proc(name, cmd, port, "/health")


def parse_tree(spec: str) -> tuple[str, Path, dict[str, str]]:
    """``NAME=PATH[:VAR=VALUE...]``: an arm's name, its source tree and its extra environment."""
    name, sep, rest = spec.partition("=")
    path, *assignments = rest.split(":")
    if not sep or not name or not path or name in ("static", "virtual", "virtual+redis"):
        raise SystemExit(f"--tree {spec!r}: want NAME=PATH[:VAR=VALUE...], NAME not a built-in arm")
    extra = {}
    for assignment in assignments:
        var, sep, value = assignment.partition("=")
        if not sep or not var:
            raise SystemExit(f"--tree {spec!r}: {assignment!r} is not VAR=VALUE")
        extra[var] = value
    tree = Path(path).resolve()
    # The arm must run that tree's code, not this venv's install (-P: not the current folder's).
    probe = subprocess.run(
        [str(REPO / ".venv/bin/python"), "-P", "-c", "import gateway; print(gateway.__file__)"],
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=False,
    )
    if not probe.stdout.strip().startswith(str(tree) + "/"):
        raise SystemExit(f"--tree {spec!r}: no gateway package there ({probe.stderr.strip()})")
    return name, tree, extra


def thread_ticks(pid: int) -> dict[int, int]:
    """CPU ticks (user + system) of each thread of ``pid``."""
    ticks: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            ticks[int(task.name)] = int(fields[11]) + int(fields[12])
    return ticks


def load(a: argparse.Namespace, port: int, key: str, pid: int) -> dict[str, Any]:
    """One arm's load; ``threads`` is the share of the gateway's CPU time spent off its event
    loop's thread (the SQLite threads), over the whole run (warm-up included)."""
    before = thread_ticks(pid)
    argv = ["taskset", "-c", a.rig_cpu] if a.pin else []
    argv += [sys.executable, str(BENCH / "loadgen.py"), "--url", f"http://127.0.0.1:{port}"]
    argv += ["--cpu-pid", str(pid)]
    argv += ["--model", "mock/mock", "-c", str(a.concurrency), "-n", "1000000"]
    argv += ["-d", str(a.duration), "--grace", "5", "--api-key", key, "--warmup", "2"]
    argv += ["--warmup-duration", "2"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=a.duration + 60, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"loadgen failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    out: dict[str, Any] = json.loads(r.stdout)
    after = thread_ticks(pid)
    spent = {t: n - before.get(t, 0) for t, n in after.items()}
    total = sum(spent.values())
    out["threads"] = round((total - spent.get(pid, 0)) / total, 3) if total else 0.0
    return out


def median_interval(values: list[float], draws: int = 10_000) -> list[float]:
    """A 95 % bootstrap interval of the median of ``values`` (the rounds drawn again with
    replacement; seeded, so a result prints the same twice): how far the median could be
    from one the same machine would give with many more rounds."""
    if len(values) < 2:
        return [round(values[0], 3)] * 2 if values else []
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return [round(medians[int(draws * 0.025)], 3), round(medians[int(draws * 0.975) - 1], 3)]


def start_redis(workdir: Path, cpu: str | None) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: run tests/setup-services.sh")
    port = free_port()
    argv = ["taskset", "-c", cpu] if cpu else []
    argv += [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = subprocess.Popen(
        [*argv, "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per arm per round")
    ap.add_argument("-c", "--concurrency", type=int, default=32)
    ap.add_argument("--redis", action="store_true", help="add an arm with shared counters")
    ap.add_argument("--target-cpu", default="0", help="CPU of the gateways")
    ap.add_argument("--rig-cpu", default="1", help="CPU of the mock, load generator and Redis")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="do not use taskset")
    ap.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=PATH[:VAR=VALUE...]",
        help="add a virtual-key arm running the source tree PATH (repeatable)",
    )
    a = ap.parse_args()
    trees = [parse_tree(spec) for spec in a.tree]
    tree_names = {name for name, _, _ in trees}
    if len(tree_names) < len(trees):
        raise SystemExit("--tree: each arm needs a name of its own")
    if a.pin and len(os.sched_getaffinity(0)) < 2:
        log("fewer than 2 CPUs available: running without pinning")
        a.pin = False
    if a.pin:  # this script stays off the gateways' CPU
        os.sched_setaffinity(0, {int(a.rig_cpu.split(",")[0].split("-")[0])})
    target = a.target_cpu if a.pin else None
    rig = a.rig_cpu if a.pin else None
    work = Path(tempfile.mkdtemp(prefix="tenancy-cost-"))
    env = base_env()
    mock = mock_proc(free_port())
    procs: list[Proc] = [mock]
    redis: subprocess.Popen[bytes] | None = None
    try:
        mock.start(rig, env, work, 30)
        plain = gateway("static", free_port(), mock.port, work, teams=False, redis_url=None)
        teams = gateway("virtual", free_port(), mock.port, work, teams=True, redis_url=None)
        for proc in (plain, teams):
            procs.append(proc)
            proc.start(target, env, work, 30)
        arms: dict[str, tuple[Proc, str]] = {
            "static": (plain, API_KEY),
            "virtual": (teams, virtual_key(teams.port)),
        }
        if a.redis:
            redis, redis_url = start_redis(work, rig)
            shared = gateway("redis", free_port(), mock.port, work, teams=True, redis_url=redis_url)
            procs.append(shared)
            shared.start(target, env, work, 30)
            arms["virtual+redis"] = (shared, virtual_key(shared.port))
        for name, tree, extra in trees:
            other = gateway(name, free_port(), mock.port, work, teams=True, redis_url=None)
            procs.append(other)
            # The same command, its packages imported from ``tree`` (ahead of the install).
            other.start(target, {**env, "PYTHONPATH": str(tree), **extra}, work, 30)
            arms[name] = (other, virtual_key(other.port))
        rounds: list[dict[str, dict[str, float]]] = []
        for i in range(a.rounds):
            row: dict[str, dict[str, float]] = {}
            # The order turns every round, so that each arm runs in each place equally often
            # (with three arms, reversing alone would keep one always in the middle): on this
            # kind of machine the second of two runs in a row is often the slower one.
            order = list(arms.items())
            order = order[i % len(order) :] + order[: i % len(order)]
            if (i // len(order)) % 2:
                order.reverse()
            for name, (proc, key) in order:
                result = load(a, proc.port, key, proc.pid)
                if result.get("errors"):
                    log(f"round {i}: {name}: errors {result['errors']}")
                row[name] = {
                    "rps": result["rps"],
                    "cpu_ms_per_req": result["cpu_ms_per_req"][0],
                    "threads": result["threads"],
                }
            row = {name: row[name] for name in arms}  # reported in the arms' order
            log(
                f"round {i}: "
                + ", ".join(
                    f"{k} {v['rps']} req/s {v['cpu_ms_per_req']} CPU-ms/req "
                    f"({v['threads']:.0%} off the loop)"
                    for k, v in row.items()
                )
            )
            rounds.append(row)
        # Requests/s on a shared, noisy machine move with its load; the gateway's own CPU time
        # per request does much less: static / virtual CPU is the share of the static
        # throughput a CPU-bound gateway keeps.
        ratios: dict[str, dict[str, float]] = {}
        intervals: dict[str, dict[str, list[float]]] = {}
        for name in arms:
            if name == "static":
                continue
            per_round = {
                "rps": [r[name]["rps"] / r["static"]["rps"] for r in rounds],
                "cpu": [r["static"]["cpu_ms_per_req"] / r[name]["cpu_ms_per_req"] for r in rounds],
            }
            if name in tree_names:
                per_round["cpu_vs_virtual"] = [
                    r["virtual"]["cpu_ms_per_req"] / r[name]["cpu_ms_per_req"] for r in rounds
                ]
            ratios[name] = {k: round(statistics.median(v), 3) for k, v in per_round.items()}
            intervals[name] = {k: median_interval(v) for k, v in per_round.items()}
        out = {
            "pinned": a.pin,
            "idle": idle_facts(),
            "rounds": rounds,
            "median_ratio_to_static": ratios,
            "median_ratio_95pct_interval": intervals,
        }
        print(json.dumps(out, indent=2))
    finally:
        for proc in reversed(procs):
            proc.stop()
        if redis is not None:
            redis.terminate()
            redis.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
