"""A rebuild folds the week's rating events as the scan reads them (core.trending_votes.fold_events):
per (user, product) the latest change only, the lock renewed every CHUNK events and users."""
from __future__ import annotations

import weakref
from typing import Iterator

import pytest

from core import trending_votes


class _Event(dict):
    """A rating event that can be watched (a weak reference): the fold must not keep it."""


# (user, product, rating, ts, action), in the order the scan returns them
SCAN = [
    ("u", "tie-rate-first", 5, 100.0, "rate"), ("u", "tie-rate-first", 0, 100.0, "unrate"),
    ("u", "tie-unrate-first", 0, 100.0, "unrate"), ("u", "tie-unrate-first", 4, 100.0, "rate"),
    ("u", "two-ratings", 4, 90.0, "rate"), ("u", "two-ratings", 2, 90.0, "rate"),  # at one ts, the lower
    ("v", "re-rated", 5, 50.0, "rate"), ("v", "re-rated", 3, 60.0, "rate"),
    ("v", "rated-again", 0, 40.0, "unrate"), ("v", "rated-again", 4, 70.0, "rate"),
]
WANT = {"u": [("two-ratings", 2.0, 90.0)], "v": [("rated-again", 4.0, 70.0), ("re-rated", 3.0, 60.0)]}


class _Scan:
    """A generator of events, made one at a time (no list of them exists), which counts how many it
    has given and keeps a weak reference to each."""

    def __init__(self, rows: list[tuple]) -> None:
        self.rows, self.given, self.refs = rows, 0, []

    def __iter__(self) -> Iterator[dict]:
        for user, product, rating, ts, action in self.rows:
            e = _Event(user_id=user, product_id=product, rating=rating, ts=ts, action=action)
            self.refs.append(weakref.ref(e))
            self.given += 1
            yield e
            del e

    def alive(self) -> int:
        return sum(ref() is not None for ref in self.refs)


def test_a_generator_of_events_gives_the_histories_votes_and_ties_go_by_change_key():
    """A guard (the old, list-holding code passes it too): a generator is read once, and a rating
    and its removal at one ts leave no vote whichever comes first."""
    assert trending_votes.votes_from_events(iter(_Scan(SCAN))) == WANT
    assert trending_votes.votes_from_events(iter(_Scan(list(reversed(SCAN))))) == WANT


def test_the_fold_renews_every_chunk_of_events_and_of_users_and_keeps_no_event(monkeypatch):
    """Fails on the code before (votes_from_events took no callback, fold_events did not exist)."""
    monkeypatch.setattr(trending_votes, "CHUNK", 3)
    scan = _Scan(SCAN)
    calls: list[tuple[int, int]] = []  # (events given so far, events still alive) at each call
    got = trending_votes.votes_from_events(iter(scan), lambda: calls.append((scan.given, scan.alive())))
    assert got == WANT
    assert [given for given, _alive in calls] == [3, 6, 9]  # two users: fewer than CHUNK
    assert all(alive <= 1 for _given, alive in calls)  # at most the event being folded
    # seven users of one event each: the events' calls, then one every CHUNK users
    many = _Scan([(f"w{i}", "p", 5, float(i), "rate") for i in range(7)])
    calls = []
    trending_votes.votes_from_events(iter(many), lambda: calls.append((many.given, many.alive())))
    assert [given for given, _alive in calls] == [3, 6, 7, 7]


def test_the_fold_gives_the_newest_event_rating_or_removal():
    """What ``live_until`` and core.popular's "is anything live" are read from, without a list."""
    week = trending_votes.fold_events(iter(_Scan(SCAN + [("x", "p", 0, 120.0, "unrate")])))
    assert week.newest == 120.0 and week.votes == WANT  # the newest is a removal: still live
    empty = trending_votes.fold_events(iter(()))
    assert empty.newest is None and empty.votes == {}


@pytest.mark.parametrize("order", [1, -1])
def test_a_removal_wins_a_tie_at_the_chunk_boundary(monkeypatch, order):
    """A guard: the rating and its removal on either side of a renewal are still one change."""
    monkeypatch.setattr(trending_votes, "CHUNK", 1)
    rows = [("u", "p", 5, 100.0, "rate"), ("u", "p", 0, 100.0, "unrate")][::order]
    assert trending_votes.votes_from_events(iter(_Scan(rows)), lambda: None) == {}
