"""What a deletion writes to a product document (core.shopper_controls._without_reviews): the
reviews it found on the pages subtracted, and a ``recount`` mark (nothing of the account) when a
page it read is older than the document (a load between its products and its pages)."""
from __future__ import annotations

from core.shopper_controls import LOAD_STAMP, RECOUNT, _without_reviews

S1, S2 = 1_000_001, 1_000_002


def _doc(ratings: list[float], stamp=S2) -> dict:
    return {"_id": "P", "n_reviews": len(ratings), "avg_rating": sum(ratings) / len(ratings),
            "rating_hist": {str(s): ratings.count(float(s)) for s in range(1, 6)}, "sample_summary": "",
            LOAD_STAMP: stamp}


def _review(rating: float) -> dict:
    return {"user_id": "u", "rating": rating, "summary": "mine"}


def test_pages_older_than_the_document_mark_it_for_the_loads_recount_and_keep_nothing_of_the_account():
    """An incremental load upserted page 1 (S2) but not yet page 2 (S1): both reviews come off,
    and the document is marked; nothing in the update names the account or its ratings."""
    update = _without_reviews(_doc([5.0, 4.0, 3.0]), [_review(4.0), _review(5.0)], [], {S1, S2})
    assert update == {"$set": {"n_reviews": 1, "rating_hist": {"1": 0, "2": 0, "3": 1, "4": 0, "5": 0},
                               "avg_rating": 3.0, RECOUNT: True}}


def test_a_star_the_document_has_none_of_leaves_its_histogram_as_it_is():
    update = _without_reviews(_doc([4.0, 3.0]), [_review(5.0)], [], {S1})
    assert update["$set"]["rating_hist"] == {"1": 0, "2": 0, "3": 1, "4": 1, "5": 0}


def test_no_load_running_writes_no_mark():
    update = _without_reviews(_doc([5.0, 3.0], stamp=S1), [_review(5.0)], [], {S1})
    assert update == {"$set": {"n_reviews": 1, "rating_hist": {"1": 0, "2": 0, "3": 1, "4": 0, "5": 0},
                               "avg_rating": 3.0}}
    assert _without_reviews(_doc([3.0]), [], [], {S1}) is None  # nothing found: nothing to write


def test_unstamped_pages_are_older_than_a_document_a_load_stamped():
    """The first load that stamps pages, on a database loaded before (pages without a stamp)."""
    assert RECOUNT in _without_reviews(_doc([5.0, 3.0]), [_review(5.0)], [], {None})["$set"]
    assert RECOUNT not in _without_reviews(_doc([5.0, 3.0], stamp="9f" * 16), [_review(5.0)], [], {None})["$set"]
