"""Popular and trending lists per category: what new and anonymous visitors are shown.

Both the publish job (so the lists exist the moment a model goes live, not when Celery beat
first fires) and Celery's periodic tasks (kafka_workers/tasks.py) call these functions. Each
recomputes and replaces its lists by ``_id``, so running them twice, or from two places, is
harmless. After writing they bump a version in Redis (core.list_state), which the site's
cached copies of the lists are keyed by.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict

from pymongo.database import Database

from core import list_state, mongo

TRENDING_WINDOW_S = 7 * 86400
TRENDING_HALF_LIFE_S = 86400.0


def refresh_popular(limit: int = 50, db: Database | None = None) -> int:
    """Most-reviewed products overall and per category, from the batch load's catalog order."""
    written = 0
    for name in [mongo.ALL] + [c["name"] for c in mongo.categories(db=db)]:
        items = mongo.compute_popular(limit=limit, category=None if name == mongo.ALL else name, db=db)
        mongo.write_popular(name, "popular", items, db=db)
        written += 1
    list_state.announce_popular()
    return written


def trending_scores(events: list[dict], now: float) -> dict[str, float]:
    """Recent ratings weighted by recency (half-life one day) and by how positive they are."""
    scores: dict[str, float] = defaultdict(float)
    for e in events:
        age = max(0.0, now - float(e["ts"]))
        scores[e["product_id"]] += (float(e["rating"]) / 5.0) * math.pow(0.5, age / TRENDING_HALF_LIFE_S)
    return scores


def refresh_trending(limit: int = 50, db: Database | None = None) -> int:
    """Trending from the live rating events of the last week, overall and per category.

    Every category gets its list document, empty when nothing was rated there lately, so a
    reader can tell "nothing is trending" from "never computed".
    """
    db = db if db is not None else mongo.get_db()
    now = time.time()
    events = list(db[mongo.RATINGS].find({"ts": {"$gte": now - TRENDING_WINDOW_S}},
                                         {"product_id": 1, "rating": 1, "ts": 1}))
    scores = trending_scores(events, now)
    products = mongo.get_products(list(scores), db=db)
    by_cat: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for pid, score in scores.items():
        by_cat[mongo.ALL].append((pid, score))
        by_cat[products.get(pid, {}).get("category") or ""].append((pid, score))
    names = {mongo.ALL, *(c["name"] for c in mongo.categories(db=db))}
    for name in names:
        ranked = sorted(by_cat.get(name, []), key=lambda x: (-x[1], x[0]))[:limit]
        mongo.write_popular(name, "trending", [{"product_id": p, "score": round(s, 4)} for p, s in ranked], db=db)
    list_state.announce_popular()
    return len(names)


def refresh_all(limit: int = 50, db: Database | None = None) -> dict[str, int]:
    """Both kinds of list; what the publish job runs before it makes a model current."""
    return {"popular": refresh_popular(limit, db=db), "trending": refresh_trending(limit, db=db)}
