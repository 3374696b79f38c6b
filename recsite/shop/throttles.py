"""Three per-user rate limits: ratings (and controls), searches, and every API request.

Each rating costs a Kafka event, a fold-in and four MongoDB writes, and floods skewed the public
lists; ``RATING_RATE`` (``"30/min"`` by default, DRF's rate syntax) holds for the rating page,
the API and onboarding together (one counter per user; onboarding is charged one per pick). A
search reads one index document per word and ranks up to ``MAX_POSTINGS`` ids per word;
``SEARCH_RATE`` counts signed-in users by shopper and visitors by address
(``recsite.client_address``, the login lockout's trusted-proxy rule; an IPv6 address as its
/64), and so does DRF's API-wide limit (``ApiRateThrottle``, ``API_USER_RATE``).
DRF views take the classes in ``throttle_classes``; plain Django views call ``rating_throttled`` /
``allow_search``. A single rating or control, from the API or a product page, is charged by
``charge_rating`` from inside ``shop.ratings.submit_event``, once it is known to be new (a replay of
an accepted key is not charged); ``refund_rating`` gives back the count of one that published
nothing. The rating and search rates are read from Django's settings on each request, not from DRF's
class-level rates.

All three keep DRF's sliding window (the requests of the last minute, say) but check and count in one
step, a Lua script on a Redis sorted set (``FailoverCache.take``): with DRF's read, check, write
back, concurrent requests each saw room for the last rating and all took it.

No limit fails open. They count in Redis through the ``throttle`` cache, whose errors raise
(the ``default`` cache ignores them, so with Redis down nothing was counted and the limits were
gone); while Redis fails, each process counts in a bounded local cache instead
(``LOCAL_MAX_ENTRIES`` keys, the oldest culled), so a user gets at most the limit per gunicorn
process, not unlimited ratings, and ratings still work. A breaker (``core.breaker``) keeps
requests from paying Redis's connect timeout while it is down. Credential checks refuse instead
(``accounts.throttle``): a guessed password must never get through, a rating may.
"""
from __future__ import annotations

import logging
import math
import threading
import uuid

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from rest_framework.exceptions import Throttled
from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle

from core.breaker import CircuitBreaker
from recsite.client_address import address_key, client_address

log = logging.getLogger(__name__)
LOCAL_MAX_ENTRIES = 10_000


# One step in Redis: drop the counts older than the window, then add ``cost`` counts only if they
# fit, and answer whether they did, how many are counted now and, only when they did not fit, the
# ``cost`` oldest times (what ``wait`` needs). A read here and a write later let concurrent requests
# each see room for the last rating and all take it (12 threads of 8 ratings took 64 of a limit of
# 30); returning the whole window on every request cost Redis ~6 ms at 6,000 counts (the API's
# rate). Times are the sender's clock, as DRF's.
_TAKE = """
local key, window, cost = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', tonumber(ARGV[1]) - window)
local n = redis.call('ZCARD', key)
if n + cost <= tonumber(ARGV[3]) then
  for i = 1, cost do redis.call('ZADD', key, ARGV[1], ARGV[5] .. ':' .. i) end
  redis.call('EXPIRE', key, math.ceil(window))
  return {1, n + cost, {}}
end
return {0, n, redis.call('ZRANGE', key, 0, cost - 1, 'WITHSCORES')}
"""


def _history(count: int, oldest: list[float], now: float) -> list[float]:
    """A stand-in for DRF's ``history`` (times counted, newest first) of ``count`` entries whose
    last ones are ``oldest`` (oldest last): all ``wait`` reads of it is its length and its oldest
    entries, and only a refused request reads it."""
    oldest = sorted(oldest, reverse=True)
    return [now] * max(0, count - len(oldest)) + oldest


