"""Scripted faults: what one request to a simulated key should suffer instead of a normal answer.

A `Fault` is a frozen value naming a `kind` plus that kind's parameters. Each constructor names
one semantic failure from provider-signals.md; the bytes on the wire depend on the endpoint
the request came to (`openai/errors.py`, `anthropic/errors.py`, `openai/azure.py`,
`gemini/errors.py`, and each format's stream encoder), so `Fault.overloaded()` is OpenAI's
503, Anthropic's 529 and Gemini's 503 UNAVAILABLE. `status` is the OpenAI status.
`to_dict`/`from_dict` let another process (the demo, the bench) script faults through
`POST /_sim/faults`.

`FaultQueue` holds the script for one key: groups of faults consumed FIFO, one per request,
each group repeated a number of rounds (or forever, for a "429 storm").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

FaultKind = Literal[
    "rate_limit",
    "insufficient_quota",
    "auth",
    "server_error",
    "overloaded",
    "bad_request",
    "context_length",
    "model_not_found",
    "delay",
    "hang",
    "stream_cut",
    "stream_error",
    "stream_stall",
]

# Kinds answered with an HTTP error status and the format's error body; the rest change
# how (or whether) a normal answer is delivered.
ERROR_KINDS: frozenset[str] = frozenset(
    {
        "rate_limit",
        "insufficient_quota",
        "auth",
        "server_error",
        "overloaded",
        "bad_request",
        "context_length",
        "model_not_found",
    }
)

FOREVER = -1


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One scripted failure. Build it with the classmethods, not the raw constructor.

    `after_chunks` (stream_* kinds) counts the content chunks (one word each) sent before
    the failure. The opening `{"role": "assistant", "content": ""}` chunk always goes first,
    as it does from OpenAI, so `after_chunks=0` fails right after that preamble.

    `headers` (rate_limit only) says whether the retry hint also goes into `retry-after`
    and `retry-after-ms`; with `False` it is only in the message text, which is how
    OpenAI's own 429s are documented (provider-signals.md §1, §2.2).
    """

    kind: FaultKind
    status: int = 0
    retry_after: float | None = None
    headers: bool = True
    message: str | None = None
    code: str | None = None
    param: str | None = None
    seconds: float = 0.0
    after_chunks: int = 0

    @classmethod
    def rate_limit(cls, retry_after: float | None = 2.0, *, headers: bool = True) -> Fault:
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        return cls(kind="rate_limit", status=429, retry_after=retry_after, headers=headers)

    @classmethod
    def insufficient_quota(cls) -> Fault:
        return cls(kind="insufficient_quota", status=429)

    @classmethod
    def auth(cls) -> Fault:
        return cls(kind="auth", status=401)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        if not 500 <= status <= 599:
            raise ValueError(f"server_error status must be 5xx, got {status}")
        return cls(kind="server_error", status=status)

    @classmethod
    def overloaded(cls) -> Fault:
        return cls(kind="overloaded", status=503)

    @classmethod
    def bad_request(
        cls,
        message: str = "Invalid request.",
        code: str | None = None,
        param: str | None = None,
    ) -> Fault:
        return cls(kind="bad_request", status=400, message=message, code=code, param=param)

    @classmethod
    def context_length(cls) -> Fault:
        return cls(kind="context_length", status=400)

    @classmethod
    def model_not_found(cls) -> Fault:
        return cls(kind="model_not_found", status=404)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        if seconds < 0:
            raise ValueError("delay seconds must be >= 0")
        return cls(kind="delay", seconds=seconds)

    @classmethod
    def hang(cls) -> Fault:
        return cls(kind="hang")

    @classmethod
    def stream_cut(cls, after_chunks: int = 2) -> Fault:
        return cls(kind="stream_cut", after_chunks=_non_negative(after_chunks))

    @classmethod
    def stream_error(cls, after_chunks: int = 2) -> Fault:
        return cls(kind="stream_error", after_chunks=_non_negative(after_chunks))

    @classmethod
    def stream_stall(cls, after_chunks: int = 1) -> Fault:
        return cls(kind="stream_stall", after_chunks=_non_negative(after_chunks))

    @property
    def is_error_reply(self) -> bool:
        return self.kind in ERROR_KINDS

    def to_dict(self) -> dict[str, Any]:
        """The constructor's arguments, so that `Fault.from_dict(f.to_dict()) == f`."""
        return {"kind": self.kind} | {name: getattr(self, name) for name in _PARAMS[self.kind]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Build a fault from `{"kind": ..., **constructor_args}`; raise ValueError if invalid."""
        params = dict(data)
        kind = params.pop("kind", None)
        if kind not in _PARAMS:
            raise ValueError(f"unknown fault kind {kind!r}")
        unknown = set(params) - set(_PARAMS[kind])
        if unknown:
            raise ValueError(f"fault {kind!r} takes no {sorted(unknown)}")
        constructor: Callable[..., Fault] = getattr(cls, kind)
        try:
            return constructor(**params)
        except TypeError as exc:
            raise ValueError(f"bad arguments for fault {kind!r}: {exc}") from exc


# The constructor arguments of each kind, which are also the field names they fill.
_PARAMS: dict[str, tuple[str, ...]] = {
    "rate_limit": ("retry_after", "headers"),
    "insufficient_quota": (),
    "auth": (),
    "server_error": ("status",),
    "overloaded": (),
    "bad_request": ("message", "code", "param"),
    "context_length": (),
    "model_not_found": (),
    "delay": ("seconds",),
    "hang": (),
    "stream_cut": ("after_chunks",),
    "stream_error": ("after_chunks",),
    "stream_stall": ("after_chunks",),
}


def _non_negative(after_chunks: int) -> int:
    if after_chunks < 0:
        raise ValueError("after_chunks must be >= 0")
    return after_chunks


@dataclass(slots=True)
class _Round:
    """A group of faults played in order, `rounds_left` more times (FOREVER = -1)."""

    faults: tuple[Fault, ...]
    rounds_left: int
    index: int = 0


class FaultQueue:
    """The fault script of one key; `pop()` gives the fault for the next request, or None."""

    __slots__ = ("_rounds",)

    def __init__(self) -> None:
        self._rounds: deque[_Round] = deque()

    def push(self, faults: Sequence[Fault], times: int = 1) -> None:
        if times == 0 or not faults:
            return
        if times < FOREVER:
            raise ValueError("times must be a positive count or -1 (forever)")
        self._rounds.append(_Round(faults=tuple(faults), rounds_left=times))

    def pop(self) -> Fault | None:
        if not self._rounds:
            return None
        current = self._rounds[0]
        fault = current.faults[current.index]
        current.index += 1
        if current.index == len(current.faults):
            current.index = 0
            if current.rounds_left != FOREVER:
                current.rounds_left -= 1
                if current.rounds_left == 0:
                    self._rounds.popleft()
        return fault

    def clear(self) -> None:
        self._rounds.clear()

    def __len__(self) -> int:
        """Faults still scripted; a forever round counts as one pass of its group."""
        return sum(len(r.faults) * max(r.rounds_left, 1) - r.index for r in self._rounds)
