"""Celery tasks. Each is idempotent (it recomputes and replaces), so a retry or a late ack is harmless."""
from __future__ import annotations

import logging
import time

import redis

from core import artifacts, list_state, mongo, popular, recommend
from core.cache_keys import CACHE_GENERATION as CACHE_GENERATION_KEY
from core.cache_keys import LAST_RESCORED_MODEL as LAST_MODEL_KEY
from core.settings import get_settings
from kafka_workers.celery_app import app

log = logging.getLogger(__name__)


def _redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url, socket_timeout=5)


@app.task
def refresh_popular(limit: int = 50) -> int:
    """Most-reviewed products overall and per category (core.popular; publish runs it too)."""
    return popular.refresh_popular(limit)


@app.task
def refresh_trending(limit: int = 50) -> int:
    """Trending from the live rating events of the last week (core.popular; publish runs it too)."""
    return popular.refresh_trending(limit)


@app.task
def check_model() -> str | None:
    """Start re-scoring once per newly published model version."""
    version = artifacts.current_version()
    if version is None:
        return None
    r = _redis()
    if r.get(LAST_MODEL_KEY) == version.encode():
        return None
    rescore_active_users.delay(version)
    return version


@app.task
def rescore_active_users(version: str, active_days: int = 30, batch_size: int = 200) -> int:
    """Re-score users who rated on the site recently with the new model, then refresh caches."""
    model = artifacts.load_model(version)
    if model is None:
        return 0
    since = time.time() - active_days * 86400
    users = sorted({d["user_id"] for d in mongo.get_db()[mongo.RATINGS].find({"ts": {"$gte": since}}, {"user_id": 1})})
    done = 0
    for start in range(0, len(users), batch_size):
        for user in users[start:start + batch_size]:
            items = recommend.recommend(model, mongo.user_ratings(user), n=get_settings().top_n)
            if items:
                doc = mongo.write_recommendations(user, items, model.version)
                list_state.announce(user, list_state.version_of(doc))
                done += 1
    r = _redis()
    r.incr(CACHE_GENERATION_KEY)
    r.set(LAST_MODEL_KEY, version)
    log.info("model %s: re-scored %d active users; cache generation bumped", version, done)
    return done
