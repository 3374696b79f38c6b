"""A rating count given back (``FailoverCache.give_back``) while Redis is down: the counts taken in
this process meanwhile lose exactly that request's, so a refused rating does not use up the limit
then either (the Redis side is tested in tests/integration/test_api_rating_limit.py)."""
from __future__ import annotations

from core.breaker import CircuitBreaker


def test_a_count_taken_locally_is_given_back_locally():
    from shop.throttles import FailoverCache

    counts = FailoverCache()
    counts.breaker = CircuitBreaker("redis-throttle-test", cooldown_s=3600.0)
    counts.breaker.failure()  # Redis failed moments ago: everything is counted in this process
    assert counts.take("k", 100.0, 60, 3, 1, "a")[0] and counts.take("k", 101.0, 60, 3, 2, "b")[0]
    assert not counts.take("k", 102.0, 60, 3, 1, "c")[0]  # full
    counts.give_back("k", 101.0, 60, 2, "b")  # the two-rating request published nothing
    fits, history = counts.take("k", 103.0, 60, 3, 2, "d")
    assert fits and history == [103.0, 103.0, 100.0]
    counts.give_back("k", 999.0, 60, 1, "never")  # nothing of it counted: nothing changes
    assert not counts.take("k", 104.0, 60, 3, 1, "e")[0]
