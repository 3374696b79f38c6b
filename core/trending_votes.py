"""The trending rule: which ratings vote, and what each vote adds to a product's score.

Pure functions (of a user's history, of rating events, of the rows the state stored), but for
:func:`live_events` (the scan of the window's events a rebuild folds). core/trending.py keeps the
scores in Redis and refreshes them; core.popular ranks the same votes in memory when Redis is
down. Both must count the same votes, hence one place for the rule.

A user's votes are the ratings in their history dated within the window (a rating taken back is
not in the history, "not interested" never is), their ``MAX_VOTES_PER_USER`` most recent if they
have more (ts ties broken by the histories' rule, then by product id: :func:`capped`), and product
p scores, at time ``now``,

    S(p) = sum over its voters u of (r_u / 5) * 0.5 ** ((now - t_u) / H) / n_u

(H the half-life, n_u how many votes u has: at most the cap, since a refresh computes a user's
terms again whole and one account must not make it slow). Since 0.5 ** ((now - t) / H) equals
2 ** ((t - T0) / H) * 2 ** -((now - T0) / H) and the second factor is the same for every term,
the state keeps s(p) = sum (r_u / 5) * 2 ** ((t_u - T0) / H) / n_u ("forward decay"): the order is
S's, and S(p) = s(p) * 2 ** -((now - T0) / H). :func:`terms` gives a user's terms of s(p).

The window's rating events give the votes its histories hold (the workers apply the same events to
them): :func:`fold_events`, which a rebuild runs on the scan as it reads it. A history also holds
the user's batch reviews, dated when they were written: trending is the shoppers' live ratings
(README; core.popular falls back to the batch reviews only while there are none), so the batch
load lists the reviews dated late enough to be within a window (core.rating_history.BATCH) and a
history's votes leave them out (:func:`live_entries`), as the events do. A history written before
that list existed has none: its batch reviews count until the next load rewrites it. A live rating
as late as a listed review (an exact tie) wins it, as in the load's merge: every writer takes the
product off the list (core.rating_history.recent_batch_reviews).

A known difference, left as it is: a batch review dated within the window and later than a live
rating of the same product (a load of reviews newer than the shopper's rating) is the history's
entry, listed, so a refresh counts no vote for it, while the window's events still hold the live
rating it replaced, which a rebuild counts until it leaves the window. Agreeing would take the
history keeping the replaced live rating, or a rebuild reading every history; it needs batch reviews
newer than the site's live ratings (the Amazon reviews are years old).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

from pymongo.database import Database

from core import mongo, rating_history

_T = TypeVar("_T")

WINDOW_S = 7 * 86400
HALF_LIFE_S = 86400.0
MAX_VOTES_PER_USER = 100  # a user's most recent votes counted (:func:`capped`): 14 a day for a week
# events, users or ids a long pass reads between two renewals of the state's lock (:func:`every_chunk`),
# and entries per pipeline of a rebuild's writes (core.trending_store)
CHUNK = 10_000

Vote = tuple[str, float, float]  # (product, rating, ts)


def _recency(vote: Vote) -> tuple:
    """Orders a user's votes from the most recent: the histories' own key (core.rating_history's
    ``change_key``: the later ts; at one ts, the lower rating), then the greater product id, so that the
    history, the rebuild's events and the stored rows keep the same votes when ts tie."""
    p, r, t = vote
    return (*rating_history.change_key(r, t), p)


def capped(user_votes: Iterable[Vote]) -> list[Vote]:
    """The ``MAX_VOTES_PER_USER`` most recent of one user's votes, by product. An account rating
    more (a bot at the rate limit rates up to ~300,000 a week) counts as much as any shopper, its
    weight split anyway; without the cap each refresh after its next vote recomputed all of its
    terms, and a few such accounts made the minute's refresh grow with their activity."""
    user_votes = list(user_votes)
    if len(user_votes) > MAX_VOTES_PER_USER:
        user_votes = sorted(user_votes, key=_recency, reverse=True)[:MAX_VOTES_PER_USER]
    return sorted(user_votes)


def votes(history: dict | None, now: float) -> list[Vote]:
    """(product, rating, ts) of a ``user_history`` document's ratings that vote at ``now``: its live
    ratings (:func:`live_entries`) dated within the window, at most ``MAX_VOTES_PER_USER`` of them
    (:func:`capped`)."""
    rated, _removed = live_entries(history)
    return capped((p, r, t) for p, (r, t) in rated.items() if t >= now - WINDOW_S)


