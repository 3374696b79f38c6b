"""The rule that decides which change of one product a history keeps (core.rating_history.change_key).

The live writers apply it one change at a time (apply_history_change) and the reload's Spark merge
sorts by it; at the same time a removal wins over a rating and the lower of two ratings wins, so
the result does not depend on the order the changes arrive in. The Spark side is checked against
the live side in tests/integration/test_history_ties_batch.py.
"""
from __future__ import annotations

from itertools import permutations

import pytest
from core import rating_history
from core.rating_history import apply_history_change, change_key

P = "B000TIE"


def _applied(changes: list[tuple[float | None, float]], start: dict[str, tuple[float, float]] | None = None
             ) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """A history (ratings, removed) after ``changes`` of product P, applied one by one in order."""
    ratings, removed = dict(start or {}), {}
    for rating, ts in changes:
        apply_history_change(ratings, removed, P, rating, ts)
    return ratings, removed


def test_the_order_puts_the_later_change_first_then_a_removal_then_the_lower_rating():
    assert change_key(1.0, 101.0) > change_key(None, 100.0) > change_key(1.0, 100.0) > change_key(5.0, 100.0)
    assert change_key(5.0, 100.5) > change_key(None, 100.0)
    assert change_key(None, 100.0) == change_key(None, 100.0)


@pytest.mark.parametrize("order", list(permutations([(5.0, 100.0), (None, 100.0)])), ids=["rate-unrate", "unrate-rate"])
def test_a_rating_and_a_removal_at_the_same_time_end_removed_in_either_order(order):
    ratings, removed = _applied(list(order))
    assert ratings == {} and removed == {P: 100.0}


def test_a_removal_at_the_same_time_as_a_batch_review_removes_it():
    ratings, removed = _applied([(None, 100.0)], start={P: (4.0, 100.0)})
    assert ratings == {} and removed == {P: 100.0}


@pytest.mark.parametrize("order", list(permutations([(5.0, 100.0), (2.0, 100.0), (4.0, 100.0)])))
def test_of_ratings_at_the_same_time_the_lowest_is_kept_in_any_order(order):
    assert _applied(list(order)) == ({P: (2.0, 100.0)}, {})


def test_every_order_of_arrival_ends_in_the_change_the_order_puts_first():
    changes = [(3.0, 100.0), (None, 100.0), (1.0, 99.0), (None, 98.0), (5.0, 100.0)]
    winner = max(changes, key=lambda c: change_key(*c))
    assert winner == (None, 100.0)
    for order in permutations(changes):
        assert _applied(list(order)) == ({}, {P: 100.0}), order


def test_an_older_change_does_not_overwrite_a_newer_one():
    ratings, removed = {P: (4.0, 200.0)}, {}
    assert not apply_history_change(ratings, removed, P, None, 199.0)
    assert not apply_history_change(ratings, removed, P, 1.0, 150.0)
    assert (ratings, removed) == ({P: (4.0, 200.0)}, {})
    ratings, removed = {}, {P: 200.0}
    assert not apply_history_change(ratings, removed, P, 5.0, 199.9)
    assert (ratings, removed) == ({}, {P: 200.0})


def test_a_redelivered_change_changes_nothing():
    ratings, removed = {}, {}
    assert apply_history_change(ratings, removed, P, 4.0, 100.0)
    assert not apply_history_change(ratings, removed, P, 4.0, 100.0)
    assert apply_history_change(ratings, removed, P, None, 101.0)
    assert not apply_history_change(ratings, removed, P, None, 101.0)
    assert (ratings, removed) == ({}, {P: 101.0})


def test_a_newer_change_still_wins():
    ratings, removed = {}, {P: 100.0}
    assert apply_history_change(ratings, removed, P, 3.0, 100.001)
    assert (ratings, removed) == ({P: (3.0, 100.001)}, {})
    assert rating_history.rating_values(ratings) == {P: 3.0}


def test_a_newer_removal_of_a_removed_product_is_kept_so_a_late_rating_between_them_stays_out():
    """rate t1, remove t2, remove t4, then a rating of t3 delivered late: the shopper's last word was
    the removal at t4. The newer removal time must count as a change (the writers save a history
    only when it changed), or the stored t2 would let the t3 rating in."""
    ratings, removed = _applied([(4.0, 1.0), (None, 2.0)])
    assert apply_history_change(ratings, removed, P, None, 4.0) is True
    assert removed == {P: 4.0}
    assert apply_history_change(ratings, removed, P, 5.0, 3.0) is False and ratings == {}


class _Collection:
    """A collection that logs which collection was read (the read order is the point)."""

    def __init__(self, name: str, docs: dict[str, dict], reads: list[str]) -> None:
        self.name, self.docs, self.reads = name, docs, reads

    def find_one(self, query: dict, projection: dict | None = None) -> dict | None:
        self.reads.append(self.name)
        return self.docs.get(query["_id"])


@pytest.mark.parametrize("history, deleted, expected", [
    ({"_id": "u", "ratings": [{"p": P, "r": 4.0, "t": 1.0}]}, False, "the history"),
    (None, False, {}),  # none yet: an empty history, which a writer then creates
    ({"_id": "u", "ratings": [{"p": P, "r": 4.0, "t": 1.0}]}, True, None),  # a reload brought it back
    (None, True, None),
])
def test_the_history_of_a_deleted_account_reads_as_none_and_is_read_first(history, deleted, expected):
    """The read pair of history_unless_deleted and change_history: the history before deleted_users,
    which an account is marked in before its data goes (so a deletion between the two is seen)."""
    from core import mongo

    reads: list[str] = []
    db = {mongo.USER_HISTORY: _Collection(mongo.USER_HISTORY, {"u": history} if history else {}, reads),
          mongo.DELETED_USERS: _Collection(mongo.DELETED_USERS, {"u": {"_id": "u"}} if deleted else {}, reads)}
    assert rating_history._history_doc_unless_deleted("u", db) == (history if expected == "the history" else expected)
    assert reads == [mongo.USER_HISTORY, mongo.DELETED_USERS]
    assert rating_history.history_unless_deleted("u", db) == (None if deleted else ({P: 4.0} if history else {}))
