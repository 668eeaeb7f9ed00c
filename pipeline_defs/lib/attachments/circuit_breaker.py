"""Circuit breakers keyed by host (or API): closed -> open after consecutive failures,
open -> half-open after a cool-down, half-open -> closed on one success (open on failure).

Hand-written because it is small and needs what the libraries' global decorators do not
offer: one breaker per key, an injectable clock for tests, and a log of transitions that
runs report as metadata."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum


class CircuitState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Transition:
    key: str
    from_state: CircuitState
    to_state: CircuitState
    at: float


@dataclass
class CircuitBreakers:
    failure_threshold: int = 5
    reset_timeout_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    transitions: list[Transition] = field(default_factory=list)
    _state: dict[str, CircuitState] = field(default_factory=dict)
    _failures: dict[str, int] = field(default_factory=dict)
    _opened_at: dict[str, float] = field(default_factory=dict)
    _probing: set[str] = field(default_factory=set)

    def state(self, key: str) -> CircuitState:
        return self._state.get(key, CircuitState.CLOSED)

    def allow(self, key: str) -> bool:
        """May a call to ``key`` go ahead? In half-open, exactly one probe at a time."""
        state = self.state(key)
        if state is CircuitState.OPEN:
            if self.clock() - self._opened_at[key] < self.reset_timeout_s:
                return False
            self._move(key, CircuitState.HALF_OPEN)
            state = CircuitState.HALF_OPEN
        if state is CircuitState.HALF_OPEN:
            if key in self._probing:
                return False
            self._probing.add(key)
        return True

    def record_success(self, key: str) -> None:
        self._probing.discard(key)
        self._failures[key] = 0
        if self.state(key) is not CircuitState.CLOSED:
            self._move(key, CircuitState.CLOSED)

    def record_failure(self, key: str) -> None:
        self._probing.discard(key)
        self._failures[key] = self._failures.get(key, 0) + 1
        state = self.state(key)
        if state is CircuitState.HALF_OPEN or (state is CircuitState.CLOSED and self._failures[key] >= self.failure_threshold):
            self._opened_at[key] = self.clock()
            self._move(key, CircuitState.OPEN)

    def _move(self, key: str, to_state: CircuitState) -> None:
        self.transitions.append(Transition(key, self.state(key), to_state, self.clock()))
        self._state[key] = to_state
