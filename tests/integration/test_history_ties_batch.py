"""A rating and a removal of one product at the same time: the reload's Spark merge
(spark_jobs.mongo_load.user_history_docs) and the live path (apply_history_change, and the replay
after a reload, core.rating_history.reapply_live_ratings) keep the same thing.

Before they shared one rule (core.rating_history.change_key), the merge let the removal win and the live
path let the change applied last win, so a reload could bring back a product the worker had
removed, or drop one it had kept.
"""
from __future__ import annotations

import time
import uuid
import pytest

from core import mongo, rating_history
from core.events import RATE, UNRATE

pytestmark = pytest.mark.integration

# (user, product, rating, ts) of batch reviews, and (user, product, rating or None, ts) of live changes
REVIEWS = [("TIE-A", "P1", 4.0, 1000), ("TIE-B", "P3", 3.0, 1500), ("TIE-D", "P5", 2.0, 1700)]
LIVE = [
    ("TIE-A", "P1", 5.0, 2000.5), ("TIE-A", "P1", None, 2000.5),    # re-rated and removed at one instant
    ("TIE-B", "P3", None, 1500.0),                                   # removed at the batch review's own time
    ("TIE-C", "P4", 5.0, 3000.0), ("TIE-C", "P4", 2.0, 3000.0),     # two ratings at one instant
    ("TIE-C", "P2", None, 2500.25), ("TIE-C", "P2", 4.0, 2500.25),
    ("TIE-D", "P5", None, 1800.0), ("TIE-D", "P5", 5.0, 1900.0),     # no tie: rated again later
]


def _live_histories(order: list[tuple[str, str, float | None, float]]
                    ) -> dict[str, tuple[dict[str, tuple[float, float]], dict[str, float]]]:
    """Every user's (ratings, removals) after the batch reviews and then ``order`` went through
    apply_history_change."""
    state: dict[str, tuple[dict, dict]] = {}
    for user, pid, rating, ts in [(u, p, r, float(t)) for u, p, r, t in REVIEWS] + order:
        ratings, removed = state.setdefault(user, ({}, {}))
        rating_history.apply_history_change(ratings, removed, pid, rating, ts)
    return state


def test_the_reload_merge_and_the_live_path_keep_the_same_change(spark):
    """Removals included: a reload that dropped them let an older event of a removed product,
    applied after it (a dead letter replayed), bring the rating back."""
    from spark_jobs.mongo_load import user_history_docs

    reviews = spark.createDataFrame(REVIEWS, "user_id string, product_id string, rating double, ts long")
    live = spark.createDataFrame(LIVE, "user_id string, product_id string, rating double, ts double")
    batch = {r["_id"]: rating_history.history_entries(r.asDict(recursive=True))
             for r in user_history_docs(reviews, live).collect()}
    assert batch == {"TIE-A": ({}, {"P1": 2000.5}), "TIE-B": ({}, {"P3": 1500.0}),
                     "TIE-C": ({"P4": (2.0, 3000.0)}, {"P2": 2500.25}), "TIE-D": ({"P5": (5.0, 1900.0)}, {})}
    for order in (LIVE, LIVE[::-1]):  # each same-time pair in both orders of arrival
        assert _live_histories(order) == batch, order
    ratings, removed = batch["TIE-A"]  # an older rating of P1 replayed after the reload: still removed
    assert not rating_history.apply_history_change(ratings, removed, "P1", 5.0, 1999.0) and ratings == {}


