"""Popular and trending lists per category: what new and anonymous visitors are shown.

Both the publish job (so the lists exist the moment a model goes live, not when Celery beat
first fires) and Celery's periodic tasks (kafka_workers/tasks.py) call these functions. Each
replaces its lists by ``_id``, so running them twice, or from two places, is harmless (trending's
scores in Redis are updated under a lock: core/trending.py). After writing they bump a version in
Redis (core.list_state), which the site's cached copies of the lists are keyed by.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Iterable

import redis
from pymongo.database import Database

from core import catalog, list_state, mongo, stored_lists, trending, trending_votes

log = logging.getLogger(__name__)

TRENDING_HALF_LIFE_S = trending_votes.HALF_LIFE_S
BATCH_TRENDING_WINDOW_S = 28 * 86400
BATCH_TRENDING_HALF_LIFE_S = 7 * 86400.0


def refresh_popular(limit: int = 50, db: Database | None = None) -> int:
    """Most-reviewed products overall and per category, from the batch load's catalog order."""
    written = 0
    for name in [mongo.ALL] + [c["name"] for c in catalog.categories(db=db)]:
        items = catalog.compute_popular(limit=limit, category=None if name == mongo.ALL else name, db=db)
        stored_lists.write_popular(name, "popular", items, db=db)
        written += 1
    list_state.announce_popular()
    return written


def trending_scores(events: Iterable[dict], now: float, half_life_s: float = TRENDING_HALF_LIFE_S) -> dict[str, float]:
    """Recent ratings weighted by recency (half-life one day) and by how positive they are.

    One person counts once per product in the window: their latest event of it, which counts
    nothing when it took the rating back (``unrate``). And one person's weight is split over the
    products they rated in the window: summing every event let one account re-posting five stars
    top "Trending" for every new visitor, and an account rating fifty products would fill it. Of
    an account with more than ``trending_votes.MAX_VOTES_PER_USER`` such products only the most recent
    count (:func:`core.trending_votes.capped`), as in the scores Redis keeps.
    """
    return vote_scores(trending_votes.votes_from_events(events), now, half_life_s)


def vote_scores(votes: dict[str, list[trending_votes.Vote]], now: float,
                half_life_s: float = TRENDING_HALF_LIFE_S) -> dict[str, float]:
    """:func:`trending_scores` of votes already taken from the events (:func:`core.trending_votes.fold_events`,
    which the fallback without Redis also needs the newest event of)."""
    scores: dict[str, float] = defaultdict(float)
    for user_votes in votes.values():
        for (pid, _rating, _ts), term in zip(user_votes, trending_votes.terms(user_votes, now, now, half_life_s)):
            scores[pid] += term
    return scores


def batch_trending_events(db: Database) -> tuple[list[dict], float, float]:
    """(events, "now", half-life) of a quiet site (the publish job, when no rating was made or
    taken back on the site within the window): the newest four weeks of the batch reviews,
    counted back from the newest review with a one-week half-life. A fresh install's trending list
    then shows what the data itself says was rising, instead of nothing."""
    newest = db[mongo.RECENT_REVIEWS].find_one({}, {"ts": 1}, sort=[("ts", -1)])
    if not newest:
        return [], time.time(), TRENDING_HALF_LIFE_S
    end = float(newest["ts"])
    batch = list(db[mongo.RECENT_REVIEWS].find({"ts": {"$gte": end - BATCH_TRENDING_WINDOW_S}},
                                               {"user_id": 1, "product_id": 1, "rating": 1, "ts": 1}))
    return batch, end, BATCH_TRENDING_HALF_LIFE_S


def ranked(scores: dict[str, float], names: set[str], limit: int, db: Database) -> dict[str, list[dict]]:
    """Lists ``names`` (overall and per category) of in-memory ``scores``: top ``limit``, ties by id."""
    products = catalog.get_products(list(scores), db=db)
    by_cat: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for pid, score in scores.items():
        by_cat[mongo.ALL].append((pid, score))
        by_cat[products.get(pid, {}).get("category") or ""].append((pid, score))
    return {name: [{"product_id": p, "score": round(s, 4)}
                   for p, s in sorted(by_cat.get(name, []), key=lambda x: (-x[1], x[0]))[:limit]] for name in names}


def refresh_trending(limit: int = 50, db: Database | None = None, quiet_fallback: bool = False,
                     now: float | None = None) -> int:
    """Trending of the live ratings of the last week, overall and per category.

    Celery's every minute: the scores in Redis are brought up to date with what changed since the
    last refresh (core/trending.py), then each list is read from them. Every category gets its list
    document, empty when nothing was rated there lately, so a reader can tell "nothing is trending"
    from "never computed". When no rating was made or taken back on the site within the window,
    the lists are left as they are (Celery; also while another refresh holds the state) or computed
    from the newest batch reviews (``quiet_fallback``, the publish job; see
    :func:`batch_trending_events`), so a quiet site keeps the pipeline's lists rather than
    emptying them every minute. The publish job rebuilds the state (its batch load replaced the
    histories and the catalog) and, with Redis down, ranks the window's events in memory instead.
    """
    db = db if db is not None else mongo.get_db()
    now = time.time() if now is None else now
    names = {mongo.ALL, *(c["name"] for c in catalog.categories(db=db))}
    try:
        live = trending.update(db, now, rebuild=quiet_fallback, wait=quiet_fallback)
        lists = trending.top(db, names, limit, now) if live else {}
    except (redis.RedisError, trending.LockLost) as exc:
        if not quiet_fallback:
            raise
        log.warning("trending: no state in Redis (%s); ranking the window's rating events in memory", exc)
        trending.request_rebuild(db)  # the state missed this publish's rebuild: the next refresh does it
        # streamed: not the week's events in memory
        week = trending_votes.fold_events(trending_votes.live_events(db, now))
        live = week.newest is not None  # a rating made or taken back within the window
        lists = ranked(vote_scores(week.votes, now), names, limit, db) if live else {}
    if not live:
        if not quiet_fallback:
            return 0
        events, end, half_life = batch_trending_events(db)
        lists = ranked(trending_scores(events, end, half_life), names, limit, db)
    for name in names:
        stored_lists.write_popular(name, "trending", lists[name], db=db)
    list_state.announce_popular()
    return len(names)


def refresh_all(limit: int = 50, db: Database | None = None) -> dict[str, int]:
    """Both kinds of list; what the publish job runs before it makes a model current."""
    return {"popular": refresh_popular(limit, db=db),
            "trending": refresh_trending(limit, db=db, quiet_fallback=True)}
