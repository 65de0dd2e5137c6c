"""A client model's and a (model, route)'s series, resolved once and each created on
first use: `labels()` takes a lock and builds a key on every call, which adds up on the
request path, and a series made at startup for every combination made the page grow
with the config rather than with what happened (metrics.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from router.outcomes import FailureClass
from router.telemetry.children import FastCounter, FastGauge, FastHistogram
from router.telemetry.labels import ATTEMPT_OUTCOME, RequestOutcome, route_labels
from router.types import Route

if TYPE_CHECKING:
    from router.telemetry.metrics import Metrics


class _Children(dict[Any, Any]):
    """A map to a metric's children that creates each one on first use."""

    __slots__ = ("_make",)

    def __init__(self, make: Callable[[Any], Any]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key: Any) -> Any:
        child = self[key] = self._make(key)
        return child


class _FirstUse:
    """Stands in a series' slot until its first increment or observation, which makes
    the child (`make()`), puts it in the slot and passes the value on: the series is
    created when it first has something to say, and every later use is a plain slot
    read (a property was a call on every request)."""

    __slots__ = ("_child", "_make", "_name", "_owner")

    def __init__(self, owner: Any, name: str, make: Callable[[], Any]) -> None:
        self._owner, self._name, self._make = owner, name, make
        self._child: Any = None

    def _made(self) -> Any:
        # A caller that read the slot before the first use still holds this stand-in.
        if self._child is None:
            self._child = self._make()
            setattr(self._owner, self._name, self._child)
        return self._child

    def inc(self, amount: float) -> None:
        self._made().inc(amount)

    def dec(self, amount: float) -> None:
        self._made().dec(amount)

    def observe(self, amount: float) -> None:
        self._made().observe(amount)


class RouteSeries:
    """One (client model, route)'s series, resolved once and each created on first use:
    `labels()` takes a lock and builds a key on every call, which adds up on the request
    path. Only pairs where the route is one of the model's own (attempts record the
    model whose route served)."""

    __slots__ = ("attempts", "cache_read", "cache_write", "failovers", "spend", "tokens_in",
                 "tokens_out", "upstream_seconds")  # fmt: skip

    def __init__(self, metrics: Metrics, model: str, route: Route) -> None:
        labels = (model, *route_labels(route))
        provider = route.key.provider
        self.attempts: dict[FailureClass, FastCounter] = _Children(
            lambda f: FastCounter(metrics.attempts.labels(*labels, ATTEMPT_OUTCOME[f].value))
        )
        self.failovers: dict[FailureClass, FastCounter] = _Children(
            lambda f: FastCounter(metrics.failovers.labels(*labels, f.value))
        )
        self.upstream_seconds: Any = _FirstUse(
            self,
            "upstream_seconds",
            lambda: FastHistogram(metrics.upstream_seconds_of(model, provider)),
        )
        self.tokens_in: Any = _FirstUse(
            self, "tokens_in", lambda: FastCounter(metrics.tokens.labels(*labels, "input"))
        )
        self.tokens_out: Any = _FirstUse(
            self, "tokens_out", lambda: FastCounter(metrics.tokens.labels(*labels, "output"))
        )
        self.cache_read: Any = _FirstUse(
            self, "cache_read", lambda: FastCounter(metrics.cached_tokens.labels(*labels, "read"))
        )
        self.cache_write: Any = _FirstUse(
            self,
            "cache_write",
            lambda: FastCounter(metrics.cached_tokens.labels(*labels, "write")),
        )
        self.spend: Any = _FirstUse(
            self, "spend", lambda: FastCounter(metrics.spend.labels(*labels))
        )


class ModelSeries:
    """A client model's series, each created on first use (requests by outcome: at
    startup for configured models, see the module's docstring)."""

    __slots__ = ("in_flight", "requests", "seconds")

    def __init__(self, metrics: Metrics, model: str) -> None:
        self.requests: dict[RequestOutcome, FastCounter] = _Children(
            lambda o: FastCounter(metrics.requests.labels(model, o.value))
        )
        self.seconds: Any = _FirstUse(
            self, "seconds", lambda: FastHistogram(metrics.request_seconds.labels(model))
        )
        self.in_flight: Any = _FirstUse(
            self, "in_flight", lambda: FastGauge(metrics.in_flight.labels(model))
        )