def live_entries(history: dict | None) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """:func:`core.rating_history.history_entries` without the batch reviews the history lists as
    recent (:func:`core.rating_history.recent_batch_reviews`): what the shoppers did on the site,
    which is what the window's rating events hold (a removal is always theirs)."""
    rated, removed = rating_history.history_entries(history)
    for p in rating_history.recent_batch_reviews(history):
        rated.pop(p, None)
    return rated, removed


# The change of one (user, product) that the events leave so far, all a rebuild keeps of them while
# it reads the week: (product, rating or None when taken back, ts), which is the Vote itself once
# rated, so the votes the fold returns are these very tuples (no second copy of the week's votes
# while the first is let go). A few small values, not the event's document: a week at the workers'
# rate is tens of millions of events, and holding their documents (every one, as the rebuild did)
# outgrew a Celery worker.
_Change = tuple[str, "float | None", float]
# a user's changes are a list, searched by product, until they are this many, then a dict: most
# users rate a few products a week, and a dict per user took 200+ bytes, more than their votes
_LIST_MAX = 16


@dataclass
class EventVotes:
    """What :func:`fold_events` makes of rating events: ``votes`` as :func:`votes_from_events`
    gives them, and ``newest``, the ts of the latest event (a rating or a removal: trending is live
    for a window after it), None when there was no event."""
    votes: dict[str, list[Vote]]
    newest: float | None


def votes_from_events(events: Iterable[dict], between: Callable[[], None] | None = None) -> dict[str, list[Vote]]:
    """{user: (product, rating, ts) of their votes} of rating events: per user and product the
    latest event counts, and only if it is a rating (an ``unrate`` takes it back); of those, the
    user's ``MAX_VOTES_PER_USER`` most recent (:func:`capped`). The events of a window give the
    votes its histories hold (the workers apply the same events to them). ``events`` is read once,
    so it may be a generator (:func:`live_events`); ``between`` is called every ``CHUNK`` events
    and users (a rebuild renews its lock): :func:`fold_events`."""
    return fold_events(events, between).votes


def fold_events(events: Iterable[dict], between: Callable[[], None] | None = None) -> EventVotes:
    """:func:`votes_from_events` and the newest event's ts in one pass over ``events``, keeping per
    (user, product) only its latest change: memory grows with the distinct votes, not the events."""
    latest, newest = _latest_changes(events, between)
    return EventVotes(_votes_of_latest(latest, between), newest)


def _change_of(e: dict, ratings: dict[float, float]) -> _Change:
    """An event as :data:`_Change`; ``ratings`` holds one float per rating value (shared by every
    change), and product ids are interned: a week's votes share a catalog's ids."""
    rating = rating_history.history_rating(e.get("action", "rate"), e["rating"])
    if rating is not None:
        rating = ratings.setdefault(rating, rating)
    return sys.intern(str(e["product_id"])), rating, float(e["ts"])


def _key(change: _Change) -> tuple[float, bool, float]:
    """The histories' own order of two changes of a product (core.rating_history.change_key: a
    removal wins a tie, whatever the scan's order)."""
    return rating_history.change_key(change[1], change[2])


def _latest_changes(events: Iterable[dict], between: Callable[[], None] | None
                    ) -> tuple[dict[str, list[_Change] | dict[str, _Change]], float | None]:
    """{user: their latest change per product} of ``events`` and the newest ts, ``between`` called
    every ``CHUNK`` events. By user: the votes are built a user at a time, and a user's id is held
    once. A user's changes are a list while short (:data:`_LIST_MAX`), else a dict by product."""
    latest: dict[str, list[_Change] | dict[str, _Change]] = {}
    ratings: dict[float, float] = {}
    newest: float | None = None
    for e in every_chunk(events, between):
        change = _change_of(e, ratings)
        user, pid = str(e.get("user_id", "")), change[0]
        held = latest.get(user)
        if held is None:
            latest[user] = [change]
        elif isinstance(held, dict):
            seen = held.get(pid)
            if seen is None or _key(change) > _key(seen):  # by the key alone: the first of equal ones stays
                held[pid] = change
        else:
            at = next((i for i, c in enumerate(held) if c[0] == pid), None)
            if at is None:
                held.append(change)
                if len(held) > _LIST_MAX:
                    latest[user] = {c[0]: c for c in held}
            elif _key(change) > _key(held[at]):
                held[at] = change
        if newest is None or change[2] > newest:
            newest = change[2]
    return latest, newest


