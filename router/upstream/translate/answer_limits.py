"""The limits translated answers are read within (bounded.py): the process's `limits:`,
set as the app starts. A module of its own so that setting them imports no httpx: a
router with no translated route never loads it."""

from __future__ import annotations

from router.types import Limits

_limits = Limits()


def set_limits(limits: Limits) -> None:
    global _limits
    _limits = limits


def current() -> Limits:
    return _limits
