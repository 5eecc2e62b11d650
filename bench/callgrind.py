"""Instructions per request, counted by callgrind: the same on a busy machine as on a quiet one.

    .venv/bin/python bench/callgrind.py [--rev REV ...] [--key static|virtual] \\
        [--workload ns stream1 stream11] [--requests 200] [--env NAME=VALUE ...] [--keep DIR] \\
        [--full-batches]

Requests/s on a shared 2-core host move by ±30 % between runs of the same code; the
instructions a request costs do not. Each arm is one gateway (the working tree, or with
``--rev`` a git revision's ``gateway/`` and ``providers/`` put first on ``PYTHONPATH``) under
``valgrind --tool=callgrind`` with instrumentation off. For each workload it sends 20 requests
to warm up, then counts only around ``--requests`` sequential requests on one keep-alive
connection (``callgrind_control -i on``, then a dump), every thread included.

Workloads: ``ns`` a non-streamed chat completion; ``stream1`` and ``stream11`` streams of 1 and 11
chunks 20 ms apart (each chunk its own read, as in the paced-stream bar). From those two the
script also prints a stream's set-up and end, and each further chunk: the 256-paced-stream bar
is a wave of set-ups (see the README's Performance section). ``--key virtual`` runs with an
admin key, a virtual key with limits (never reached) and the SQLite ledger, as
``tenancy_cost.py`` does. Needs valgrind (``apt-get install valgrind``).

The ledger writes a batch every 500 ms or at 1,000 rows. Under callgrind a gateway answers a
few dozen requests in 500 ms, so its batches are small and what a batch costs once (the thread
hop, the commit, the WAL frames) is charged to a few rows; under load (``tenancy_cost.py``)
batches are full. ``--full-batches`` (``ns`` only, with ``--key virtual``) counts that case:
the interval becomes an hour (``GATEWAY_LEDGER_FLUSH_SECONDS``), so batches are written at
1,000 rows, the requests a multiple of 1,000, and each thread has its own dump: the writer's
(the thread that inserted rows) is divided by the rows it wrote, the others' by the requests.
A first batch is written before counting starts: what happens once (the writer's thread, its
connection, its statements compiled) is not charged to the rows.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from targets import (
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

from gateway.tenancy.ledger import BATCH as LEDGER_BATCH

STATIC_KEY = "k"
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Workload:
    model: str
    stream: bool


WORKLOADS = {
    "ns": Workload("mock/mock", False),
    "stream1": Workload("mock/mock-1-paced-20", True),
    "stream11": Workload("mock/mock-11-paced-20", True),
    "stream50": Workload("mock/mock-50", True),  # 50 chunks at once (metrics_callgrind.py)
}


def send(port: int, key: str, workload: Workload, n: int) -> None:
    body = {"model": workload.model, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300, headers=headers) as c:
        for _ in range(n):
            if not workload.stream:
                reply = c.post("/v1/chat/completions", json=body)
                assert reply.status_code == 200, reply.text
                continue
            with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
                assert s.status_code == 200
                for _ in s.iter_bytes():
                    pass


def tree(rev: str, tmp: Path) -> Path | None:
    """The revision's gateway/ and providers/ in a folder (None: the working tree)."""
    if rev == ".":
        return None
    folder = tmp / f"rev-{rev.replace('/', '_')}"
    if folder.exists():  # the same revision measured again (--rev A --rev . --rev A ...)
        return folder
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "gateway", "providers"],
        check=True,
        capture_output=True,
    ).stdout
    folder.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    build_extensions(rev, folder)
    return folder


def build_extensions(rev: str, folder: Path) -> None:
    """Build a revision's C extensions in place, as its install would: without them its
    gateway would measure the Python that stands in for them."""
    if not (folder / "gateway" / "tenancy" / "_counters.c").exists():
        return  # a revision from before the extension
    setup = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:setup.py"], check=True, capture_output=True
    ).stdout
    (folder / "setup.py").write_bytes(setup)
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    if not list((folder / "gateway" / "tenancy").glob("_counters*.so")):
        raise SystemExit(f"{rev}: its C extension was not built (a C compiler?)")


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


@contextlib.contextmanager
def gateway(
    name: str, rev: str, key_kind: str, env: list[str], tmp: Path, *, threads: bool = False
) -> Iterator[tuple[int, int, str, Path]]:
    """A mock and a gateway under callgrind: (port, pid, API key, callgrind output);
    ``threads``: a dump per thread."""
    mock = mock_proc(free_port())
    models = [w.model.split("/", 1)[1] for w in WORKLOADS.values()]
    lines = [*mock_env(mock.port, models), f'GATEWAY_API_KEYS=["{STATIC_KEY}"]']
    if key_kind == "virtual":
        lines += teams_env(tmp / (name + ".db"))
    env_file = tmp / f"{name}.env"
    env_file.write_text("\n".join([*lines, *env]) + "\n")
    source = tree(rev, tmp)
    out = tmp / f"{name}.callgrind"
    run_env = base_env()
    run_env.pop("PYTHONPATH", None)
    if source is not None:
        run_env["PYTHONPATH"] = str(source)
    port = free_port()
    proc = Proc(
        name,
        [
            *("valgrind", "--tool=callgrind", "--instr-atstart=no"),
            *(["--separate-threads=yes"] if threads else []),
            f"--callgrind-out-file={out}",
            *(sys.executable, str(VENV_BIN / "llm-gateway"), "--no-ui"),
            *("--host", "127.0.0.1", "--port", str(port), "--env-file", str(env_file)),
        ],
        port,
        "/health",
    )
    try:
        mock.start(None, base_env(), tmp, 30)
        proc.start(None, run_env, tmp, 300)
        key = virtual_key(port, timeout=120) if key_kind == "virtual" else STATIC_KEY
        yield port, proc.pid, key, out
    finally:
        proc.stop()
        mock.stop()