def _votes_of_latest(latest: dict[str, list[_Change] | dict[str, _Change]], between: Callable[[], None] | None
                     ) -> dict[str, list[Vote]]:
    """Each user's votes (:func:`capped`) of their latest changes, users in id order; a user's
    changes are dropped once their votes are made (the two are not held whole at once), and
    ``between`` is called every ``CHUNK`` users."""
    out: dict[str, list[Vote]] = {}
    for user in every_chunk(sorted(latest), between):
        held = latest.pop(user)
        vs = [c for c in (held.values() if isinstance(held, dict) else held) if c[1] is not None]
        if vs:
            out[user] = capped(vs)  # type: ignore[arg-type]  (rated: a Vote)
    return out


def last_activity(history: dict | None) -> float:
    """The newest live rating or removal in a history: trending counts as live for a window after it."""
    rated, removed = live_entries(history)
    return max([t for _r, t in rated.values()] + list(removed.values()), default=float("-inf"))


def terms(user_votes: list[tuple[str, float, float]], t0: float, now: float,
          half_life_s: float = HALF_LIFE_S) -> list[float]:
    """Each vote's term of s(p); a vote dated after ``now`` (clock skew) counts as made now. The
    one formula of a trending score: ``core.popular.vote_scores`` is these terms with ``t0 = now``
    (and the quiet site's fallback passes its own half-life)."""
    n = len(user_votes)
    return [r / 5.0 * 2.0 ** ((min(t, now) - t0) / half_life_s) / n for _p, r, t in user_votes]


def due(user_votes: list[tuple[str, float, float]], now: float) -> float:
    """When the user's terms must be computed again: their oldest vote leaves the window, or at
    the next refresh while one is dated after ``now`` (its term is that of a vote made now)."""
    if any(t > now for _p, _r, t in user_votes):
        return now
    return min(t for _p, _r, t in user_votes) + WINDOW_S


def every_chunk(items: Iterable[_T], between: Callable[[], None] | None) -> Iterator[_T]:
    """``items``, with ``between`` called after every ``CHUNK`` of them: how a long pass of a
    refresh (the scan, the fold, the terms) renews its lock as it goes."""
    for i, item in enumerate(items, 1):
        yield item
        if between is not None and i % CHUNK == 0:
            between()


def live_events(db: Database, now: float, between: Callable[[], None] | None = None) -> Iterator[dict]:
    """The window's rating events that change a history (rate, unrate), as the scan reads them:
    one scan of ``ratings`` on FerretDB, which is what a rebuild (and core.popular without Redis)
    pays. A generator, so that no caller holds the week's events (:func:`fold_events` keeps what
    the rule needs of them). Read in batches of ``CHUNK``, ``between`` called every ``CHUNK``
    documents read (those skipped too: "not interested"): a rebuild renews its lock there, as the
    scan of a large week (61 s at 1M events) outlasts any fixed lock time."""
    fields = {"user_id": 1, "product_id": 1, "rating": 1, "ts": 1, "action": 1}
    cursor = db[mongo.RATINGS].find({"ts": {"$gte": now - WINDOW_S}}, fields, batch_size=CHUNK)
    with cursor:
        for e in every_chunk(cursor, between):
            if e.get("action", "rate") in rating_history.HISTORY_ACTIONS:
                yield e


def stored_votes(rows_by_user: dict[str, list], now: float) -> dict[str, list[Vote]]:
    """The votes (product, rating, ts) of stored rows that are still in the window at ``now``.

    The rows hold a user's votes after the cap (:func:`capped`), yet this is exactly what their
    unchanged history gives at ``now``: the votes beyond the cap are dated no later than every
    stored one, so they have left the window before or with the oldest stored vote, and the ones
    ageing out are always the least recent (a changed history is marked and read again). Capped
    again all the same: rows written under a larger cap (before there was one, or before it was
    lowered) would otherwise split a user's weight over more votes than the rule counts."""
    return {u: capped((p, rt, t) for p, rt, t, _c, _term in rows if t >= now - WINDOW_S)
            for u, rows in rows_by_user.items()}