def test_the_replay_after_a_reload_keeps_a_same_time_removal(mongo_db):
    """The reload's merge dropped the product (the removal wins); the replay of the live changes
    stored since the reload began must not bring it back, whichever of the two it reads last."""
    since = time.time()
    users = [f"TIE-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        for user in users:  # the new generation, as user_history_docs built it: no P1, another rating kept
            mongo_db[mongo.USER_HISTORY].insert_one(rating_history.history_doc(user, {"P2": (3.0, 900.0)}, {}))
        rate = {"action": RATE, "rating": 5, "ts": 2000.5, "product_id": "P1"}
        unrate = {"action": UNRATE, "rating": 0, "ts": 2000.5, "product_id": "P1"}
        for user, stored in zip(users, ([rate, unrate], [unrate, rate])):  # stored (and so read) in both orders
            for change in stored:
                mongo_db[mongo.RATINGS].insert_one(rating_history.rating_doc(
                    {"event_id": uuid.uuid4().hex, "user_id": user, **change}, state="processed"))
        assert rating_history.reapply_live_ratings(since, db=mongo_db) == 0
        for user in users:
            assert rating_history.user_ratings(user, db=mongo_db) == {"P2": 3.0}, user
    finally:  # the session's database: a later full reload would count these users' live ratings
        mongo_db[mongo.RATINGS].delete_many({"user_id": {"$in": users}})
        mongo_db[mongo.USER_HISTORY].delete_many({"_id": {"$in": users}})


def test_the_replay_after_a_reload_takes_a_listed_review_a_live_rating_ties_off_the_list(mongo_db):
    """A live rating stored during the reload, as late as a listed batch review of the product (the
    same second, or the same time and rating): the reload's merge would have let it win (not listed),
    and the window's events hold it as a vote. The replay took the review for it (whole seconds)
    and left it listed, so trending's refresh left out a vote its rebuild counted."""
    since = time.time()
    users = {f"TIE-{uuid.uuid4().hex[:8]}": ts for ts in (2000.0, 2000.4)}
    try:
        for user, ts in users.items():
            mongo_db[mongo.USER_HISTORY].insert_one(rating_history.history_doc(user, {"P7": (4.0, 2000.0)}, {},
                                                                               batch=["P7"]))
            mongo_db[mongo.RATINGS].insert_one(rating_history.rating_doc(
                {"event_id": uuid.uuid4().hex, "user_id": user, "product_id": "P7", "rating": 4, "ts": ts},
                state="processed"))
        rating_history.reapply_live_ratings(since, db=mongo_db)
        for user, ts in users.items():
            doc = mongo_db[mongo.USER_HISTORY].find_one({"_id": user})
            assert rating_history.BATCH not in doc and rating_history.history_entries(doc)[0] == {"P7": (4.0, ts)}
    finally:  # the session's database: a later full reload would count these users' live ratings
        mongo_db[mongo.RATINGS].delete_many({"user_id": {"$in": list(users)}})
        mongo_db[mongo.USER_HISTORY].delete_many({"_id": {"$in": list(users)}})


def test_the_replay_after_a_reload_leaves_a_listed_review_that_wins_a_tie_alone(mongo_db):
    """A live rating as late as a listed batch review but higher: the review wins the tie (the lower
    rating, change_key), as in the reload's merge. The replay counted it missing on every pass (the
    user's lock taken and trending marked each time, all ``max_passes`` run) though nothing changed."""
    since, user = time.time(), f"TIE-{uuid.uuid4().hex[:8]}"
    try:
        mongo_db[mongo.USER_HISTORY].insert_one(rating_history.history_doc(user, {"P8": (2.0, 2000.0)}, {},
                                                                           batch=["P8"]))
        mongo_db[mongo.RATINGS].insert_one(rating_history.rating_doc(
            {"event_id": uuid.uuid4().hex, "user_id": user, "product_id": "P8", "rating": 4, "ts": 2000.0},
            state="processed"))
        before = mongo_db[mongo.USER_HISTORY].find_one({"_id": user})
        assert rating_history.reapply_live_ratings(since, db=mongo_db) == 0
        assert mongo_db[mongo.USER_HISTORY].find_one({"_id": user}) == before
    finally:  # the session's database: a later full reload would count this user's live rating
        mongo_db[mongo.RATINGS].delete_many({"user_id": user})
        mongo_db[mongo.USER_HISTORY].delete_many({"_id": user})


def test_the_reload_lists_the_batch_reviews_recent_enough_to_fall_within_trending_s_window(spark):
    """core.rating_history.BATCH: the reviews dated ``recent_from`` or later, not one a live rating
    replaced (nor one it ties with exactly), not an older one, never a live rating."""
    from spark_jobs.mongo_load import user_history_docs

    reviews = spark.createDataFrame([("B-1", "old", 5.0, 100), ("B-1", "recent", 4.0, 5000),
                                     ("B-1", "replaced", 3.0, 5000), ("B-1", "tied", 2.0, 5000),
                                     ("B-2", "old", 5.0, 100)],
                                    "user_id string, product_id string, rating double, ts long")
    live = spark.createDataFrame([("B-1", "replaced", 5.0, 6000.0), ("B-1", "tied", 2.0, 5000.0),
                                  ("B-1", "new", 1.0, 6000.0)],
                                 "user_id string, product_id string, rating double, ts double")
    docs = {r["_id"]: r.asDict(recursive=True) for r in user_history_docs(reviews, live, recent_from=1000).collect()}
    assert sorted(docs["B-1"][rating_history.BATCH]) == ["recent"] and docs["B-2"][rating_history.BATCH] is None
    assert set(rating_history.history_entries(docs["B-1"])[0]) == {"old", "recent", "replaced", "tied", "new"}


@pytest.fixture
def own_db(monkeypatch, settings, mongo_db):
    from realtime_support import own_database

    yield from own_database(monkeypatch, settings.mongo_db, "batch_list")


def test_a_history_listing_no_recent_batch_review_is_stored_without_the_list(spark, own_db):
    """As core.rating_history.history_doc stores it: the load wrote ``batch: []`` into every
    history. An upsert (an incremental load) removes a list stored before that is now empty."""
    from spark_jobs.mongo_load import reload_collection, upsert_collection, user_history_docs

    reviews = spark.createDataFrame([("L-1", "recent", 4.0, 5000), ("L-2", "old", 5.0, 100)],
                                    "user_id string, product_id string, rating double, ts long")
    live = spark.createDataFrame([], "user_id string, product_id string, rating double, ts double")
    reload_collection(user_history_docs(reviews, live, recent_from=1000), mongo.USER_HISTORY)
    stored = {d["_id"]: d for d in own_db[mongo.USER_HISTORY].find({})}
    assert stored["L-1"][rating_history.BATCH] == ["recent"]
    assert set(stored["L-2"]) == set(rating_history.history_doc("L-2", {"old": (5.0, 100.0)}, {})) == {
        "_id", "ratings", "removed"}
    upsert_collection(user_history_docs(reviews, live, recent_from=9000), mongo.USER_HISTORY)  # none recent now
    assert [set(d) for d in own_db[mongo.USER_HISTORY].find({})] == [{"_id", "ratings", "removed"}] * 2