class FailoverCache:
    """Sliding-window counts (DRF's: one time per request, the last ``duration`` seconds' count)
    taken atomically: in Redis while it answers (one Lua script), else in this process (a lock).

    State is real: the local fallback, its lock and the breaker, one per process."""

    def __init__(self) -> None:
        self.local = LocMemCache("rate-limits-while-redis-is-down",
                                 {"OPTIONS": {"MAX_ENTRIES": LOCAL_MAX_ENTRIES, "CULL_FREQUENCY": 4}})
        self.local_lock = threading.Lock()
        self.breaker = CircuitBreaker("redis-throttle", cooldown_s=2.0)

    def take(self, key: str, now: float, duration: float, limit: int, cost: int,
             token: str | None = None) -> tuple[bool, list[float]]:
        """Count ``cost`` requests at ``now`` if they fit under ``limit`` (none if not): (they fit?,
        DRF's ``history`` of the times counted within ``duration``, newest first: exact where a
        refused request's ``wait`` reads it, its length and its ``cost`` oldest, :func:`_history`).
        ``token`` names the counts for :meth:`give_back`."""
        if self.breaker.allow():
            try:
                result = self._take_redis(key, now, duration, limit, cost, token or uuid.uuid4().hex)
            except Exception as exc:  # noqa: BLE001 - any cache failure: count locally
                if not self.breaker.is_open:
                    log.warning("rate limits: Redis unavailable, counting in this process (%s)", exc)
                self.breaker.failure()
            else:
                self.breaker.success()
                return result
        return self._take_local(key, now, duration, limit, cost)

    def give_back(self, key: str, now: float, duration: float, cost: int, token: str) -> None:
        """Uncount what ``take(key, now, duration, ..., cost, token)`` counted (in Redis, or here
        while it was down): the request it let through then published nothing
        (``refund_rating``). Best effort: a count that stays only errs on the strict side."""
        if self.breaker.allow():
            try:
                cache = caches["throttle"]
                members = [f"{token}:{i}" for i in range(1, cost + 1)]  # as _TAKE named them
                cache.client.get_client(write=True).zrem(cache.make_key(key), *members)
            except Exception as exc:  # noqa: BLE001 - the count stays: stricter, never looser
                self.breaker.failure()
                log.warning("rate limits: a count not given back in Redis (%s)", exc)
            else:
                self.breaker.success()
        with self.local_lock:
            history = self.local.get(key)
            if history and now in history:
                for _ in range(min(cost, history.count(now))):
                    history.remove(now)
                self.local.set(key, history, duration)

    @staticmethod
    def _take_redis(key: str, now: float, duration: float, limit: int, cost: int,
                    token: str) -> tuple[bool, list[float]]:
        cache = caches["throttle"]
        client = cache.client.get_client(write=True)
        fits, count, oldest = client.register_script(_TAKE)(
            keys=[cache.make_key(key)], args=[repr(now), duration, limit, cost, token])
        return bool(fits), _history(int(count), [float(t) for t in oldest[1::2]], now)

    def _take_local(self, key: str, now: float, duration: float, limit: int, cost: int) -> tuple[bool, list[float]]:
        with self.local_lock:
            history = [t for t in self.local.get(key, []) if t > now - duration]
            fits = len(history) + cost <= limit
            if fits:
                history[:0] = [now] * cost
            self.local.set(key, history, duration)
            return fits, history


COUNTS = FailoverCache()


def _shopper(request) -> str | None:
    """The signed-in shopper's recommender id (both limits count per shopper), None for a visitor.

    Not the primary key: a key can be handed out again (each test's rolled-back transaction resets
    SQLite's sequence; so would a restored or reset database), and the new account must not inherit
    the old one's counts, which outlive it in Redis. (A live database does not reuse a deleted
    account's key by itself: Django makes SQLite's AutoFields AUTOINCREMENT.)
    """
    from accounts.models import recommender_id

    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return recommender_id(user)


class CountedThrottle(SimpleRateThrottle):
    """DRF's ``SimpleRateThrottle.allow_request`` with ``cost`` requests at once, checked and
    counted in one step (``COUNTS.take``): DRF reads the history, then writes it back, so
    concurrent requests each saw room for the same last one."""

    cache = COUNTS
    cost = 1
    # not DRF's "throttle_...": a history list DRF stored there before would be the wrong type
    cache_format = "rate_%(scope)s_%(ident)s"

    def allow_request(self, request, view) -> bool:
        self.key = self.get_cache_key(request, view)
        self.now = self.timer()
        self.token = uuid.uuid4().hex
        fits, self.history = self.cache.take(self.key, self.now, self.duration, self.num_requests, self.cost,
                                             self.token)
        return True if fits else self.throttle_failure()

    def give_back(self) -> None:
        """Uncount what :meth:`allow_request` counted (it let the request through)."""
        self.cache.give_back(self.key, self.now, self.duration, self.cost, self.token)


