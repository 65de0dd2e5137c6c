"""A labelled metric's new child without `labels()`'s checks, for the scrape.

`labels()` builds each new child through the metric's constructor, which validates
the name and every label name again (about 11 µs a child): at the first scrape after
every route of 2,000 has reported headroom, its 10,000 new gauges were 110 ms of the
scrape. `Spawner` makes one child the ordinary way (a prototype, removed again at
once) and then sets its fixed fields on each new child, one attribute at a time (the
instance keeps them inline: one GC-tracked object fewer than a copied `__dict__`), and
lets it make its own value holder (`_metric_init`, as the constructor does): about
3 µs. The label values must be the metric's own, in order, and strings (the router's
come from the config).

This reads prometheus_client's `_lock`, `_metrics`, `_labelvalues` and `_metric_init`
(stable since 0.4, as telemetry/exposition.py reads them); where they are not there it
falls back to `labels()`.
"""

from __future__ import annotations

from typing import Any


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
