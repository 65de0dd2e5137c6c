"""Children of the router's labelled metrics without prometheus_client's per-call costs.

On the request path (FastCounter, FastGauge, FastHistogram): an increment or an
observation without Counter.inc's and Histogram.observe's checks, on a value holder
without MutexValue's lock (LoopValue).

For the scrape (Spawner): a labelled metric's new child without `labels()`'s checks.
`labels()` builds each new child through the metric's constructor, which validates
the name and every label name again (about 11 µs a child): at the first scrape after
every route of 2,000 has reported headroom, its 10,000 new gauges were 110 ms of the
scrape. `Spawner` makes one child the ordinary way (a prototype, removed again at
once) and then sets its fixed fields on each new child, one attribute at a time (the
instance keeps them inline: one GC-tracked object fewer than a copied `__dict__`), and
lets it make its own value holder (`_metric_init`, as the constructor does): about
3 µs. The label values must be the metric's own, in order, and strings (the router's
come from the config).

This reads prometheus_client's `_lock`, `_metrics`, `_labelvalues`, `_metric_init`,
`_value`, `_buckets`, `_sum` and `_upper_bounds` (stable since 0.4, as
telemetry/exposition.py reads them); where they are not there it falls back to the
public calls.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client.values import MutexValue


class Spawner:
    """Children of `metric`, each created at most once."""

    __slots__ = ("_fields", "_metric", "_type")

    def __init__(self, metric: Any) -> None:
        self._metric, self._type = metric, type(metric)
        self._fields: tuple[tuple[str, Any], ...] | None = None
        names = getattr(metric, "_labelnames", ())
        if not names or not all(hasattr(metric, n) for n in ("_lock", "_metrics")):
            return
        placeholder = ("",) * len(names)
        if placeholder in metric._metrics:  # pragma: no cover - an empty label set in use
            return
        prototype = metric.labels(*placeholder)
        metric.remove(*placeholder)
        fields = dict(getattr(prototype, "__dict__", {}))
        if "_labelvalues" in fields and callable(getattr(prototype, "_metric_init", None)):
            self._fields = tuple(fields.items())

    def __call__(self, *values: str) -> Any:
        metric, fields = self._metric, self._fields
        if fields is None:
            return metric.labels(*values)
        child = metric._metrics.get(values)
        if child is not None:
            return child
        child = object.__new__(self._type)
        for name, value in fields:
            setattr(child, name, value)
        child._labelvalues = values
        child._metric_init()
        with metric._lock:  # a labels() elsewhere may have made it meanwhile
            return metric._metrics.setdefault(values, child)


class LoopValue:
    """A child's value without MutexValue's lock, for the request path's series: every
    write to them happens on the event loop's thread (the handlers, the attempt
    machinery, the scrape), so the lock only cost its two calls on each of a request's
    dozen or so increments. Same methods as prometheus_client's MutexValue, which the
    page reads through `get()`."""

    __slots__ = ("_exemplar", "_value")

    def __init__(self, value: float = 0.0, exemplar: Any = None) -> None:
        self._value, self._exemplar = value, exemplar

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._value = value

    def set_exemplar(self, exemplar: Any) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self._value

    def get_exemplar(self) -> Any:
        return self._exemplar


def _unlocked(value: Any) -> Any:
    """`value` as a LoopValue with the same reading, if it is prometheus_client's
    MutexValue; anything else (a multiprocess value, a new shape) is kept."""
    if type(value) is not MutexValue:
        return value
    return LoopValue(value.get(), value.get_exemplar())


class FastCounter:
    """A labelled child's `inc(amount)` without Counter.inc's checks on every call (that
    the metric is observable, that the amount is not negative) and without its value's
    lock (LoopValue): the router's children are always labelled and its amounts never
    negative. Falls back to the child's own inc if prometheus_client's value holder
    ever changes shape."""

    __slots__ = ("inc",)

    def __init__(self, child: Any) -> None:
        value = getattr(child, "_value", None)
        if value is not None:
            value = child._value = _unlocked(value)
        self.inc: Callable[[float], None] = getattr(value, "inc", None) or child.inc


class FastGauge(FastCounter):
    __slots__ = ()

    def dec(self, amount: float) -> None:
        self.inc(-amount)


class FastHistogram:
    """A labelled histogram child's `observe` as one bisect and two increments, rather
    than Histogram.observe's checks and its loop over the buckets."""

    __slots__ = ("_bounds", "_buckets", "_sum", "observe")

    def __init__(self, child: Any) -> None:
        bounds = getattr(child, "_upper_bounds", None)
        buckets = getattr(child, "_buckets", None)
        total = getattr(child, "_sum", None)
        if bounds is None or buckets is None or len(bounds) != len(buckets) or total is None:
            self.observe: Callable[[float], None] = child.observe
            return
        buckets[:] = [_unlocked(bucket) for bucket in buckets]
        child._sum = total = _unlocked(total)
        self._bounds = tuple(bounds)
        if type(total) is LoopValue and all(type(bucket) is LoopValue for bucket in buckets):
            # Each holder's value added to in place: no call per increment.
            self._buckets, self._sum = tuple(buckets), total
            self.observe = self._observe_loop
            return
        self._buckets = tuple(bucket.inc for bucket in buckets)
        self._sum = total.inc
        self.observe = self._observe

    def _observe(self, amount: float) -> None:
        self._sum(amount)
        self._buckets[bisect_left(self._bounds, amount)](1)

    def _observe_loop(self, amount: float) -> None:
        self._sum._value += amount
        self._buckets[bisect_left(self._bounds, amount)]._value += 1
