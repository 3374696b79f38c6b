"""The lockout's Redis names (``accounts.throttle``)."""
from __future__ import annotations

from accounts import throttle


def test_one_attempts_keys_share_one_redis_cluster_slot():
    """The lockout's scripts touch every limit's count, attempts in flight and waiters at once; on
    Redis Cluster keys in different slots are refused in one script (CROSSSLOT), which would refuse
    every login (503). They carry one hash tag."""
    from redis.crc import key_slot

    names = [name for triple in throttle._window_keys(throttle._login_keys("someone", "a password", "2001:db8::1"))
             for name in triple]
    assert len(names) == 9 and len({key_slot(name.encode()) for name in names}) == 1
