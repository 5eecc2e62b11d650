"""What metrics cost per request, in instructions: immune to a noisy machine, unlike requests/s.

    .venv/bin/python bench/metrics_callgrind.py [--requests 200] [--mode ns|stream]

Two gateways under callgrind (``callgrind.py`` says how it counts): ``GATEWAY_METRICS=false``,
then metrics on, each measured on ``--requests`` non-streamed requests or 50-chunk streams.
Needs valgrind (``apt-get install valgrind``). Issue 12's bar: metrics add at most ~5 % (never
10 %) to a non-streamed request.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from callgrind import measure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--mode", choices=["ns", "stream"], default="ns")
    a = ap.parse_args()
    workload = "ns" if a.mode == "ns" else "stream50"
    with tempfile.TemporaryDirectory(prefix="metrics-callgrind-") as name:
        tmp = Path(name)
        plan = {workload: a.requests}
        off = measure("off", ".", "static", ["GATEWAY_METRICS=false"], plan, tmp)[workload]
        on = measure("metrics", ".", "static", [], plan, tmp)[workload]
    print(f"{a.mode}: off {off / 1000:.0f} K instructions/request, metrics {on / 1000:.0f} K")
    print(f"metrics add {(on - off) / 1000:.1f} K ({100 * (on - off) / off:+.1f} %)")


if __name__ == "__main__":
    main()
