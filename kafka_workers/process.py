"""Handling one rating event: store it, fold the user in, write their new list, announce it.

Every step is idempotent (insert by event id, history keeps the newest rating, the list is
replaced whole), so a redelivered event after a crash changes nothing; that is what lets the
worker commit offsets only after MongoDB has the result and still store each rating exactly once.

The shopper's controls are events too (``core.events`` version 2): removing a rating, "not
interested" and taking that back ("interested again") change the history or the exclusions and
then re-solve the list exactly like a rating; ``delete_account`` removes what MongoDB and Redis keep for the user, and anything that
arrives for a deleted account afterwards is dropped.

This is the path of one event at a time; the worker's usual path, a poll's events together, is
``kafka_workers.batch``, with the same effects.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Literal

from core import (catalog, erasure, events, list_state, locking, rating_history, recommend, shopper_controls,
                  stored_lists)
from core.artifacts import Model
from core.events import InvalidEvent, RatingEvent, parse_event
from core.settings import get_settings
from kafka_workers.exclusions_cache import may_have_exclusions

log = logging.getLogger(__name__)


Status = Literal["processed", "duplicate", "dead-letter", "cancelled", "dropped"]
STATUSES: tuple[Status, ...] = ("processed", "duplicate", "dead-letter", "cancelled", "dropped")


@dataclass(frozen=True)
class Outcome:
    """What became of one event; ``reason`` says why for every status but processed and duplicate."""

    event: RatingEvent | None
    status: Status
    reason: str = ""
    latency_s: float = 0.0


def recommendations_for(history: dict[str, float], model: Model | None, n: int,
                        excluded: set[str] | frozenset[str] = frozenset(),
                        popular: Callable[[int], list[dict]] | None = None) -> tuple[list[dict], str]:
    """Personal top-n by folding the user into the model, else popular items they have not rated;
    never a product in ``excluded`` ("not interested"). ``popular(limit)`` gives the popular
    products (default: read them now; a batch reads them once for all its users)."""
    if model is not None:
        items = recommend.recommend(model, history, n=n, exclude=excluded)
        if items:
            return items, model.version
    most_reviewed = popular or (lambda limit: catalog.compute_popular(limit=limit))
    unrated = [p for p in most_reviewed(n + len(history) + len(excluded))
               if p["product_id"] not in history and p["product_id"] not in excluded]
    return [{**p, "because": None} for p in unrated[:n]], "popular"


def apply_action(event: RatingEvent) -> dict[str, float] | None:
    """The event's change to the user's history or exclusions; returns the history to solve
    with, or None when the account was deleted."""
    if event.action == events.UNRATE:
        return rating_history.remove_from_history(event.user_id, event.product_id, event.ts)
    if event.action in events.EXCLUSION_ACTIONS:
        history = rating_history.history_unless_deleted(event.user_id)
        if history is not None:
            may_have_exclusions(event.user_id)
            shopper_controls.change_exclusion(event.user_id, event.product_id, event.action == events.NOT_INTERESTED,
                                              event.ts)
        return history
    return rating_history.add_to_history(event.user_id, event.product_id, event.rating, event.ts)


def forget_user(event: RatingEvent) -> Outcome:
    """``delete_account``: the site removed the data already; this repeats it after every event
    the user sent before (same partition, in order), so none of them can have brought any back.

    An erasure stopped by a lock held or lost or a load in the way (``erasure.INTERRUPTIONS``:
    the site's own run met the same when it sent this event) is Celery's ``finish_erasures``' to end,
    as the site's is: retried here it held the partition (three 30 s lock waits) and then went to the
    dead letters, though nothing was wrong with the event."""
    rerun = not erasure.record_deleted_user(event.user_id)  # the site's run (or a killed one of ours) came first
    with locking.writer_lock(event.user_id):
        pass  # a list writer that checked before the mark has written when this is taken; later ones see it
    try:
        erasure.delete_user_data(event.user_id, rerun=rerun)
    except erasure.INTERRUPTIONS as exc:
        log.warning("delete_account of %s: the erasure stopped (%s); finish_erasures ends it", event.user_id, exc)
    list_state.drop(event.user_id)
    return Outcome(event, "processed", latency_s=max(0.0, time.time() - event.ts))


def handle(raw: bytes | None, model: Model | None) -> Outcome:
    """Process one Kafka message value.

    Invalid events come back as ``dead-letter`` outcomes with the reason, so the caller can send
    them to the dead-letter topic and carry on with the next message. Anything else raises: an
    outage (MongoDB down), which the worker waits out, or an error of this message (a document
    MongoDB refuses, a bug), which it retries and then dead-letters.
    """
    try:
        event = parse_event(raw)
    except InvalidEvent as exc:
        return Outcome(None, "dead-letter", str(exc))
    return handle_event(event, model)


def _dropped_deleted(event: RatingEvent) -> Outcome:
    """An event of a deleted account: nothing of it is kept, its stored copy neither."""
    rating_history.drop_event(event.event_id)
    return Outcome(event, "dropped", "account deleted")


def handle_event(event: RatingEvent, model: Model | None) -> Outcome:
    """:func:`handle` of an event already parsed."""
    if event.action == events.DELETE_ACCOUNT:
        return forget_user(event)
    if not catalog.product_exists(event.product_id):
        return Outcome(event, "dead-letter", f"unknown product {event.product_id}")
    fresh = rating_history.store_rating(event.to_dict())
    if not fresh:
        stored = rating_history.get_rating(event.event_id) or {}
        if stored.get("state") == "processed":
            return Outcome(event, "duplicate")
        # stored but the worker died before writing the list: finish the job now
    history = apply_action(event)
    # after the history is written: a re-scoring that read the older one took its as_of before that.
    # A list that cannot be computed from here on (a fold-in numpy cannot solve) dead-letters an
    # event that stays stored (README: "stored, list not rebuilt"); a replay finishes it.
    as_of = time.time()
    if history is None:  # the account was deleted: keep nothing of it
        return _dropped_deleted(event)
    excluded = shopper_controls.exclusions(event.user_id)
    items, version = recommendations_for(history, model, get_settings().top_n, excluded)
    doc = stored_lists.write_recommendations(event.user_id, items, version, source_event_id=event.event_id, as_of=as_of)
    if doc is None:  # deleted while this event was handled: its delete_account event removes the rest
        return _dropped_deleted(event)
    list_state.announce(event.user_id, list_state.version_of(doc))
    rating_history.mark_rating_processed(event.event_id, version)
    return Outcome(event, "processed", latency_s=max(0.0, time.time() - event.ts))
