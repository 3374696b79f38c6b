"""The shop's rate limits (``shop.throttles``) hold under concurrency, on the real Redis.

DRF's throttle reads a client's history, checks it and writes it back: concurrent requests each
saw room for the last rating and all took it (12 threads of 8 ratings: 64 accepted of a limit of
30; 8 gunicorn clients: 46). The rates here are per hour, so the window cannot run out while
the test runs, however slow the machine.
"""
from __future__ import annotations

import itertools
import threading
from typing import Callable

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory
from django.test.utils import override_settings

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

THREADS, EACH = 12, 8


def _race(attempt: Callable[[], bool]) -> int:
    """``THREADS`` threads, started together, each calling ``attempt`` ``EACH`` times; how many passed."""
    barrier = threading.Barrier(THREADS)
    passed: list[int] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        n = sum(bool(attempt()) for _ in range(EACH))
        with lock:
            passed.append(n)

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(passed) == THREADS, "a thread failed"
    return sum(passed)


def test_concurrent_ratings_never_pass_the_rating_limit(redis_url, site_cache, make_user):
    from accounts.models import recommender_id
    from shop.throttles import rating_throttled

    request = RequestFactory().post("/api/ratings/")
    request.user = make_user()
    recommender_id(request.user)  # the profile is loaded here, not in the threads
    with override_settings(RATING_RATE="30/hour"):
        assert _race(lambda: rating_throttled(request) is None) == 30
        wait = rating_throttled(request)
        assert wait is not None and 0 < wait <= 3600
        assert rating_throttled(request, cost=3) is not None  # a batch of picks does not fit either


def test_concurrent_searches_never_pass_the_search_limit(redis_url, site_cache):
    from shop.throttles import allow_search

    def search(host: int) -> bool:
        request = RequestFactory().get("/", {"q": "guitar"}, REMOTE_ADDR=f"2001:db8:7:7::{host:x}")
        request.user = AnonymousUser()
        return allow_search(request)[0]

    hosts = itertools.count(1)  # every search from another address of one /64 (a C iterator: thread-safe)
    with override_settings(SEARCH_RATE="40/hour"):
        assert _race(lambda: search(next(hosts))) == 40


def test_concurrent_api_requests_never_pass_the_api_limit(redis_url, site_cache, monkeypatch):
    """``API_USER_RATE`` (every API view) was DRF's own read, check, write back."""
    from shop.throttles import ApiRateThrottle

    monkeypatch.setattr(ApiRateThrottle, "THROTTLE_RATES", {"user": "50/hour"})

    def call(host: int) -> bool:
        request = RequestFactory().get("/api/products/", REMOTE_ADDR=f"2001:db8:8:8::{host:x}")
        request.user = AnonymousUser()
        return ApiRateThrottle().allow_request(request, None)

    hosts = itertools.count(1)
    assert _race(lambda: call(next(hosts))) == 50


def test_an_allowed_request_does_not_read_back_the_window(redis_url, site_cache):
    """Every request's script returned the client's whole window (6,000 counts at the API's rate:
    ~6 ms of Redis's one thread each), though only a refused request's ``wait`` reads it, and
    only its length and oldest counts."""
    import time

    from django.core.cache import caches

    from shop import throttles

    key, now = f"window-{time.time_ns()}", time.time()
    assert all(throttles.COUNTS.take(key, now + i / 1000, 3600, 500, 1)[0] for i in range(400))
    take = caches["throttle"].client.get_client(write=True).register_script(throttles._TAKE)
    full_key = caches["throttle"].make_key(key)
    allowed = take(keys=[full_key], args=[repr(now + 1), 3600, 500, 1, "x"])
    assert allowed[:2] == [1, 401] and allowed[2] == [], "an allowed request got the window back"
    refused = take(keys=[full_key], args=[repr(now + 2), 3600, 401, 3, "y"])
    assert refused[:2] == [0, 401] and len(refused[2]) == 6  # the 3 oldest, with their times

    fits, history = throttles.COUNTS.take(key, now + 2, 3600, 401, 3)  # as DRF's wait reads it
    assert not fits and len(history) == 401 and history == sorted(history, reverse=True)
    assert abs(history[-1] - now) < 1e-6 and abs(history[-3] - (now + 0.002)) < 1e-6
