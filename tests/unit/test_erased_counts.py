"""What a deletion writes to a product document (core.shopper_controls._without_reviews), by the
stamps of the review pages it read: subtracted and remembered while a load is between its
products and its pages, re-based on the load's own pages afterwards."""
from __future__ import annotations

from core.shopper_controls import ERASED, LOAD_STAMP, _account, _without_reviews

S1, S2 = 1_000_001, 1_000_002


def _doc(ratings: list[float], stamp=S2, erased=None) -> dict:
    return {"_id": "P", "n_reviews": len(ratings), "avg_rating": sum(ratings) / len(ratings),
            "rating_hist": {str(s): ratings.count(float(s)) for s in range(1, 6)}, "sample_summary": "",
            LOAD_STAMP: stamp, **({ERASED: erased} if erased is not None else {})}


def _review(rating: float) -> dict:
    return {"user_id": "u", "rating": rating, "summary": "mine"}


def test_pages_partly_rewritten_by_the_load_remember_only_the_reviews_of_the_older_pages():
    """An incremental load upserted page 1 (S2) but not yet page 2 (S1): both reviews come off,
    only page 2's is remembered (page 1's review is off the load's own page for good)."""
    update = _without_reviews(_doc([5.0, 4.0, 3.0]), "u", [(_review(4.0), S2), (_review(5.0), S1)], [], {S1, S2})
    assert update == {"$set": {"n_reviews": 1, "rating_hist": {"1": 0, "2": 0, "3": 1, "4": 0, "5": 0},
                               "avg_rating": 3.0, ERASED: [{"a": _account("u"), "r": [5.0], "h": [5.0]}]}}


def test_a_star_the_document_has_none_of_is_remembered_as_not_taken_off_its_histogram():
    """The account's review changed since (5 stars on the old page, 4 in the load's document)."""
    update = _without_reviews(_doc([4.0, 3.0]), "u", [(_review(5.0), S1)], [], {S1})
    assert update["$set"][ERASED] == [{"a": _account("u"), "r": [5.0], "h": []}]
    assert update["$set"]["rating_hist"] == {"1": 0, "2": 0, "3": 1, "4": 1, "5": 0}


def test_the_loads_own_pages_re_base_the_account_and_keep_the_others_entries():
    other = {"a": _account("v"), "r": [2.0], "h": [2.0]}
    doc = _doc([4.0, 3.0], erased=[{"a": _account("u"), "r": [5.0], "h": []}, other])  # 5 (not in the hist) taken off
    doc["n_reviews"], doc["avg_rating"] = 1, 2.0
    update = _without_reviews(doc, "u", [(_review(4.0), S2)], [], {S2})
    assert update == {"$set": {"n_reviews": 1, "rating_hist": {"1": 0, "2": 0, "3": 1, "4": 0, "5": 0},
                               "avg_rating": 3.0, ERASED: [other]}}


def test_the_loads_own_pages_without_the_accounts_review_drop_the_entry_and_keep_the_subtraction():
    """Its review is beyond the 500 most helpful the pages keep: what was taken off stands."""
    doc = {**_doc([3.0]), ERASED: [{"a": _account("u"), "r": [5.0], "h": [5.0]}]}
    assert _without_reviews(doc, "u", [], [], {S2}) == {"$unset": {ERASED: ""}}
    assert _without_reviews(_doc([3.0]), "u", [], [], {S2}) is None  # nothing remembered: nothing to write


def test_no_load_running_remembers_nothing():
    update = _without_reviews(_doc([5.0, 3.0], stamp=S1), "u", [(_review(5.0), S1)], [], {S1})
    assert ERASED not in update["$set"] and "$unset" not in update
