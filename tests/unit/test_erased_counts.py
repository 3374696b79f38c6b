"""What a deletion writes to a product document (core.erasure._without_reviews): the
reviews it found on the pages subtracted, and the deletion's mark (its erasure token, the
document's stamp, the words to unlist), nothing else of the account; when a page it read is older
than the document (a load between its products and its pages), the product listed in ``recounts``
for the load's eraser (core.erasure._subtract_reviews), nothing more on the document."""
from __future__ import annotations

from typing import Any

import pytest

from core.erasure import _TRIES, LOAD_STAMP, LoadContention, _pages_older, _subtract_reviews, _without_reviews

S1, S2 = 1_000_001, 1_000_002


def _doc(ratings: list[float], stamp=S2) -> dict:
    return {"_id": "P", "n_reviews": len(ratings), "avg_rating": sum(ratings) / len(ratings),
            "rating_hist": {str(s): ratings.count(float(s)) for s in range(1, 6)}, "sample_summary": "",
            LOAD_STAMP: stamp}


def _review(rating: float) -> dict:
    return {"user_id": "u", "rating": rating, "summary": "mine"}


class _Collection:
    """A collection's ``find_one`` (its one document) and ``update_one`` (each call kept in a log
    shared by the collections, all matched)."""

    def __init__(self, name: str, log: list, doc: dict | None = None) -> None:
        self.name, self.log, self.doc = name, log, doc

    def find_one(self, *_args: Any) -> dict | None:
        return self.doc

    def update_one(self, query: dict, update: dict, upsert: bool = False):
        self.log.append((self.name, query, update, upsert))
        return type("Result", (), {"matched_count": 1})()


MARK = "erasing_t"  # the deletion's mark: ERASING and its account's erasure token


def _subtract(doc: dict, stamps: set, log: list) -> tuple:
    """A deletion of ``u`` (its 5-star review found on the pages of ``stamps``, the word "mine" only
    its summary gave the product): whether it changed the document, the words of an earlier mark,
    whether the document carries the mark."""
    return _subtract_reviews("P", [_review(5.0)], [], stamps, _Collection("products", log, doc),
                             _Collection("recounts", log), lambda: None, mark=MARK, gone={"mine"})


def _subtracted(doc: dict, stamps: set) -> list:
    """What :func:`_subtract` writes, in order."""
    log: list = []
    assert _subtract(doc, stamps, log) == (True, set(), True)
    return log


def test_pages_older_than_the_document_list_it_for_the_loads_recount_and_keep_nothing_of_the_account():
    """An incremental load upserted page 1 (S2) but not yet page 2 (S1): the product is listed in
    ``recounts`` (by the document's stamp) before the document's update, which holds the counts
    only: nothing names the account, its ratings or the recount."""
    assert _subtracted(_doc([5.0, 3.0]), {S1, S2}) == [
        ("recounts", {"_id": "P"}, {"$set": {"stamp": S2}}, True),
        ("products", {"_id": "P", LOAD_STAMP: S2},
         {"$set": {"n_reviews": 1, "rating_hist": {"1": 0, "2": 0, "3": 1, "4": 0, "5": 0}, "avg_rating": 3.0,
                   MARK: {"s": S2, "w": ["mine"]}}}, False)]


def test_a_document_marked_by_an_earlier_run_of_the_deletion_is_not_subtracted_again():
    """Stopped after the document and before its pages, the deletion runs again and finds its
    review still on the pages: the mark (of the document's own stamp) says it was subtracted, and
    gives the words to unlist; nothing is written, and the product counts as changed (by the
    deletion: the site forgets its cached pages by that)."""
    log: list = []
    doc = {**_doc([3.0]), MARK: {"s": S2, "w": ["mine"]}}
    assert _subtract(doc, {S2}, log) == (True, {"mine"}, True)
    assert log == []


def test_a_mark_of_an_earlier_stamp_is_void():
    """A load rewrote the document since the mark (it counts the review again, from its pages):
    the review comes off again, and the mark is the new stamp's; its words are kept (the load may
    not have rebuilt the search index) and given back to unlist."""
    log: list = []
    doc = {**_doc([5.0, 3.0]), MARK: {"s": S1, "w": ["old"]}}
    assert _subtract(doc, {S2}, log) == (True, {"old"}, True)
    assert [(name, update["$set"]["n_reviews"], update["$set"][MARK]) for name, _, update, _ in log] == [
        ("products", 1, {"s": S2, "w": ["mine", "old"]})]


def test_pages_of_the_documents_own_load_list_nothing():
    assert [name for name, *_ in _subtracted(_doc([5.0, 3.0], stamp=S1), {S1})] == ["products"]


def test_a_star_the_document_has_none_of_leaves_its_histogram_as_it_is():
    update = _without_reviews(_doc([4.0, 3.0]), [_review(5.0)], [])
    assert update["$set"]["rating_hist"] == {"1": 0, "2": 0, "3": 1, "4": 1, "5": 0}


def test_the_reviews_found_come_off_the_counts():
    update = _without_reviews(_doc([5.0, 3.0], stamp=S1), [_review(5.0)], [])
    assert update == {"$set": {"n_reviews": 1, "rating_hist": {"1": 0, "2": 0, "3": 1, "4": 0, "5": 0},
                               "avg_rating": 3.0}}
    assert _without_reviews(_doc([3.0]), [], []) is None  # nothing found: nothing to write


def test_unstamped_pages_are_older_than_a_document_a_load_stamped():
    """The first load that stamps pages, on a database loaded before (pages without a stamp)."""
    assert _pages_older({None}, S2)
    assert not _pages_older({None}, "9f" * 16)


class _Rewritten(_Collection):
    """A collection a load rewrites between every read and write: no conditional write matches."""

    def update_one(self, query: dict, update: dict, upsert: bool = False):
        super().update_one(query, update, upsert)
        return type("Result", (), {"matched_count": 0})()


def test_a_product_a_load_keeps_rewriting_stops_the_deletion_as_a_temporary_failure():
    """After ``_TRIES`` missed writes the deletion gives up with ``LoadContention``, one of the
    ``INTERRUPTIONS`` the site leaves to Celery's sweep (accounts.deletion), not any RuntimeError's 500."""
    log: list = []
    with pytest.raises(LoadContention, match="rewritten by a load"):
        _subtract_reviews("P", [_review(5.0)], [], {S2}, _Rewritten("products", log, _doc([5.0, 3.0])),
                          _Collection("recounts", log), lambda: None, mark=MARK, gone=())
    assert [name for name, *_ in log] == ["products"] * _TRIES