def _totals(dump: Path) -> int:
    """A dump's "totals" (the "summary" line is not per part)."""
    found = re.search(r"^totals: (\d+)", dump.read_text(errors="replace"), re.M)
    if found is None:
        raise SystemExit(f"no callgrind totals in {dump}")
    return int(found.group(1))


def ledger_rows(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database)) as db:
        return int(db.execute("SELECT COUNT(*) FROM usage_events").fetchone()[0])


def written(database: Path, since: int) -> int:
    """Rows the ledger wrote since ``since`` rows, once its writes stop (60 s at most)."""
    rows = ledger_rows(database)
    for _ in range(120):
        time.sleep(0.5)
        now = ledger_rows(database)
        if now == rows:
            break
        rows = now
    return rows - since


def measure(
    name: str,
    rev: str,
    key_kind: str,
    env: list[str],
    workloads: dict[str, int],
    tmp: Path,
    *,
    full_batches: bool = False,
) -> dict[str, float]:
    """Instructions per request of each workload (name: requests), on one gateway.

    With ``full_batches`` each thread has its dump: the ledger's writer (the thread that
    inserted rows) is counted per row it wrote, the others per request."""
    counts: dict[str, float] = {}
    database = tmp / f"{name}.db"
    with gateway(name, rev, key_kind, env, tmp, threads=full_batches) as (port, pid, key, out):
        for index, (workload, n) in enumerate(workloads.items(), start=1):
            send(port, key, WORKLOADS[workload], 20)  # warm: imports, caches, connections
            before = 0
            if full_batches:  # and the ledger: its thread, connection and statements
                send(port, key, WORKLOADS[workload], LEDGER_BATCH - 20)
                before = written(database, 0)
                if before != LEDGER_BATCH:
                    raise SystemExit(f"the ledger wrote {before} rows to warm, not a batch")
            _control("-i", "on", str(pid))
            send(port, key, WORKLOADS[workload], n)
            rows = 0
            if full_batches:
                rows = written(database, before)  # the batches started while counting
            elif key_kind == "virtual":
                time.sleep(1.2)  # the ledger's batch, written every 0.5 s, is counted too
            _control("-d", str(pid))
            _control("-i", "off", str(pid))
            if not full_batches:
                counts[workload] = _totals(Path(f"{out}.{index}")) / n
            else:
                writer = others = 0
                for dump in out.parent.glob(f"{out.name}.{index}-*"):
                    if "sqlite3BtreeInsert" in dump.read_text(errors="replace"):
                        writer += _totals(dump)
                    else:
                        others += _totals(dump)
                if not rows:
                    raise SystemExit("the ledger wrote no row while counting")
                counts[workload] = others / n + writer / rows
                log(f"{name}: {rows} ledger rows, {writer / rows / 1000:.1f} K instructions each")
            log(f"{name}: {workload}: {counts[workload] / 1000:.0f} K instructions a request")
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rev", action="append", help="git revision to measure (. = working tree)")
    ap.add_argument("--key", choices=["static", "virtual"], default="static")
    ap.add_argument("--workload", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS)[:3])
    ap.add_argument("--requests", type=int, default=200, help="per workload (streams: fewer)")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the gateway")
    ap.add_argument("--keep", type=Path, help="copy the callgrind dumps here (callgrind_annotate)")
    ap.add_argument(
        "--full-batches", action="store_true", help="the ledger's batches full, as under load"
    )
    a = ap.parse_args()
    if a.full_batches:
        if a.key != "virtual" or a.workload != ["ns"]:
            ap.error("--full-batches takes --key virtual --workload ns")
        a.env.append("GATEWAY_LEDGER_FLUSH_SECONDS=3600")
    revs = a.rev or ["."]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="callgrind-") as name:
        tmp = Path(name)
        # Streams take their time upstream (20 ms a chunk): fewer of them.
        plan = {w: a.requests if w == "ns" else max(10, a.requests // 5) for w in a.workload}
        if a.full_batches:
            plan["ns"] = -(-a.requests // LEDGER_BATCH) * LEDGER_BATCH
        for i, rev in enumerate(revs):
            label = "working tree" if rev == "." else rev
            if label in results:  # measured again: both rows shown
                label += f" (arm {i})"
            results[label] = measure(
                f"arm{i}", rev, a.key, a.env, plan, tmp, full_batches=a.full_batches
            )
        if a.keep is not None:
            a.keep.mkdir(parents=True, exist_ok=True)
            for dump in tmp.glob("arm*.callgrind.*"):
                shutil.copy(dump, a.keep / dump.name)
            log(f"callgrind dumps in {a.keep} (arm<N>.callgrind.<workload number>)")
    print(f"K instructions a request ({a.key} key):")
    for label, counts in results.items():
        row = ", ".join(f"{w} {c / 1000:.0f}" for w, c in counts.items())
        if "stream1" in counts and "stream11" in counts:
            chunk = (counts["stream11"] - counts["stream1"]) / 10
            row += f"; a stream's set-up and end {(counts['stream1'] - chunk) / 1000:.0f}"
            row += f", each chunk {chunk / 1000:.1f}"
        print(f"  {label}: {row}")


if __name__ == "__main__":
    main()
