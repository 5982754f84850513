"""Wall-clock limits for calls into game engines that may hang."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import TypeVar

from duomem.errors import EnvTimeout

T = TypeVar("T")


def call_with_timeout(fn: Callable[[], T], seconds: float | None, what: str) -> T:
    """Run ``fn``; raise :class:`EnvTimeout` if it takes longer than ``seconds``.

    Uses SIGALRM, so the limit applies in a process's main thread (each rollout worker is a process); elsewhere
    ``fn`` runs without a limit.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        return fn()

    def _raise(signum: int, frame: object) -> None:
        raise EnvTimeout(f"{what} took longer than {seconds:.0f}s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
