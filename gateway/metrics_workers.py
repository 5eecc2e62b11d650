"""Under ``--workers N``: every worker's metrics in the scrape of any one of them.

Each worker is a process of its own with its values in memory, and a scrape lands on one of
them. So each worker publishes a snapshot of its values to its own file in one directory
(``PROMETHEUS_MULTIPROC_DIR``, the CLI's private directory by default): every
:data:`PUBLISH_SECONDS` while it runs, whenever it answers a scrape, and once more as it stops.
A scrape merges its own fresh values with every other worker's latest snapshot. Nothing of this
runs on the request path; the price is that another worker's numbers may be up to
:data:`PUBLISH_SECONDS` old.

Merging: counters and histograms are summed, including those of a worker that died (a counter
must not go down; its last snapshot is what it counted, give or take its last second). Gauges
only of live workers (a worker that stopped withdraws them in its last snapshot; one that
crashed is found dead by its pid), summed or, for the breaker, the worst state.

A worker is known by its pid *and* its process's start time (Linux: ``/proc/<pid>/stat``), in
its file's name and in the liveness check: a pid the kernel gives again, to a new worker or to
any process, neither overwrites a dead worker's counts nor brings its gauges back.

A file is written whole to a temporary name and renamed over the old one, so a reader sees one
snapshot or the previous, never half of one.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping

from gateway.metrics import GatewayMetrics
from gateway.metrics_families import GaugeFamily, HistogramFamily, Values

DIRECTORY_VAR = "PROMETHEUS_MULTIPROC_DIR"
"""The directory's variable: prometheus_client's name, so a deployment that named it for the
earlier multiprocess mode keeps working."""
PUBLISH_SECONDS = 1.0
"""How often each worker publishes its snapshot (and sets its state gauges)."""
_FILE = re.compile(r"worker_(\d+)(?:_(\d+))?\.json$")  # pid, start time (none: unknown)
logger = logging.getLogger("gateway")
Snapshot = dict[str, Values]


def workers_dir() -> str | None:
    return os.environ.get(DIRECTORY_VAR) or None


def prepare_workers_dir() -> Callable[[], None]:
    """Set up the directory for workers about to be spawned; return the cleanup.

    A directory given by the operator is emptied of old snapshots (they would be counted);
    otherwise a private temporary one is made, and removed by the cleanup. Must run before the
    workers start: each reads the variable as it builds its app.
    """
    given = workers_dir()
    if given is not None:
        os.makedirs(given, exist_ok=True)
        for pattern in ("worker_*.json", ".worker_*.tmp", "*.db"):  # *.db: the earlier format
            for path in glob.glob(os.path.join(given, pattern)):
                os.remove(path)
        return lambda: None
    made = tempfile.mkdtemp(prefix="llm-gateway-metrics-")
    os.environ[DIRECTORY_VAR] = made

    def cleanup() -> None:
        os.environ.pop(DIRECTORY_VAR, None)
        shutil.rmtree(made, ignore_errors=True)

    return cleanup


class WorkerShare:
    """This worker's file in ``directory``, and the merge of everyone's."""

    def __init__(self, metrics: GatewayMetrics, directory: str, pid: int | None = None) -> None:
        self.metrics = metrics
        self.directory = directory
        self.pid = os.getpid() if pid is None else pid
        self.started = _start_time(self.pid)
        self.name = f"worker_{self.pid}" + ("" if self.started is None else f"_{self.started}")
        self.path = os.path.join(directory, f"{self.name}.json")
        self._gauges = {f.name for f in metrics.families if isinstance(f, GaugeFamily)}
        self._written: str | None = None

    def publish(self, values: Snapshot | None = None, *, final: bool = False) -> Snapshot:
        """Write this worker's snapshot (taken now unless given) and return it. ``final``: the
        worker is stopping, its gauges are withdrawn. Skipped when nothing changed."""
        if values is None:
            values = self.metrics.snapshot()
        series = {
            name: [[list(key), value] for key, value in v.items()]
            for name, v in values.items()
            if not (final and name in self._gauges)
        }
        text = json.dumps({"pid": self.pid, "series": series}, separators=(",", ":"))
        if text != self._written:
            temporary = os.path.join(self.directory, f".{self.name}.tmp")
            with open(temporary, "w", encoding="utf-8") as file:
                file.write(text)
            os.replace(temporary, self.path)
            self._written = text
        return values

    def others(self) -> list[tuple[bool, Snapshot]]:
        """The other workers' latest snapshots, each with whether that worker is alive."""
        found = []
        for name in os.listdir(self.directory):
            match = _FILE.match(name)
            if match is None or name == f"{self.name}.json":
                continue
            try:
                with open(os.path.join(self.directory, name), encoding="utf-8") as file:
                    data = json.load(file)
                values = {
                    family: {tuple(key): value for key, value in series}
                    for family, series in data["series"].items()
                }
            except (OSError, ValueError, KeyError, TypeError):
                logger.warning("metrics: skipped an unreadable worker snapshot %s", name)
                continue
            started = None if match.group(2) is None else int(match.group(2))
            found.append((_alive(int(match.group(1)), started), values))
        return found

    def merged(self, own: Snapshot) -> Snapshot:
        """``own`` (a fresh snapshot of this worker, not shared with anyone) plus the others'."""
        return merge(self.metrics, own, self.others())


def merge(metrics: GatewayMetrics, own: Snapshot, others: list[tuple[bool, Snapshot]]) -> Snapshot:
    """Sum counters and histograms; gauges of live workers only, summed or their maximum."""
    result: Snapshot = {name: dict(series) for name, series in own.items()}
    for family in metrics.families:
        into = result.setdefault(family.name, {})
        for alive, snapshot in others:
            series: Mapping[tuple[str, ...], object] = snapshot.get(family.name, {})
            if isinstance(family, GaugeFamily):
                if not alive:
                    continue
                for key, value in series.items():
                    mine = into.get(key)
                    if mine is None:
                        into[key] = value
                    elif family.merge == "max":
                        into[key] = max(mine, value)
                    else:
                        into[key] = mine + value
            elif isinstance(family, HistogramFamily):
                for key, counts in series.items():
                    if not isinstance(counts, list) or len(counts) != family.width:
                        continue  # another version's buckets: not comparable
                    mine = into.get(key)
                    into[key] = (
                        list(counts)
                        if mine is None
                        else [a + b for a, b in zip(mine, counts, strict=True)]
                    )
            else:
                for key, value in series.items():
                    into[key] = into.get(key, 0.0) + value
    return result


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), None where /proc cannot say."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
        return int(fields[19])  # the 22nd field; the first two are before the ")"
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, started: int | None) -> bool:
    """Whether the worker that wrote a snapshot still runs: its pid, and the same process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    return started is None or _start_time(pid) in (started, None)
