"""The circuit breaker's states: closed, open (fail fast), one probe per cooldown, closed again."""
from __future__ import annotations

import time

from core.breaker import CircuitBreaker


def test_open_after_a_failure_then_one_probe_per_cooldown_then_closed_on_success():
    b = CircuitBreaker("t", cooldown_s=0.2)
    assert b.allow() and b.allow()  # closed: everyone goes through
    b.failure()
    assert b.is_open and not b.allow() and not b.allow()  # open: fail fast
    time.sleep(0.25)
    assert b.allow(), "after the cooldown one caller probes"
    assert not b.allow(), "the others keep failing fast while it probes"
    b.failure()  # the probe failed: open for another cooldown
    assert not b.allow()
    time.sleep(0.25)
    assert b.allow()
    b.success()
    assert not b.is_open and b.allow() and b.allow()
