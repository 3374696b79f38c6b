"""The forward-decay terms core/trending.py keeps in Redis rescale to core.popular's scores."""
from __future__ import annotations

from collections import defaultdict

import pytest

from core import popular, trending
from core.rating_history import history_doc

NOW = 1_700_000_000.0
DAY = 86400.0


def test_terms_times_the_common_factor_are_the_scores_of_the_events_rule():
    histories = {
        "a": history_doc("a", {"p1": (5, NOW - 60), "p2": (3, NOW - 2 * DAY), "old": (5, NOW - 8 * DAY)},
                         {"gone": NOW - DAY}),
        "b": history_doc("b", {"p1": (4, NOW - 3 * DAY), "soon": (2, NOW + 600)}, {}),  # a clock ahead
        "c": history_doc("c", {f"f{i}": (5, NOW - i) for i in range(10)}, {}),
    }
    t0 = NOW - 5 * DAY  # any T0: the factor 2 ** ((T0 - now) / H) is common to every term
    kept: dict[str, float] = defaultdict(float)
    events = []
    for user, doc in histories.items():
        vs = trending.votes(doc, NOW)
        for (p, _r, _t), term in zip(vs, trending.terms(vs, t0, NOW)):
            kept[p] += term
        events += [{"user_id": user, "product_id": p, "rating": r, "ts": t} for p, r, t in vs]
    want = popular.trending_scores(events, NOW)
    assert "old" not in kept and "gone" not in kept
    factor = 2.0 ** ((t0 - NOW) / trending.HALF_LIFE_S)
    assert {p: s * factor for p, s in kept.items()} == pytest.approx(dict(want), rel=1e-12)


def test_a_user_is_computed_again_when_a_vote_leaves_the_window_or_while_one_is_in_the_future():
    assert trending.due([("p", 5, NOW - DAY), ("q", 4, NOW - 3 * DAY)], NOW) == NOW - 3 * DAY + trending.WINDOW_S
    assert trending.due([("p", 5, NOW - DAY), ("q", 4, NOW + 60)], NOW) == NOW


def test_a_rating_and_its_removal_at_the_same_time_leave_no_vote_in_either_order():
    """The rebuild ranks events by the histories' own tie rule (core.rating_history.change_key: a
    removal wins at the same time), not by the order the scan returns them in."""
    from core import trending

    rate = {"user_id": "u", "product_id": "p", "rating": 5, "ts": 100.0, "action": "rate"}
    unrate = {**rate, "rating": 0, "action": "unrate"}
    assert trending.votes_from_events([rate, unrate]) == {}
    assert trending.votes_from_events([unrate, rate]) == {}
