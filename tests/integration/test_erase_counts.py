"""An account's reviews come off a product's counts once, whichever pages and product document a
deletion meets while a load writes them (core.shopper_controls._subtract_reviews).

A load (spark_jobs/mongo_load.py) writes the products, then the review pages, then erases again
every account deleted meanwhile. A deletion in between found the account's reviews on the previous
pages and took them off the load's products, which count them; the eraser found them again on the
load's pages and took them off a second time. Here the load's writes are made directly, as it makes
them (a new generation switched in, or an upsert by ``_id``; each product document with the load's
``load_stamp``), without Spark; its reconciliation runs on the reviews it loaded.
"""
from __future__ import annotations

import time

import pytest

from core import mongo, rating_history, shopper_controls
from core.shopper_controls import LOAD_STAMP

pytestmark = pytest.mark.integration

Review = tuple[str, float, float]  # (user, rating, ts)


@pytest.fixture
def own_db(monkeypatch, settings, mongo_db):
    from realtime_support import own_database

    yield from own_database(monkeypatch, settings.mongo_db, "erase_counts")


def _product(pid: str, stamp: str, reviews: list[Review]) -> dict:
    """The product document a load writes from ``reviews`` (no quoted summary: counts only)."""
    n = len(reviews)
    return {"_id": pid, "title": pid, "category": "c", "categories": [], "brand": "", "title_generated": False,
            "sample_summary": "", "n_reviews": n, "avg_rating": round(sum(r for _, r, _ in reviews) / n, 3) if n else 0.0,
            "rating_hist": {str(s): sum(1 for _, r, _ in reviews if r == s) for s in range(1, 6)}, LOAD_STAMP: stamp}


def _pages(pid: str, reviews: list[Review]) -> dict:
    return {"_id": f"{pid}:1", "pages": 1, "items": [
        {"user_id": u, "rating": r, "ts": t, "summary": f"{u} on {pid}", "helpful_votes": 0} for u, r, t in reviews]}


def _reload(db, collection: str, docs: list[dict]) -> None:
    """A full load's write: a new generation, switched in (core.mongo)."""
    staging = mongo.replace_collection_start(collection, db=db)
    mongo.raw_collection(db, staging).insert_many(docs)
    mongo.replace_collection_finish(collection, db=db, staging=staging)


def _upsert(db, collection: str, docs: list[dict]) -> None:
    """An incremental load's write: every field set by ``_id``."""
    mongo.set_by_ids(collection, {d["_id"]: {k: v for k, v in d.items() if k != "_id"} for d in docs}, db=db)


def _history(db, user: str, loaded: dict[str, list[Review]]) -> None:
    ratings = [{"p": pid, "r": r, "t": t} for pid, reviews in loaded.items() for u, r, t in reviews if u == user]
    db[mongo.USER_HISTORY].replace_one({"_id": user}, {"_id": user, "ratings": ratings}, upsert=True)


def _delete(db, user: str) -> None:
    """The site's deletion: recorded, then erased (recsite/accounts/deletion.py)."""
    rating_history.record_deleted_user(user, db=db)
    shopper_controls.delete_user_data(user, db=db)


def _erase(db, loaded: dict[str, list[Review]], since: float) -> None:
    """The load's eraser (``erase_accounts_deleted_since``): each account deleted since ``since``,
    with the products the load had its reviews of; then the records go."""
    for user in sorted(rating_history.deleted_user_ids(db=db, since=since)):
        shopper_controls.delete_user_data(user, db=db, indexed={
            pid: [f"{user} on {pid}"] for pid, reviews in loaded.items() if any(u == user for u, _, _ in reviews)})
    shopper_controls.forget_count_erasures(before=time.time(), db=db)


def _reconciles(spark, loaded: dict[str, list[Review]], since: float) -> dict:
    """The load's reconciliation (raises when a product falls short by more than the deleted
    accounts' reviews of it)."""
    from spark_jobs.mongo_load import reconcile, review_totals

    rows = [(u, pid) for pid, reviews in loaded.items() for u, _, _ in reviews]
    reviews = spark.createDataFrame(rows, "user_id string, product_id string")
    return reconcile(reviews, *review_totals(reviews), len(loaded), since)


def _counts(db, pids) -> dict[str, tuple]:
    return {p: (d["n_reviews"], d["rating_hist"], d["avg_rating"])
            for p in pids for d in [db[mongo.PRODUCTS].find_one({"_id": p})]}


