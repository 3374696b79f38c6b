"""Which version of each user's recommendation list is current, kept in Redis.

The site keeps what it showed for one version of a list (recsite/shop/recommendations.py), so
the only thing a request still needed MongoDB for was "which version is current?": one FerretDB
round trip per request, the largest share of a request's time on a loaded 2-core machine.
Here the writers that replace one user's list (the Kafka worker, Celery's re-scoring) announce
the new version in Redis right after their MongoDB write. A version the site read from MongoDB
itself is remembered only where nobody announced one (SET NX, so it never hides a newer
announcement that raced it) and only for ``REMEMBERED_TTL_S``, because the batch job's bulk
writes announce nothing; they switch with a new model's ``CURRENT`` (spark_jobs/publish.py),
which every key here carries as its generation, so all versions from before are forgotten at once.
Keys also carry the MongoDB database name: one Redis can serve several deployments (and test
sessions).

MongoDB stays the truth: Redis down or a key missing costs the MongoDB read, never an error,
and the site drops a version that disagrees with MongoDB when it reads both.
"""
from __future__ import annotations

import logging

import redis

from core import published, redis_client
from core.settings import get_settings

log = logging.getLogger(__name__)

NO_LIST = '"none"'
NO_MODEL = "none"  # the generation while no model is published
# An announcement lost to a Redis error leaves the previous version in place: it is believed
# (304s, the kept rendering) for at most this long, then MongoDB is read again.
ANNOUNCED_TTL_S = 300
REMEMBERED_TTL_S = 30


def version_of(doc: dict | None) -> str:
    """A list's version, used as its HTTP ETag: model version + write time, or ``NO_LIST``."""
    if doc and doc.get("items"):
        return f'"{doc.get("model_version")}-{doc.get("updated_at")}"'
    return NO_LIST


def client() -> redis.Redis:
    """Short timeouts: a slow Redis must not hold a page longer than the MongoDB read it saves."""
    return redis_client.client(redis_client.PAGE_TIMEOUT_S)


def key(user_id: str, generation: str) -> str:
    return f"recsys:{get_settings().mongo_db}:list:{generation}:{user_id}"


def generation() -> str:
    """The published model version (``CURRENT``): what changes every cached thing at once.

    Keys carry it, so a new model (and with it new batch lists and similar items) leaves every
    version and page cached under the old one unread. Read through ``core.published`` (at most
    once a second per process; the last known version while the model store is unreachable).
    """
    return published.current_version() or NO_MODEL


def announce(user_id: str, version: str) -> None:
    """A writer has just replaced the user's list in MongoDB (best effort: MongoDB has it)."""
    try:
        client().set(key(user_id, generation()), version, ex=ANNOUNCED_TTL_S)
    except (redis.RedisError, published.ModelStoreUnreachable) as exc:
        log.warning("list version of %s not announced in Redis (%s); the site will read MongoDB", user_id, exc)


def announce_many(versions: dict[str, str]) -> None:
    """:func:`announce` for many users in one pipelined round trip (the worker's batches)."""
    if not versions:
        return
    try:
        r = client()
        gen = generation()
        pipe = r.pipeline(transaction=False)
        for user_id, version in versions.items():
            pipe.set(key(user_id, gen), version, ex=ANNOUNCED_TTL_S)
        pipe.execute()
    except (redis.RedisError, published.ModelStoreUnreachable) as exc:
        log.warning("list versions of %d users not announced in Redis (%s); the site will read MongoDB",
                    len(versions), exc)


def drop(user_id: str) -> None:
    """The account was deleted: forget its list version (best effort: it expires anyway)."""
    try:
        client().delete(key(user_id, generation()))
    except (redis.RedisError, published.ModelStoreUnreachable) as exc:
        log.warning("list version of %s not dropped from Redis (%s); it expires in %ds", user_id, exc,
                    ANNOUNCED_TTL_S)


def current(user_id: str, generation: str) -> str | None:
    """The announced or remembered version, or None when Redis does not know (or is down)."""
    try:
        value = client().get(key(user_id, generation))
    except redis.RedisError:
        return None
    return value.decode() if value is not None else None


def remember(user_id: str, version: str, generation: str) -> None:
    """The site read ``version`` from MongoDB: keep it briefly, unless a writer announced one."""
    try:
        client().set(key(user_id, generation), version, ex=REMEMBERED_TTL_S, nx=True)
    except redis.RedisError:
        pass


def forget(user_id: str, generation: str) -> None:
    """Redis disagreed with MongoDB (a lost announcement): the next request reads MongoDB."""
    try:
        client().delete(key(user_id, generation))
    except redis.RedisError:
        pass


def popular_key() -> str:
    return f"recsys:{get_settings().mongo_db}:popular_version"


def announce_popular() -> None:
    """Popular/trending lists were just rewritten (best effort): the site's kept copies are stale."""
    try:
        client().incr(popular_key())
    except redis.RedisError as exc:
        log.warning("popular lists' new version not announced in Redis (%s); the site's copies expire", exc)


def popular_version() -> str:
    """The announced version of the popular/trending lists, "?" when Redis cannot say."""
    try:
        return (client().get(popular_key()) or b"0").decode()
    except redis.RedisError:
        return "?"
