"""Shortcuts on the request path give the answers of the long way: the metric children
without their value's lock (telemetry/children.py) and the client headers kept per list
of names (upstream/__init__.py)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from router.telemetry.children import FastCounter, FastGauge, FastHistogram, LoopValue
from router.telemetry.exposition import Renderer
from router.upstream import _DROPPED_REQUEST_HEADERS, _LISTS, _kept_by_shape, forwardable_headers


def test_unlocked_children_count_what_locked_ones_do_and_render_the_same_page():
    registry = CollectorRegistry()
    counter = Counter("t_requests", "Requests.", ["model"], registry=registry)
    gauge = Gauge("t_in_flight", "In flight.", ["model"], registry=registry)
    histogram = Histogram("t_seconds", "Time.", ["model"], buckets=(0.1, 1.0), registry=registry)
    counter.labels("a").inc(2)  # before the fast child: its count is carried over
    fast = FastCounter(counter.labels("a"))
    fast.inc(3)
    counter.labels("a").inc(1)  # the ordinary path writes the same value holder
    in_flight = FastGauge(gauge.labels("a"))
    in_flight.inc(2)
    in_flight.dec(1)
    gauge.labels("a").set(gauge.labels("a")._value.get() + 4)
    histogram.labels("a").observe(0.5)
    seconds = FastHistogram(histogram.labels("a"))
    seconds.observe(0.05)
    seconds.observe(7.0)

    assert type(counter.labels("a")._value) is LoopValue
    assert type(histogram.labels("a")._sum) is LoopValue
    assert all(type(bucket) is LoopValue for bucket in histogram.labels("a")._buckets)
    assert registry.get_sample_value("t_requests_total", {"model": "a"}) == 6
    assert registry.get_sample_value("t_in_flight", {"model": "a"}) == 5
    assert registry.get_sample_value("t_seconds_count", {"model": "a"}) == 3
    assert registry.get_sample_value("t_seconds_sum", {"model": "a"}) == pytest.approx(7.55)
    assert registry.get_sample_value("t_seconds_bucket", {"model": "a", "le": "0.1"}) == 1
    assert registry.get_sample_value("t_seconds_bucket", {"model": "a", "le": "1.0"}) == 2
    renderer = Renderer(registry, [counter, gauge, histogram])
    assert renderer.render() == generate_latest(registry)


class _OtherHolder:
    """A value holder of another shape (as a multiprocess value is): kept, and added to
    through its own `inc`."""

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float) -> None:
        self.value += amount

    def get(self) -> float:
        return self.value


def test_a_histogram_whose_holders_are_not_the_lock_free_kind_counts_through_their_inc():
    histogram = Histogram("t_other_seconds", "Time.", ["model"], buckets=(0.1, 1.0),
                          registry=CollectorRegistry())  # fmt: skip
    child = histogram.labels("a")
    child._sum = _OtherHolder()
    child._buckets = [_OtherHolder() for _ in child._buckets]
    seconds = FastHistogram(child)
    seconds.observe(0.05)
    seconds.observe(0.5)
    seconds.observe(7.0)

    assert child._sum.get() == pytest.approx(7.55)
    assert [bucket.get() for bucket in child._buckets] == [1, 1, 1]


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def long_way(client: CIMultiDictProxy[str]) -> dict[str, str]:
    dropped = set(_DROPPED_REQUEST_HEADERS)
    nominated = client.get("connection")
    if nominated:
        dropped |= {name.strip().lower() for name in nominated.split(",")}
    sent: dict[str, list[str]] = {}
    for name, value in client.items():
        lowered = name.lower()
        if lowered not in dropped and not lowered.startswith("x-router-"):
            sent.setdefault(lowered, []).append(value)
    return {
        name: ", ".join(values) if name in _LISTS else values[-1] for name, values in sent.items()
    }


@pytest.mark.parametrize(
    "client",
    [
        headers(
            ("Authorization", "Bearer sk-x"),
            ("OpenAI-Beta", "assistants=v2"),
            ("User-Agent", "sdk"),
            ("X-Router-Debug", "1"),
            ("Host", "r"),
        ),
        headers(("Connection", "keep-alive, X-Trace"), ("X-Trace", "t"), ("Accept", "*/*")),
        headers(("Connection", "close"), ("X-Trace", "t"), ("Accept", "*/*")),
        headers(("Anthropic-Beta", "a"), ("anthropic-beta", "b"), ("TE", "trailers")),
        headers(),
    ],
)
def test_the_forwarded_headers_are_those_of_the_long_way_each_time(client):
    first = forwardable_headers(client)
    again = forwardable_headers(client)  # from what the first call kept
    assert first == again == long_way(client)


def test_forwarded_names_are_lowercase_and_each_goes_once():
    client = headers(
        ("Anthropic-Version", "2023-01-01"),
        ("Anthropic-Beta", "a"),
        ("anthropic-beta", "b"),
        ("anthropic-version", "2023-06-01"),
        ("X-Stainless-Retry-Count", "0"),
        ("x-stainless-retry-count", "1"),
        ("Content-Type", "application/json; charset=utf-8"),  # the router sets its own
    )
    for _ in range(2):  # the long way, then from what the first call kept
        assert forwardable_headers(client) == {
            "anthropic-version": "2023-06-01",  # one value, the last
            "anthropic-beta": "a, b",  # a list: both
            "x-stainless-retry-count": "1",
        }


def test_the_same_names_with_another_connection_value_are_judged_again():
    keep = headers(("Connection", "keep-alive"), ("X-Trace", "t"))
    drop = headers(("Connection", "X-Trace"), ("X-Trace", "t"))
    assert forwardable_headers(keep) == {"x-trace": "t"}
    assert forwardable_headers(drop) == {}
    assert forwardable_headers(keep) == {"x-trace": "t"}


def test_what_is_kept_per_list_of_names_stays_bounded():
    for i in range(1000):  # a client that varies its header names on every request
        assert forwardable_headers(headers((f"X-Custom-{i}", "v"))) == {f"x-custom-{i}": "v"}
    assert 0 < len(_kept_by_shape) <= 256


def test_long_header_names_are_judged_each_time_and_not_kept():
    """A client varying long names must not fill what is kept per list of names."""
    _kept_by_shape.clear()
    name = "X-" + "n" * 5000
    for _ in range(2):
        assert forwardable_headers(headers((name, "v"), ("Connection", "keep-alive"))) == {
            name.lower(): "v"
        }
    assert len(_kept_by_shape) == 0
    assert forwardable_headers(headers(("X-Short", "v"))) == {"x-short": "v"}
    assert len(_kept_by_shape) == 1
