"""mongo_load's reconciliation (spark_jobs.mongo_load.reconcile) with accounts deleted during the
load: a deletion excuses only its own reviews, on the products it reviewed.

Its allowance was one database-wide total (held >= loaded - the deleted accounts' reviews), so any
account deleted meanwhile hid as many lost reviews anywhere in the catalog.
"""
from __future__ import annotations

import time

import pytest

from core import mongo
from spark_jobs.reconcile import Unbalanced

pytestmark = pytest.mark.integration

# clean reviews: "alive" has 7 (4 on p3, one on each of p0..p2), "gone" has 3 (p0..p2): 10
ROWS = [("alive", "p3")] * 4 + [("alive", f"p{i}") for i in range(3)] + [("gone", f"p{i}") for i in range(3)]


@pytest.fixture
def own_db(monkeypatch, settings, mongo_db):
    from realtime_support import own_database

    yield from own_database(monkeypatch, settings.mongo_db, "reconcile")


def _held(db, counts: dict[str, int]) -> None:
    db[mongo.PRODUCTS].delete_many({})
    db[mongo.PRODUCTS].insert_many([{"_id": p, "n_reviews": n} for p, n in counts.items()])


def test_a_deletion_during_the_load_excuses_only_its_own_reviews(spark, own_db):
    from spark_jobs.mongo_load import reconcile, review_totals

    reviews = spark.createDataFrame(ROWS, "user_id string, product_id string")
    loaded = review_totals(reviews)
    assert loaded[0] == 10
    started = time.time()
    _held(own_db, {"p0": 2, "p1": 2, "p2": 2, "p3": 4})  # the load wrote every count
    assert reconcile(reviews, *loaded, 4, started) == {"reviews": 10, "products": 4}
    own_db[mongo.DELETED_USERS].insert_one({"_id": "gone", "deleted_at": started + 1})
    # its erasure took 2 of its 3 reviews off (the third product was written after it)
    _held(own_db, {"p0": 1, "p1": 1, "p2": 2, "p3": 4})
    assert reconcile(reviews, *loaded, 4, started) == {"reviews": 8, "products": 4, "reviews_erased_by_deletions": 2}
    # its erasure took nothing off, but 2 of alive's reviews of p3 (no deleted account's) are lost
    _held(own_db, {"p0": 2, "p1": 2, "p2": 2, "p3": 2})
    with pytest.raises(Unbalanced, match="8 reviews of 10"):
        reconcile(reviews, *loaded, 4, started)
    # a product the deleted account reviewed may not fall short by more than its review of it
    _held(own_db, {"p0": 0, "p1": 2, "p2": 2, "p3": 4})
    with pytest.raises(Unbalanced, match="8 reviews of 10"):
        reconcile(reviews, *loaded, 4, started)


def test_a_review_counted_on_the_wrong_product_is_seen_though_the_total_adds_up(spark, own_db):
    """The counts were compared by their sum alone: a review lost on one product and counted twice
    on another (or moved) added up, and passed, with no deletion to excuse anything."""
    from spark_jobs.mongo_load import reconcile, review_totals

    from spark_jobs.mongo_load import product_weight

    from pyspark.sql import functions as F

    odd = ["B00\u00e9\u4e2d\U0001f600", "p0"]  # Spark's crc32 of a string is zlib's of its UTF-8
    assert review_totals(spark.createDataFrame([("u", p) for p in odd], "user_id string, product_id string")) == (
        2, sum(map(product_weight, odd)))
    # a string with an invalid UTF-8 byte reaches MongoDB (and _held) with it replaced, as Java decodes it
    invalid = spark.range(1).select(F.lit("u").alias("user_id"), F.unhex(F.lit("42ff00c3")).cast("string").alias("product_id"))
    stored = invalid.first()["product_id"]
    assert "\ufffd" in stored and review_totals(invalid) == (1, product_weight(stored))
    reviews = spark.createDataFrame(ROWS, "user_id string, product_id string")
    loaded, started = review_totals(reviews), time.time()
    _held(own_db, {"p0": 3, "p1": 1, "p2": 2, "p3": 4})  # one of p1's counted on p0
    with pytest.raises(Unbalanced, match="10 reviews of 10 .*not on the same products"):
        reconcile(reviews, *loaded, 4, started)
    # and beside a deletion: "gone" erased its p2 review, and one of alive's moved from p3 to p0
    own_db[mongo.DELETED_USERS].insert_one({"_id": "gone", "deleted_at": started + 1})
    _held(own_db, {"p0": 3, "p1": 2, "p2": 1, "p3": 3})
    with pytest.raises(Unbalanced, match="9 reviews of 10"):
        reconcile(reviews, *loaded, 4, started)
    _held(own_db, {"p0": 2, "p1": 2, "p2": 1, "p3": 4})  # the erasure alone: excused
    assert reconcile(reviews, *loaded, 4, started) == {"reviews": 9, "products": 4, "reviews_erased_by_deletions": 1}
