"""The catalog's revision: what the site's cached product titles, counts, pages and searches carry
in their keys besides the model version, changed whenever an account deletion rewrote product
documents (their counts, a title quoting the deleted reviewer, its reviews and search words).

A raw Redis key (as ``core.list_state``'s), not one of Django's cache: Celery's erasure sweep
(``kafka_workers.tasks.finish_erasures``), which ends what the site's own run of a deletion left,
runs without Django and must make the pages cached meanwhile unread too; with the revision in
Django's cache only the site could, and those pages showed the deleted reviews for up to
``CATALOG_CACHE_SECONDS`` after the sweep. Keyed by the MongoDB database, as list_state's keys.

Redis failing never fails a deletion: the caches it would have hidden live in the same Redis.
"""
from __future__ import annotations

import logging
import time
import uuid

import redis

from core import list_state
from core.env import env_int
from core.settings import get_settings

log = logging.getLogger(__name__)

CHECK_S = 1.0  # read at most once a second per process, as list_state.generation
# outlives every page cached before a bump (the site keeps them CATALOG_CACHE_SECONDS), so a lapsed
# revision never revives one
KEEP_S = max(env_int("CATALOG_CACHE_SECONDS", 300), 24 * 3600)
_seen: dict[str, tuple[str, float]] = {}  # per database: (revision, when read)


def _key() -> str:
    return f"recsys:{get_settings().mongo_db}:catalog-revision"


def current() -> str:
    """The revision (the last one read while Redis fails). Another process sees a bump within
    ``CHECK_S``, the one that made it at once.

    Missing (never bumped, lapsed, lost with Redis), a random one is made, never a fixed "0":
    pages cached under "0" before the site first kept its revision here (in Django's cache)
    would otherwise be read again, whatever a deletion changed since."""
    key, now = _key(), time.monotonic()
    hit = _seen.get(key)
    if hit is None or now - hit[1] >= CHECK_S:
        try:
            client = list_state.client()
            value = client.get(key)
            if value is None:  # whoever sets it first, every process reads that one
                client.set(key, uuid.uuid4().hex[:12], nx=True, ex=KEEP_S)
                value = client.get(key) or b"0"
            hit = _seen[key] = (value.decode(), now)
        except redis.RedisError as exc:
            log.warning("catalog revision not read (%s); keeping the last one", exc)
            hit = _seen[key] = ((hit or ("0", 0.0))[0], now)
    return hit[0]


def bump() -> None:
    """Product documents changed: nothing cached under the revision so far is read again. A new
    random revision (an increment would restart from a lapsed key's value), set after MongoDB
    changed, so what is cached under it is read from the changed documents."""
    key, revision = _key(), uuid.uuid4().hex[:12]
    try:
        list_state.client().set(key, revision, ex=KEEP_S)
    except redis.RedisError as exc:
        log.warning("catalog revision not changed (%s); cached pages may show the old documents "
                    "for up to their lifetime", exc)
        return
    _seen[key] = (revision, time.monotonic())
