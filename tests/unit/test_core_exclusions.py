"""The rule every writer of a shopper's exclusions applies to "not interested" and its undo
("interested again"), in memory: the newest change wins whatever order the changes arrive in,
as for a rating and its removal (core.rating_history.apply_history_change)."""
from __future__ import annotations

import itertools

from core.shopper_controls import (apply_exclusion_change, exclusion_entries, exclusion_fields,
                                   shown_again_entries)

HIDE, SHOW = True, False


def _apply(changes: list[tuple[bool, float]]) -> tuple[dict[str, float], dict[str, float]]:
    items: dict[str, float] = {}
    shown: dict[str, float] = {}
    for hide, ts in changes:
        apply_exclusion_change(items, shown, "P1", hide, ts)
    return items, shown


def test_show_again_takes_the_exclusion_back_and_remembers_when():
    items, shown = {"P1": 10.0, "P2": 5.0}, {}
    assert apply_exclusion_change(items, shown, "P1", SHOW, 20.0)
    assert items == {"P2": 5.0} and shown == {"P1": 20.0}
    # stored and read back the same
    doc = exclusion_fields(items, shown)
    assert exclusion_entries(doc) == items and shown_again_entries(doc) == shown
    assert shown_again_entries({"items": [{"p": "P2", "t": 5.0}]}) == {}  # a document from before the undo


def test_a_late_older_hide_does_not_hide_it_again_and_a_newer_one_does():
    items, shown = {}, {"P1": 20.0}
    assert not apply_exclusion_change(items, shown, "P1", HIDE, 10.0)  # hidden before the undo, delivered late
    assert items == {} and shown == {"P1": 20.0}
    assert apply_exclusion_change(items, shown, "P1", HIDE, 30.0)  # hidden again afterwards
    assert items == {"P1": 30.0} and shown == {}


def test_a_replayed_change_changes_nothing():
    items, shown = {}, {}
    assert apply_exclusion_change(items, shown, "P1", HIDE, 10.0)
    assert not apply_exclusion_change(items, shown, "P1", HIDE, 10.0)
    assert apply_exclusion_change(items, shown, "P1", SHOW, 11.0)
    assert not apply_exclusion_change(items, shown, "P1", SHOW, 11.0)
    assert (items, shown) == ({}, {"P1": 11.0})


def test_the_result_does_not_depend_on_the_order_changes_arrive_in():
    """A hide and an undo racing (two tabs, a retried request): the later ``ts`` wins; at the same
    ``ts`` the undo wins, as a rating's removal wins a tie with the rating (change_key)."""
    for changes in ([(HIDE, 1.0), (SHOW, 2.0), (HIDE, 3.0)], [(HIDE, 1.0), (SHOW, 2.0)], [(HIDE, 5.0), (SHOW, 5.0)]):
        ends = {tuple(tuple(sorted(d.items())) for d in _apply(list(order))) for order in itertools.permutations(changes)}
        assert len(ends) == 1, changes
    assert _apply([(HIDE, 1.0), (HIDE, 3.0), (SHOW, 2.0)])[0] == {"P1": 3.0}  # the newest hide wins
    assert _apply([(SHOW, 5.0), (HIDE, 5.0)]) == ({}, {"P1": 5.0})
