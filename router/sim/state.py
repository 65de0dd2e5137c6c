"""The simulator's configuration and mutable state: keys, fault scripts, buckets, stats.

`SimState` is the one owner of everything a request changes; the HTTP layer (`server.py`)
and the public facade (`provider.py`) both work through it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from router.sim.cache import PromptCache
from router.sim.faults import Fault, FaultQueue
from router.sim.limits import KeyLimits

Clock = Callable[[], float]

DEFAULT_MODELS: tuple[str, ...] = (
    "gpt-5.4-mini",
    "gpt-5.4",
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
)
RECORDED_REQUESTS = 1000


@dataclass(frozen=True, slots=True)
class SimKey:
    """One simulated credential. `rpm`/`tpm` None means that dimension is unlimited."""

    name: str
    api_key: str = field(repr=False)
    rpm: int | None = None
    tpm: int | None = None
    latency: float = 0.0
    chunk_delay: float = 0.0
    reply: str | None = None
    # Answer a body holding `stream_options` with a 400, as Azure api-versions before
    # 2024-09-01-preview do.
    refuses_stream_options: bool = False

    def reply_for(self, model: str) -> str:
        return self.reply if self.reply is not None else f"Hello from {self.name} via {model}."


@dataclass(slots=True)
class KeyStats:
    """Counters for one key's model requests, whatever wire format they came in.

    `requests` counts every authenticated request; `served` and `rejected` count response
    heads sent with status 200 and non-200; `cancelled` counts requests whose client went
    away before the response finished; `dropped` counts connections the simulator itself
    closed mid-response (`stream_cut`, or shutdown during `hang`/`stream_stall`).
    `by_format` splits `requests` by endpoint family (`wire_format.FormatName`: "openai_chat",
    "openai_embeddings", "openai_responses", "anthropic", "anthropic_count_tokens", "azure_chat",
    "azure_embeddings", "gemini"); a format never used has no entry.
    """

    requests: int = 0
    served: int = 0
    rejected: int = 0
    cancelled: int = 0
    streams_completed: int = 0
    dropped: int = 0
    by_format: dict[str, int] = field(default_factory=dict)

    def count_request(self, format_name: str) -> None:
        self.requests += 1
        self.by_format[format_name] = self.by_format.get(format_name, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as received; `key_name` is "" when the API key matched no SimKey.

    `query` is the raw query string (Azure's `api-version`, Gemini's `alt=sse`); `format`
    names the wire format that handled it ("" for `/v1/models`).
    """

    key_name: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: str = ""
    format: str = ""


class SimState:
    __slots__ = (
        "_clock",
        "by_api_key",
        "caches",
        "keys",
        "limits",
        "models",
        "queues",
        "requests",
        "stats",
    )

    def __init__(self, keys: Sequence[SimKey], clock: Clock, models: Iterable[str]) -> None:
        names = [k.name for k in keys]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate SimKey names in {names}")
        self._clock = clock
        self.keys: dict[str, SimKey] = {k.name: k for k in keys}
        self.by_api_key: dict[str, SimKey] = {k.api_key: k for k in keys}
        self.models = tuple(models)
        now = clock()
        self.limits = {k.name: KeyLimits(k.rpm, k.tpm, now) for k in keys}
        self.queues = {k.name: FaultQueue() for k in keys}
        self.stats = {k.name: KeyStats() for k in keys}
        self.caches = {k.name: PromptCache() for k in keys}
        self.requests: deque[RecordedRequest] = deque(maxlen=RECORDED_REQUESTS)

    def now(self) -> float:
        return self._clock()

    def set_clock(self, clock: Clock) -> None:
        self._clock = clock
        now = clock()
        for limits in self.limits.values():
            limits.rebase(now)

    def key(self, name: str) -> SimKey:
        try:
            return self.keys[name]
        except KeyError:
            raise KeyError(f"no SimKey named {name!r}; known: {sorted(self.keys)}") from None

    def inject(self, name: str, faults: Sequence[Fault], times: int) -> None:
        self.key(name)
        self.queues[name].push(faults, times)

    def clear(self, name: str | None) -> None:
        if name is None:
            for queue in self.queues.values():
                queue.clear()
        else:
            self.key(name)
            self.queues[name].clear()

    def stats_dict(self) -> dict[str, dict[str, Any]]:
        return {name: stats.to_dict() for name, stats in self.stats.items()}