class RatingRateThrottle(CountedThrottle, UserRateThrottle):
    """One count per rating published. A request that publishes several (onboarding's picks) is
    built with ``cost`` = that number: it fits whole or is refused whole, so the limit holds for
    ratings, not for requests, and a refused request publishes nothing."""

    scope = "rating"

    def __init__(self, cost: int = 1) -> None:
        super().__init__()
        self.cost = cost

    def get_rate(self) -> str:
        return settings.RATING_RATE

    def get_cache_key(self, request, view) -> str:
        shopper = _shopper(request)
        if shopper is None:
            return super().get_cache_key(request, view)
        return self.cache_format % {"scope": self.scope, "ident": shopper}

    def wait(self) -> float | None:
        """Seconds until ``cost`` more fit: DRF's estimate for one; for several, until enough of the
        oldest counts run out (None if ``cost`` exceeds the rate itself: waiting never helps)."""
        if self.cost == 1:
            return super().wait()
        if self.cost > self.num_requests:
            return None
        expiring = len(self.history) + self.cost - self.num_requests
        return max(0.0, self.history[-expiring] + self.duration - self.now)


def _visitor(request) -> str:
    """What the limits count a visitor (no login) as: the client's address after the trusted
    proxies (``recsite.client_address``, the login lockout's rule), an IPv6 one as its /64."""
    return f"addr-{address_key(client_address(request))}"


class SearchRateThrottle(CountedThrottle):
    scope = "search"

    def get_rate(self) -> str:
        return settings.SEARCH_RATE

    def get_cache_key(self, request, view) -> str:
        shopper = _shopper(request)
        ident = _visitor(request) if shopper is None else f"user-{shopper}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class ApiRateThrottle(CountedThrottle, UserRateThrottle):
    """DRF's ``UserRateThrottle`` (``API_USER_RATE``, every API view), counted in one step as the
    others: a signed-in user by account, a visitor as :func:`_visitor`. DRF's counts a visitor per
    address, so one IPv6 host, which may use any address of its /64, had 2**64 budgets."""

    def get_cache_key(self, request, view) -> str:
        if request.user and request.user.is_authenticated:
            return super().get_cache_key(request, view)
        return self.cache_format % {"scope": self.scope, "ident": _visitor(request)}


def rating_throttled(request, cost: int = 1) -> float | None:
    """For a Django view about to publish ``cost`` ratings: None if they may go ahead (and count
    them all), else the seconds to wait (all refused, none counted): ``math.inf`` when ``cost`` is
    more than the limit itself, which no wait makes fit (a 429 with a Retry-After was retried for ever).

    The counts are kept on the request until :func:`refund_rating` gives them back: counted before
    the publish (in one step, so concurrent requests cannot overshoot), they must not stay when the
    view then publishes nothing (a rating refused, Kafka down), or the limit counted requests.
    Onboarding is the exception, on purpose: its POST of several picks is charged for all of them
    at once and keeps the charge when it is refused (an invalid POST costs one, so a form resent
    in a loop is still limited)."""
    throttle = RatingRateThrottle(cost)
    if throttle.allow_request(request, None):
        request.rating_charge = throttle
        return None
    if cost > throttle.num_requests:
        return math.inf
    return throttle.wait() or 1.0


def charge_rating(request) -> None:
    """The ``charge`` hook of ``shop.ratings.submit_event`` for the API and the pages: count one
    rating against ``RATING_RATE`` once the event is known to be new and valid (a replay of a
    published key is never charged), or raise DRF's ``Throttled`` with the wait (the API's 429;
    the pages answer their own). :func:`refund_rating` gives it back if nothing is published."""
    wait = rating_throttled(request)
    if wait is not None:
        raise Throttled(wait)


def refund_rating(request) -> None:
    """The view published nothing after :func:`rating_throttled` let it through: uncount it."""
    charge = getattr(request, "rating_charge", None)
    if charge is not None:
        request.rating_charge = None
        charge.give_back()


def allow_search(request) -> tuple[bool, float | None]:
    """(allowed?, seconds to wait) for a plain Django view."""
    throttle = SearchRateThrottle()
    if throttle.allow_request(request, None):
        return True, None
    return False, throttle.wait()
