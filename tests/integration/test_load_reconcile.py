"""mongo_load's reconciliation (spark_jobs.mongo_load.reconcile) with accounts deleted during the
load: a deletion excuses only its own reviews, on the products it reviewed.

Its allowance was one database-wide total (held >= loaded - the deleted accounts' reviews), so any
account deleted meanwhile hid as many lost reviews anywhere in the catalog.
"""
from __future__ import annotations

import time

import pytest

from core import mongo

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
    from spark_jobs.mongo_load import reconcile

    reviews = spark.createDataFrame(ROWS, "user_id string, product_id string")
    started = time.time()
    _held(own_db, {"p0": 2, "p1": 2, "p2": 2, "p3": 4})  # the load wrote every count
    assert reconcile(reviews, 10, 4, started) == {"reviews": 10, "products": 4}
    own_db[mongo.DELETED_USERS].insert_one({"_id": "gone", "deleted_at": started + 1})
    # its erasure took 2 of its 3 reviews off (the third product was written after it)
    _held(own_db, {"p0": 1, "p1": 1, "p2": 2, "p3": 4})
    assert reconcile(reviews, 10, 4, started) == {"reviews": 8, "products": 4, "reviews_erased_by_deletions": 2}
    # its erasure took nothing off, but 2 of alive's reviews of p3 (no deleted account's) are lost
    _held(own_db, {"p0": 2, "p1": 2, "p2": 2, "p3": 2})
    with pytest.raises(RuntimeError, match="8 reviews of 10"):
        reconcile(reviews, 10, 4, started)
    # a product the deleted account reviewed may not fall short by more than its review of it
    _held(own_db, {"p0": 0, "p1": 2, "p2": 2, "p3": 4})
    with pytest.raises(RuntimeError, match="8 reviews of 10"):
        reconcile(reviews, 10, 4, started)
