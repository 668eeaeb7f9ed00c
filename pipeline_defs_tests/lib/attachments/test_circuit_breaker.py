from pipeline_defs.lib.attachments.circuit_breaker import CircuitBreakers, CircuitState


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_opens_after_threshold_half_opens_after_cooldown_and_closes_on_success():
    clock = Clock()
    breakers = CircuitBreakers(failure_threshold=3, reset_timeout_s=10, clock=clock)
    for _ in range(2):
        assert breakers.allow("h")
        breakers.record_failure("h")
    assert breakers.state("h") is CircuitState.CLOSED
    breakers.record_failure("h")
    assert breakers.state("h") is CircuitState.OPEN and not breakers.allow("h")

    clock.now = 10
    assert breakers.allow("h")  # the single half-open probe
    assert breakers.state("h") is CircuitState.HALF_OPEN and not breakers.allow("h")
    breakers.record_success("h")
    assert breakers.state("h") is CircuitState.CLOSED and breakers.allow("h")
    assert [(t.from_state, t.to_state) for t in breakers.transitions] == [
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]


def test_a_failed_probe_reopens_and_keys_are_independent():
    clock = Clock()
    breakers = CircuitBreakers(failure_threshold=1, reset_timeout_s=5, clock=clock)
    breakers.record_failure("a")
    clock.now = 5
    assert breakers.allow("a")
    breakers.record_failure("a")
    assert breakers.state("a") is CircuitState.OPEN and not breakers.allow("a")
    assert breakers.allow("b") and breakers.state("b") is CircuitState.CLOSED


def test_successes_reset_the_failure_count():
    breakers = CircuitBreakers(failure_threshold=2)
    breakers.record_failure("h")
    breakers.record_success("h")
    breakers.record_failure("h")
    assert breakers.state("h") is CircuitState.CLOSED
