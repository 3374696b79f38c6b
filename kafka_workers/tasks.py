"""Celery tasks. Each is idempotent (it recomputes and replaces), so a retry or a late ack is harmless."""
from __future__ import annotations

import logging
import time

import redis
from celery.exceptions import SoftTimeLimitExceeded
from threadpoolctl import threadpool_limits

from core import artifacts, list_state, mongo, popular, rating_history, recommend, shopper_controls, stored_lists
from core.cache_keys import LAST_RESCORED_MODEL
from core.env import env_int
from core.settings import get_settings
from kafka_workers.celery_app import VISIBILITY_TIMEOUT_S, app

log = logging.getLogger(__name__)


def _redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url, socket_timeout=5)


@app.task
def refresh_popular(limit: int = 50) -> int:
    """Most-reviewed products overall and per category (core.popular; publish runs it too)."""
    return popular.refresh_popular(limit)


@app.task
def refresh_trending(limit: int = 50) -> int:
    """Trending of the last week's live ratings, updated with what changed since the last run
    (core.popular, core.trending; publish runs it too, rebuilding the state)."""
    return popular.refresh_trending(limit)


RESCORE_TIME_LIMIT_S = env_int("RESCORE_TIME_LIMIT_S", 3 * 3600, minimum=120)
if RESCORE_TIME_LIMIT_S >= VISIBILITY_TIMEOUT_S:  # Redis would hand a running re-score out again
    raise ValueError(f"RESCORE_TIME_LIMIT_S ({RESCORE_TIME_LIMIT_S}) must be below "
                     f"CELERY_VISIBILITY_TIMEOUT_S ({VISIBILITY_TIMEOUT_S})")


def _queued_key(version: str) -> str:
    return f"recsys:rescore:queued:{version}"


def _running_key(version: str) -> str:
    return f"recsys:rescore:running:{version}"


@app.task
def check_model() -> str | None:
    """Queue one re-scoring per newly published model version (``CURRENT``, see spark_jobs/publish.py).

    Beat calls this every few seconds; a Redis ``SET NX`` per version (expiring after the rescore's
    time limit, so a rescore lost with its worker is queued again) keeps the later calls from
    queueing more while the first rescore waits or runs.
    """
    version = artifacts.current_version()
    if version is None:
        return None
    r = _redis()
    if r.get(LAST_RESCORED_MODEL) == version.encode():
        return None
    if not r.set(_queued_key(version), "1", nx=True, ex=RESCORE_TIME_LIMIT_S + 60):
        return None
    rescore_active_users.delay(version)
    return version


@app.task(time_limit=RESCORE_TIME_LIMIT_S, soft_time_limit=RESCORE_TIME_LIMIT_S - 60)
def rescore_active_users(version: str, active_days: int = 30, batch_size: int = 200) -> int:
    """Re-score users who rated on the site recently with the new model, then refresh caches.

    Runs once per version: a copy delivered while one runs (it holds the version's running lock)
    or after one finished (``LAST_RESCORED_MODEL``) returns 0 at once. A run that fails releases both
    locks, so the next ``check_model`` queues it again; one that ran out of time keeps its queued
    mark until that expires. A run whose version stops being current stops.
    """
    r = _redis()
    if r.get(LAST_RESCORED_MODEL) == version.encode():
        return 0
    if not r.set(_running_key(version), "1", nx=True, ex=RESCORE_TIME_LIMIT_S + 60):
        log.info("model %s: a rescore is already running; this copy does nothing", version)
        return 0
    try:
        done = _rescore(version, active_days, batch_size)
    except SoftTimeLimitExceeded:
        # queued again at once it would run out of time again, from its first user, over and over:
        # its queued mark stays until it expires (RESCORE_TIME_LIMIT_S), then check_model tries again
        r.delete(_running_key(version))
        log.error("model %s: re-scoring ran out of time (RESCORE_TIME_LIMIT_S=%d)", version, RESCORE_TIME_LIMIT_S)
        raise
    except BaseException:
        r.delete(_running_key(version), _queued_key(version))
        raise
    # both: the version may be made current again later (staff go back to it), after another was
    # re-scored; its queued mark would keep check_model from queueing it until the mark expired
    r.delete(_running_key(version), _queued_key(version))
    return done


def _rescore(version: str, active_days: int, batch_size: int) -> int:
    model = artifacts.load_model(version)
    if model is None:
        return 0
    since = time.time() - active_days * 86400
    users = sorted({d["user_id"] for d in mongo.get_db()[mongo.RATINGS].find({"ts": {"$gte": since}}, {"user_id": 1})})
    done = 0
    # One user's solve and scores gain nothing from OpenBLAS's second thread, whose wait for the
    # next call spins a core beside the workers and the database (1.6x the CPU per user at 10k items,
    # the same wall time: docs/benchmarks.md); the rating workers run with one thread too.
    with threadpool_limits(1, user_api="blas"):
        for start in range(0, len(users), batch_size):
            if artifacts.current_version() != version:  # a newer model came: its own re-score follows
                log.info("model %s: no longer current; re-scoring stopped after %d users", version, done)
                return done
            for user in users[start:start + batch_size]:
                as_of = time.time()  # a worker's list from a later read of the history is kept
                items = recommend.recommend(model, rating_history.user_ratings(user), n=get_settings().top_n,
                                            exclude=shopper_controls.exclusions(user))
                if items:
                    doc = stored_lists.write_recommendations(user, items, model.version, as_of=as_of)
                    if doc is None:  # the account was deleted meanwhile: no list
                        continue
                    list_state.announce(user, list_state.version_of(doc))
                    done += doc.get("as_of") == as_of
    _redis().set(LAST_RESCORED_MODEL, version)
    log.info("model %s: re-scored %d active users", version, done)
    return done
