"""The gateway's own metric families: a counter is a dict of floats, a histogram a dict of bucket
counts, and the text format is written only when someone scrapes.

Why not prometheus_client's ``Counter``/``Histogram`` on the request path: each ``inc`` is three
Python calls and a lock, each ``observe`` a Python loop over the buckets, and a request makes
about ten of them; measured with callgrind that was +16% instructions per request, more than the
whole budget for metrics. Here an increment is one dict update and an observation one
:func:`bisect.bisect_left` in C. No lock: every update runs on the event loop's single thread, and
a scrape copies the values there (:func:`snapshot`) before anything else reads them.

prometheus_client still writes the exposition (its metric families and ``generate_latest``), so
names, ``_total``/``_bucket``/``le`` spelling and escaping are exactly what its own types wrote.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Key = tuple[str, ...]
"""A series' label values, in the order of its family's label names."""
Values = dict[Key, Any]
"""A family's series: a float each (counter, gauge) or bucket counts then the sum (histogram)."""


class Family:
    """Name, help and label names of one metric, and its series in this process.

    A series lives in a mutable cell (a list), so that a caller may keep the cell and update it
    with no look-up at all: :meth:`cell` creates it on first use, as a label child was.
    """

    kind = ""
    __slots__ = ("documentation", "labelnames", "name", "values")

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.values: dict[Key, list[Any]] = {}

    def cell(self, key: Key) -> list[Any]:
        """The series of ``key``: ``[value]`` (counter, gauge) or the histogram's counts."""
        cell = self.values.get(key)
        if cell is None:
            cell = self.values[key] = self._new()
        return cell

    def _new(self) -> list[Any]:
        return [0.0]

    def copy(self) -> Values:
        """The series as they are now, safe to read from another thread."""
        return {key: cell[0] for key, cell in self.values.items()}


class CounterFamily(Family):
    kind = "counter"
    __slots__ = ()

    def inc(self, key: Key, amount: float = 1.0) -> None:
        self.cell(key)[0] += amount


class GaugeFamily(Family):
    """``merge``: how several workers' values of one series combine (``sum``: in-flight counts;
    ``max``: the breaker's worst state)."""

    kind = "gauge"
    __slots__ = ("merge",)

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        merge: Literal["sum", "max"] = "sum",
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.merge = merge

    def inc(self, key: Key, amount: float = 1.0) -> None:
        self.cell(key)[0] += amount

    def set(self, key: Key, value: float) -> None:
        self.cell(key)[0] = float(value)


class HistogramFamily(Family):
    """Each series is a list: the count of observations in each bucket (not cumulative; the
    last bucket is ``+Inf``), then their sum. Buckets are upper bounds, inclusive, as
    Prometheus' ``le`` says: ``bisect_left`` finds the first bound >= the value."""

    kind = "histogram"
    __slots__ = ("bounds", "les", "width")

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self.les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        self.width = len(self.bounds) + 2

    def _new(self) -> list[Any]:
        return [0] * (self.width - 1) + [0.0]

    def observe(self, key: Key, value: float) -> None:
        self.observe_into(self.cell(key), value)

    def observe_into(self, counts: list[Any], value: float) -> None:
        """One observation into a series' cell, kept by the caller (hot paths inline this)."""
        counts[bisect_left(self.bounds, value)] += 1
        counts[-1] += value

    def copy(self) -> Values:
        return {key: list(counts) for key, counts in self.values.items()}


def snapshot(families: Iterable[Family]) -> dict[str, Values]:
    """Every family's series, copied: taken on the event loop, read anywhere."""
    return {family.name: family.copy() for family in families}


def _metric(family: Family, values: Values) -> Metric:
    labels = list(family.labelnames)
    metric: Any
    if isinstance(family, HistogramFamily):
        metric = HistogramMetricFamily(family.name, family.documentation, labels=labels)
        for key, counts in values.items():
            cumulative, buckets = 0.0, []
            for le, count in zip(family.les, counts, strict=False):  # the sum is left out
                cumulative += count
                buckets.append((le, cumulative))
            metric.add_metric(list(key), buckets, counts[-1])
        return metric  # type: ignore[no-any-return]
    kind = CounterMetricFamily if isinstance(family, CounterFamily) else GaugeMetricFamily
    metric = kind(family.name, family.documentation, labels=labels)
    for key, value in values.items():
        metric.add_metric(list(key), value)
    return metric  # type: ignore[no-any-return]


class _Collector(Collector):
    def __init__(self, families: Sequence[Family], values: Mapping[str, Values]) -> None:
        self.families = families
        self.values = values

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield _metric(family, self.values.get(family.name, {}))


def exposition(families: Sequence[Family], values: Mapping[str, Values]) -> bytes:
    """The text format of ``families`` holding ``values`` (a :func:`snapshot`, or several
    merged), in the families' order; a family with no series still gets its HELP and TYPE."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(families, values))
    return generate_latest(registry)
