"""core.popular: the lists the publish job and Celery write, on a scratch database of the real server.

The trending fallback for a quiet site (no live ratings yet) ranks the newest weeks of the batch
reviews; Celery, finding no live ratings, leaves whatever lists exist instead of emptying them.
"""
from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.integration
DAY = 86400.0


@pytest.fixture
def scratch(mongo_db, settings):
    from core import mongo

    from core import trending

    db = mongo.get_client()[f"{settings.mongo_db}_popular"]
    trending.drop_state(db.name)  # the trending state in Redis is per database name, as the lists
    yield db
    mongo.get_client().drop_database(db.name)
    trending.drop_state(db.name)


def _live(db, event: dict) -> None:
    """A site event as a worker applies it: stored in ``ratings`` and applied to the history
    (which marks the user for the trending refresh)."""
    from core import rating_history

    rating_history.store_rating(event, db=db)
    rating = rating_history.history_rating(event.get("action", "rate"), event["rating"])
    rating_history.change_history(event["user_id"], event["product_id"], rating, event["ts"], db=db)


def _catalog(db, reviews: list[tuple[str, str, int, float]]) -> None:
    """Products, recent reviews and the catalog index the load job would write, for (user, product, stars, ts)."""
    from core import mongo

    products = sorted({p for _, p, _, _ in reviews})
    category = {p: ("Drums" if p.startswith("d") else "Guitars") for p in products}
    db[mongo.PRODUCTS].insert_many([{"_id": p, "title": p.upper(), "category": category[p],
                                     "n_reviews": sum(1 for r in reviews if r[1] == p)} for p in products])
    db[mongo.RECENT_REVIEWS].insert_many([{"_id": f"{u}|{p}", "user_id": u, "product_id": p, "rating": r, "ts": ts}
                                   for u, p, r, ts in reviews])
    order = sorted(products, key=lambda p: (-sum(1 for r in reviews if r[1] == p), p))
    db[mongo.CATALOG_INDEX].insert_many(
        [{"_id": "categories", "items": [{"name": "Guitars", "n_products": 3}, {"name": "Drums", "n_products": 2}]},
         {"_id": "all:0", "ids": order}, {"_id": "all:count", "n": len(order)},
         *[{"_id": f"{c}:0", "ids": [p for p in order if category[p] == c]} for c in ("Guitars", "Drums")]])


def test_publish_fallback_ranks_the_newest_batch_reviews_when_the_site_is_quiet(scratch):
    from core import popular, stored_lists

    end = 1_400_000_000.0  # the data's newest review, years ago: live-window logic would find nothing
    reviews = [("u1", "g-old", 5, end - 60 * DAY), ("u2", "g-old", 5, end - 50 * DAY),  # outside 4 weeks
               ("u1", "g-new", 5, end), ("u2", "g-new", 4, end - DAY),
               ("u3", "g-mid", 5, end - 14 * DAY), ("u1", "d-new", 3, end - 2 * DAY),
               ("u2", "d-old", 5, end - 40 * DAY)]
    _catalog(scratch, reviews)
    assert popular.refresh_all(limit=10, db=scratch) == {"popular": 3, "trending": 3}
    trending = [(i["product_id"], i["score"]) for i in stored_lists.get_popular("all", "trending", db=scratch)]
    # u1 rated two products in the window: each gets half of u1's vote
    expected = {"g-new": 1 / 2 + 0.8 * 0.5 ** (1 / 7), "g-mid": 0.25, "d-new": 0.6 * 0.5 ** (2 / 7) / 2}
    assert [p for p, _ in trending] == sorted(expected, key=lambda p: -expected[p])
    assert all(math.isclose(s, expected[p], abs_tol=1e-4) for p, s in trending)
    assert [i["product_id"] for i in stored_lists.get_popular("Drums", "trending", db=scratch)] == ["d-new"]
    assert [i["product_id"] for i in stored_lists.get_popular("Guitars", "popular", db=scratch)] == ["g-new", "g-old", "g-mid"]

    # Celery on a quiet site: nothing live to rank, so the publish job's lists stay
    assert popular.refresh_trending(limit=10, db=scratch) == 0
    assert [p for p, _ in trending] == [i["product_id"] for i in stored_lists.get_popular("all", "trending", db=scratch)]


def test_live_ratings_take_over_from_the_batch_fallback(scratch):
    import time

    from core import popular, stored_lists

    now = time.time()
    _catalog(scratch, [("u1", "g-a", 5, now - 400 * DAY), ("u2", "d-b", 5, now - 400 * DAY)])
    popular.refresh_all(limit=10, db=scratch)
    assert {i["product_id"] for i in stored_lists.get_popular("all", "trending", db=scratch)} == {"g-a", "d-b"}
    _live(scratch, {"event_id": "e1", "user_id": "site-1", "product_id": "d-b", "rating": 5, "ts": now})
    # a rating taken back counts for nothing (its removal is stored as an event too)
    _live(scratch, {"event_id": "e2", "user_id": "site-2", "product_id": "g-a", "rating": 5, "ts": now - 5})
    _live(scratch, {"event_id": "e3", "user_id": "site-2", "product_id": "g-a", "rating": 0, "ts": now,
                    "action": "unrate"})
    for quiet_fallback in (False, True):  # Celery and publish agree once the site has live ratings
        assert popular.refresh_trending(limit=10, db=scratch, quiet_fallback=quiet_fallback) == 3
        assert [i["product_id"] for i in stored_lists.get_popular("all", "trending", db=scratch)] == ["d-b"]
        assert stored_lists.get_popular("Guitars", "trending", db=scratch) == []

