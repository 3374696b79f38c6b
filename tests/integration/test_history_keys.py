"""Any product id fits in a user's history (and "not interested" list), on FerretDB v1 and real MongoDB alike.

The history used to be a map keyed by product id; FerretDB v1 refuses a document key that
contains "." or starts with "$", so a rating of such a product was retried and dead-lettered by
the worker (and a batch load holding one failed). Both tests failed on that code: the first with
FerretDB's "invalid key" error, the second with the rating dead-lettered after 3 tries.
"""
from __future__ import annotations

import time

import pytest

from core import mongo, rating_history, shopper_controls, stored_lists
from core.events import RatingEvent
from realtime_support import processed_ids, publish_all, read_topic, wait_until, worker_stats
from realtime_support import rt, rt_catalog  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

ODD_IDS = ["RT.dot", "$lead", "a.b$c", "x.$y.z", "tail$"]


def test_history_keeps_product_ids_with_dots_and_dollars(rt_catalog):
    db = rt_catalog.db
    user = "rt-hk-direct"
    db[mongo.USER_HISTORY].delete_one({"_id": user})
    now = time.time()
    for k, pid in enumerate(ODD_IDS + ["RT00001"]):
        assert rating_history.add_to_history(user, pid, 1 + k % 5, now + k, db=db) is not None
    assert rating_history.user_ratings(user, db=db) == {pid: float(1 + k % 5) for k, pid in enumerate(ODD_IDS + ["RT00001"])}
    # newest wins, a removal stays removed against an older rating, per odd id too
    rating_history.add_to_history(user, "a.b$c", 5, now - 100, db=db)
    assert rating_history.user_ratings(user, db=db)["a.b$c"] == 3.0
    rating_history.remove_from_history(user, "x.$y.z", now + 50, db=db)
    rating_history.add_to_history(user, "x.$y.z", 2, now + 40, db=db)
    assert "x.$y.z" not in rating_history.user_ratings(user, db=db)
    assert rating_history.user_history(user, db=db)["$lead"] == (2.0, now + 1)
    assert rating_history.history_unless_deleted(user, db=db) == rating_history.user_ratings(user, db=db)
    # "not interested" is kept the same way (it was a map keyed by product id too)
    db[mongo.EXCLUSIONS].delete_one({"_id": user})
    for pid in ODD_IDS:
        shopper_controls.change_exclusion(user, pid, hide=True, ts=now, db=db)
    assert shopper_controls.exclusions(user, db=db) == set(ODD_IDS)
    assert shopper_controls.all_exclusions(db=db)[user] == set(ODD_IDS)


def test_worker_stores_a_rating_of_a_product_whose_id_has_a_dot(rt):
    pid = "RT.dot.1"  # the event contract allows "." in ids (a "$" never passes it)
    mongo.bulk_upsert(mongo.PRODUCTS, [{"_id": pid, "title": "A dotted id", "category": "Guitars",
                                        "n_reviews": 1, "avg_rating": 4.0}], db=rt.db)
    worker = rt.start_worker(WORKER_RETRY_DELAY_S="0.05")
    events = [RatingEvent(user_id="rt-hk-worker", product_id=rt.catalog.in_model[0], rating=4),
              RatingEvent(user_id="rt-hk-worker", product_id=pid, rating=5)]
    publish_all(events)
    stats = wait_until(lambda: (s := worker_stats(worker.pid)) and s["processed"] + s["dead-letter"] == 2 and s,
                       90, "both events handled")
    letters = read_topic(rt.dead_letter_topic, 0, timeout_s=2)
    assert stats["dead-letter"] == 0, [r.value[:300] for r in letters]
    assert processed_ids([e.event_id for e in events], rt.db) == {e.event_id for e in events}
    assert rating_history.user_ratings("rt-hk-worker", db=rt.db) == {rt.catalog.in_model[0]: 4.0, pid: 5.0}
    doc = stored_lists.get_recommendations("rt-hk-worker", db=rt.db)
    assert doc["source_event_id"] == events[-1].event_id
    assert pid not in {i["product_id"] for i in doc["items"]}
