"""Calls with a deadline that a hung dependency cannot pile up behind. Python cannot cancel a
thread blocked in a driver (a PostgreSQL server that stopped answering, a broker behind a
dropped route), so a call that overruns its deadline is left running and the caller is told
"no answer"; the next caller waits for that same call instead of starting another. Each key
holds at most one thread, however long its dependency hangs and however often it is asked."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, Optional, TypeVar, cast

T = TypeVar("T")


class NoAnswer(TimeoutError):
    """The call did not finish within the caller's deadline (it goes on in the background)."""


class SingleFlight(Generic[T]):
    """``start(call)`` runs ``call`` in a daemon thread unless one is still running; ``result``
    waits for the running call up to a deadline and hands its value (or raises its error) once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._started_at = 0.0
        self._value: Optional[T] = None
        self._error: Optional[BaseException] = None

    def start(self, call: Callable[[], T]) -> None:
        with self._lock:
            if self._thread is not None:
                return  # the previous call is still running, or its answer has not been taken
            self._done.clear()
            self._started_at = time.monotonic()
            self._thread = threading.Thread(target=self._run, args=(call,), name=f"ops-{self.name}", daemon=True)
            self._thread.start()

    def _run(self, call: Callable[[], T]) -> None:
        try:
            self._value, self._error = call(), None
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self._value, self._error = None, exc
        self._done.set()

    def result(self, timeout_s: float) -> T:
        """The running call's value, or ``NoAnswer`` when it has not finished within ``timeout_s``."""
        if not self._done.wait(max(timeout_s, 0.0)):
            raise NoAnswer(f"{self.name}: no answer yet (call running for {time.monotonic() - self._started_at:.1f} s)")
        with self._lock:
            value, error = self._value, self._error
            self._thread, self._value, self._error = None, None, None
        if error is not None:
            raise error
        return cast(T, value)  # set by the finished call

    def run(self, call: Callable[[], T], timeout_s: float) -> T:
        self.start(call)
        return self.result(timeout_s)
