"""The project's Redis clients (``REDIS_URL``): one pooled client per process, URL and timeouts.

Redis answers this project's commands in a millisecond or less; a timeout only decides how long a
caller waits on a Redis that is down or stalled, so it is a choice per caller. The choices, side by
side (a caller other than the default passes its own, naming it):

- :data:`TIMEOUT_S`, the default: background work (Celery's tasks) can wait out a short stall, but
  must not hang on a dead server.
- :data:`PAGE_TIMEOUT_S`: the list versions and the catalog's revision (``core.list_state``,
  ``core.catalog_revision``), read by every page and written after every worker's list: a slow
  Redis must not hold a page longer than the MongoDB read it saves.
- :data:`BULK_TIMEOUT_S`: the trending state (``core.trending_store``), whose rebuild reads and
  writes replies of the whole week's users; a connection still fails fast.
- Django's caches (recsite/recsite/settings.py) are django-redis's own clients, with
  :data:`CACHE_TIMEOUT_S` for the page cache (which ignores Redis errors: a cache miss is only
  slower) and :data:`THROTTLE_TIMEOUT_S` for the rate limits and the credential lockout, checked
  on every API request and sign-in: their errors raise, and the request falls back (counts in its
  process, or refuses the sign-in) after this wait.
"""
from __future__ import annotations

from functools import lru_cache

import redis

from core.settings import get_settings

TIMEOUT_S = 5.0  # connecting too
PAGE_TIMEOUT_S = 0.5  # connecting too
BULK_TIMEOUT_S, BULK_CONNECT_TIMEOUT_S = 60.0, 2.0
CACHE_TIMEOUT_S = 2.0  # connecting too
THROTTLE_TIMEOUT_S = 1.0  # connecting too


def client(timeout_s: float = TIMEOUT_S, connect_timeout_s: float | None = None) -> redis.Redis:
    """The client for ``REDIS_URL`` (read per call: tests switch it) waiting ``timeout_s`` for a reply
    and ``connect_timeout_s`` (by default ``timeout_s``) for a connection."""
    return _client(get_settings().redis_url, timeout_s, timeout_s if connect_timeout_s is None else connect_timeout_s)


@lru_cache(maxsize=8)
def _client(url: str, timeout_s: float, connect_timeout_s: float) -> redis.Redis:
    # cached: a client holds a connection pool (thread-safe, and safe across a fork: redis-py
    # checks the pid); a client per call would connect anew each time
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=connect_timeout_s)