def _without(loaded: dict[str, list[Review]], *users: str) -> dict[str, tuple]:
    """The counts a load without ``users``' reviews writes."""
    return {p: (d["n_reviews"], d["rating_hist"], d["avg_rating"]) for p, reviews in loaded.items()
            for d in [_product(p, "", [x for x in reviews if x[0] not in users])]}


def test_a_deletion_between_the_products_and_the_pages_is_subtracted_once(spark, own_db):
    """Full load. The account is deleted after the load's products went live, before its pages:
    the site finds its reviews on the previous pages and takes them off the load's products (their
    stamp recorded with them); the eraser then finds them on the load's pages and takes off only
    those not recorded, here a second review of the account only the load's pages hold (main took
    every one off again: P at 1 of 2, R at 1 of 2; a list of the accounts taken off, skipping them,
    kept that 4-star review in P's average)."""
    db = own_db
    before = {"P": [("u", 5.0, 100.0), ("a", 3.0, 50.0), ("b", 2.0, 60.0)], "R": [("u", 4.0, 70.0), ("c", 1.0, 80.0)]}
    _reload(db, mongo.PRODUCTS, [_product(p, "s1", r) for p, r in before.items()])
    _reload(db, mongo.PRODUCT_REVIEWS, [_pages(p, r) for p, r in before.items()])
    _history(db, "u", before)
    started = time.time()
    loaded = {"P": before["P"] + [("u", 4.0, 300.0)], "R": before["R"] + [("d", 5.0, 90.0)]}

    _reload(db, mongo.PRODUCTS, [_product(p, "s2", r) for p, r in loaded.items()])
    _delete(db, "u")
    _reload(db, mongo.PRODUCT_REVIEWS, [_pages(p, r) for p, r in loaded.items()])
    assert _reconciles(spark, loaded, started)["reviews_erased_by_deletions"] == 2  # as the site took off
    _erase(db, loaded, started)

    assert _counts(db, loaded) == _without(loaded, "u")
    assert list(db[mongo.COUNT_ERASURES].find({})) == []
    _delete(db, "u")  # again (the worker's delete_account): nothing left to take off
    assert _counts(db, loaded) == _without(loaded, "u")


def test_deletions_before_during_and_after_an_incremental_load_are_each_subtracted_once(spark, own_db):
    """Incremental load (upserts by ``_id``), each product once:
    - P: ``u``'s deletion reaches it before the load's products (the old document, its stamp
      recorded): the eraser takes off everything it finds on the load's pages;
    - Q: the same deletion, still running, reaches it after the load's products, before its pages
      (the load's document, the old pages): the eraser takes off nothing more (main: Q at 0 of 1);
    - S: ``v`` deletes the account after the load's pages: the site takes its review off the load's
      document by the load's pages, and the eraser finds nothing;
    - a repeated deletion of both changes nothing.
    """
    from core.shopper_controls import _erase_reviews  # delete_user_data's step, one product each

    db = own_db
    before = {"P": [("u", 2.0, 10.0), ("a", 5.0, 11.0)], "Q": [("u", 1.0, 20.0), ("b", 4.0, 21.0)],
              "S": [("v", 3.0, 30.0), ("c", 4.0, 31.0), ("d", 4.0, 32.0)]}
    _upsert(db, mongo.PRODUCTS, [_product(p, "s1", r) for p, r in before.items()])
    _upsert(db, mongo.PRODUCT_REVIEWS, [_pages(p, r) for p, r in before.items()])
    _history(db, "u", before)
    _history(db, "v", before)
    started = time.time()
    loaded = {p: r + [(f"new-{p}", 5.0, 40.0)] for p, r in before.items()}  # each touched by the new category

    rating_history.record_deleted_user("u", db=db)
    _erase_reviews("P", "u", db)
    _upsert(db, mongo.PRODUCTS, [_product(p, "s2", r) for p, r in loaded.items()])
    _erase_reviews("Q", "u", db)
    _upsert(db, mongo.PRODUCT_REVIEWS, [_pages(p, r) for p, r in loaded.items()])
    _delete(db, "v")
    assert _reconciles(spark, loaded, started)["reviews_erased_by_deletions"] == 2  # Q's and S's
    _erase(db, loaded, started)

    assert _counts(db, loaded) == _without(loaded, "u", "v")
    assert list(db[mongo.COUNT_ERASURES].find({})) == []
    _delete(db, "u")
    _delete(db, "v")
    assert _counts(db, loaded) == _without(loaded, "u", "v")
