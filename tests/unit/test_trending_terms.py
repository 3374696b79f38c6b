"""The forward-decay terms (core/trending_votes.py) that core/trending.py keeps in Redis rescale to
core.popular's scores."""
from __future__ import annotations

from collections import defaultdict

import pytest

from core import popular, trending_votes
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
        vs = trending_votes.votes(doc, NOW)
        for (p, _r, _t), term in zip(vs, trending_votes.terms(vs, t0, NOW)):
            kept[p] += term
        events += [{"user_id": user, "product_id": p, "rating": r, "ts": t} for p, r, t in vs]
    want = popular.trending_scores(events, NOW)
    assert "old" not in kept and "gone" not in kept
    factor = 2.0 ** ((t0 - NOW) / trending_votes.HALF_LIFE_S)
    assert {p: s * factor for p, s in kept.items()} == pytest.approx(dict(want), rel=1e-12)


def test_a_user_is_computed_again_when_a_vote_leaves_the_window_or_while_one_is_in_the_future():
    want = NOW - 3 * DAY + trending_votes.WINDOW_S
    assert trending_votes.due([("p", 5, NOW - DAY), ("q", 4, NOW - 3 * DAY)], NOW) == want
    assert trending_votes.due([("p", 5, NOW - DAY), ("q", 4, NOW + 60)], NOW) == NOW


def test_a_rating_and_its_removal_at_the_same_time_leave_no_vote_in_either_order():
    """The rebuild ranks events by the histories' own tie rule (core.rating_history.change_key: a
    removal wins at the same time), not by the order the scan returns them in."""
    from core import trending_votes

    rate = {"user_id": "u", "product_id": "p", "rating": 5, "ts": 100.0, "action": "rate"}
    unrate = {**rate, "rating": 0, "action": "unrate"}
    assert trending_votes.votes_from_events([rate, unrate]) == {}
    assert trending_votes.votes_from_events([unrate, rate]) == {}


CAP = 5  # a small cap for these tests; the module's own is checked in the integration tests


@pytest.fixture
def small_cap(monkeypatch):
    # raising=False: against a module without the cap the tests fail on their assertions
    monkeypatch.setattr(trending_votes, "MAX_VOTES_PER_USER", CAP, raising=False)


def _heavy_history() -> tuple[dict, list[dict]]:
    """A shopper with more votes than the cap, ties at the same ts around the cut (two ratings of
    different products, equal ratings of different products), one vote taken back, one out of the
    window, and the rating events that leave that history."""
    ratings = {f"p{i:02d}": (1 + i % 5, NOW - 3600 * i) for i in range(12)}
    ratings.update({"tie-a": (5, NOW - 3600 * 3), "tie-b": (2, NOW - 3600 * 3), "tie-c": (2, NOW - 3600 * 3)})
    ratings["old"] = (5, NOW - 8 * DAY)
    doc = history_doc("h", ratings, {"gone": NOW - 60})
    events = [{"user_id": "h", "product_id": p, "rating": r, "ts": t, "action": "rate"} for p, (r, t) in ratings.items()]
    events += [{"user_id": "h", "product_id": "gone", "rating": 5, "ts": NOW - 120, "action": "rate"},
               {"user_id": "h", "product_id": "gone", "rating": 0, "ts": NOW - 60, "action": "unrate"}]
    return doc, [e for e in events if e["ts"] >= NOW - trending_votes.WINDOW_S]


def test_a_heavy_shopper_counts_the_cap_of_their_most_recent_votes_in_every_path(small_cap):
    """The history (a marked user), the rating events (a rebuild) and core.popular's in-memory rule
    keep the same votes, ties at the cut included: the later ts, then the lower rating (the
    histories' change_key), then the greater product id."""
    doc, events = _heavy_history()
    got = trending_votes.votes(doc, NOW)
    # p00 p01 p02 at 0, 1, 2 hours; at 3 hours p03 (rating 4), tie-b and tie-c (2), tie-a (5): the
    # lower ratings first, and of the two 2s the greater id
    assert got == sorted([("p00", 1.0, NOW), ("p01", 2.0, NOW - 3600), ("p02", 3.0, NOW - 7200),
                          ("tie-c", 2.0, NOW - 10800), ("tie-b", 2.0, NOW - 10800)])
    assert trending_votes.votes_from_events(events) == {"h": got}
    assert trending_votes.votes_from_events(list(reversed(events))) == {"h": got}
    scores = popular.trending_scores(events, NOW)
    assert set(scores) == {p for p, _r, _t in got}
    assert sum(scores.values()) == pytest.approx(sum(r / 5 * 0.5 ** ((NOW - t) / DAY) for _p, r, t in got) / CAP)


def test_stored_votes_aged_are_the_votes_the_history_gives_later(small_cap):
    """The state keeps a heavy shopper's capped votes only; as they age out, no vote beyond the cap
    may come back: the stored rows filtered by the window are what reading the history again gives."""
    doc, _events = _heavy_history()
    vs = trending_votes.votes(doc, NOW)
    assert len(vs) == CAP
    rows = {"h": [[p, r, t, "", term] for (p, r, t), term in zip(vs, trending_votes.terms(vs, NOW, NOW))]}
    for later in [NOW + trending_votes.WINDOW_S - 3600 * k + d for k in range(5) for d in (-1, 0, 1)]:
        assert trending_votes.stored_votes(rows, later)["h"] == trending_votes.votes(doc, later), later


def test_a_history_s_batch_reviews_neither_vote_nor_make_trending_live():
    """Trending's votes are the live ratings: the batch reviews a history lists as recent
    (core.rating_history.BATCH, written by the load) are left out, as they are of the events."""
    doc = {**history_doc("u", {"live": (4, NOW - DAY), "review": (5, NOW - 60), "old": (5, NOW - 30 * DAY)}, {}),
           "batch": ["review", "old"]}  # as the load writes it
    assert trending_votes.votes(doc, NOW) == [("live", 4.0, NOW - DAY)]
    assert trending_votes.last_activity(doc) == NOW - DAY


def test_a_live_writer_keeps_the_batch_reviews_it_did_not_replace():
    from core import rating_history

    doc = history_doc("u", {"a": (5, NOW - 60), "b": (4, NOW - 60), "c": (3, NOW - 60)}, {}, batch={"a", "b", "x"})
    assert doc["batch"] == ["a", "b"]  # of its ratings only
    ratings, removed = rating_history.history_entries(doc)
    rating_history.apply_history_change(ratings, removed, "a", 2, NOW)  # a live rating replaces review a
    rating_history.apply_history_change(ratings, removed, "b", 1, NOW - 120)  # older: review b stays
    rating_history.apply_history_change(ratings, removed, "c", None, NOW)  # a removal
    assert rating_history.recent_batch_reviews(doc, ratings) == {"b"}
    assert "batch" not in history_doc("u", ratings, removed, batch=rating_history.recent_batch_reviews(doc, {}))


def test_a_live_rating_that_ties_a_listed_review_takes_it_off_the_list():
    """An exact tie (same rating, same time) changes no rating (apply_history_change) but makes the
    entry the live rating's too: recent_batch_reviews drops it, and only it, for every writer."""
    from core import rating_history

    doc = history_doc("u", {"a": (5, NOW - 60), "b": (4, NOW - 60), "c": (3, NOW - 60), "d": (2, NOW - 60)}, {},
                      batch={"a", "b", "c", "d"})
    ratings, removed = rating_history.history_entries(doc)
    changes = [("a", 5, NOW - 60),  # ties review a exactly
               ("b", 5, NOW - 60),  # as late but higher: the review wins (change_key), and stays listed
               ("c", None, NOW - 60),  # a removal at the review's time wins it
               ("x", 1, NOW)]  # another product
    assert [rating_history.apply_history_change(ratings, removed, *change) for change in changes] == [
        False, False, True, True]
    assert rating_history.recent_batch_reviews(doc, ratings, changes) == {"b", "d"}
    assert rating_history.recent_batch_reviews(doc, ratings) == {"a", "b", "d"}  # no changes given: no tie


def test_the_fold_keeps_each_product_s_latest_change_for_few_and_many_products():
    """A user's changes are held in a list while they are few and in a dict above that
    (core.trending_votes._LIST_MAX): the votes are the latest change per product either way."""
    import random

    from core import rating_history

    rng = random.Random(3)
    for n_products in (3, trending_votes._LIST_MAX, trending_votes._LIST_MAX + 1, 60):
        events = [{"user_id": "u", "product_id": f"p{rng.randrange(n_products)}", "rating": rng.randint(1, 5),
                   "ts": float(rng.randrange(30)), "action": rng.choice(["rate", "rate", "unrate"])}
                  for _ in range(400)]
        latest: dict[str, tuple] = {}
        for e in events:  # the rule written out: the greatest change_key wins, the first of equal ones stays
            r = rating_history.history_rating(e["action"], e["rating"])
            key = rating_history.change_key(r, e["ts"])
            if e["product_id"] not in latest or key > latest[e["product_id"]][0]:
                latest[e["product_id"]] = (key, r, e["ts"])
        want = trending_votes.capped((p, r, t) for p, (_k, r, t) in latest.items() if r is not None)
        assert trending_votes.votes_from_events(events) == ({"u": want} if want else {}), n_products
