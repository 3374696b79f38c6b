"""Handling one rating event: store it, fold the user in, write their new list, announce it.

Every step is idempotent (insert by event id, history keeps the newest rating, the list is
replaced whole), so a redelivered event after a crash changes nothing; that is what lets the
worker commit offsets only after MongoDB has the result and still store each rating exactly once.

The shopper's controls are events too (``core.events`` version 2): removing a rating and "not
interested" change the history or the exclusions and then re-solve the list exactly like a
rating; ``delete_account`` removes what MongoDB and Redis keep for the user, and anything that
arrives for a deleted account afterwards is dropped.
"""
from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

from core import events, list_state, mongo, recommend
from core.artifacts import Model
from core.events import MAX_EVENT_BYTES, InvalidEvent, RatingEvent, parse_event
from core.settings import get_settings


@dataclass(frozen=True)
class Outcome:
    event: RatingEvent | None
    status: str  # "processed" | "duplicate" | "dead-letter"
    reason: str = ""
    latency_s: float = 0.0


def recommendations_for(history: dict[str, float], model: Model | None, n: int,
                        excluded: set[str] | frozenset[str] = frozenset()) -> tuple[list[dict], str]:
    """Personal top-n by folding the user into the model, else popular items they have not rated;
    never a product in ``excluded`` ("not interested")."""
    if model is not None:
        items = recommend.recommend(model, history, n=n, exclude=excluded)
        if items:
            return items, model.version
    popular = [p for p in mongo.compute_popular(limit=n + len(history) + len(excluded))
               if p["product_id"] not in history and p["product_id"] not in excluded]
    return [{**p, "because": None} for p in popular[:n]], "popular"


def apply_action(event: RatingEvent) -> dict[str, float] | None:
    """The event's change to the user's history or exclusions; returns the history to solve
    with, or None when the account was deleted."""
    if event.action == events.UNRATE:
        return mongo.remove_from_history(event.user_id, event.product_id, event.ts)
    if event.action == events.NOT_INTERESTED:
        history = mongo.history_unless_deleted(event.user_id)
        if history is not None:
            mongo.add_exclusion(event.user_id, event.product_id, event.ts)
        return history
    return mongo.add_to_history(event.user_id, event.product_id, event.rating, event.ts)


def forget_user(event: RatingEvent) -> Outcome:
    """``delete_account``: the site removed the data already; this repeats it after every event
    the user sent before (same partition, in order), so none of them can have brought any back."""
    mongo.record_deleted_user(event.user_id)
    mongo.delete_user_data(event.user_id)
    list_state.drop(event.user_id)
    return Outcome(event, "processed", latency_s=max(0.0, time.time() - event.ts))


def handle(raw: bytes | None, model: Model | None) -> Outcome:
    """Process one Kafka message value. Raises only for infrastructure errors (MongoDB down).

    Invalid events come back as ``dead-letter`` outcomes with the reason, so the caller can send
    them to the dead-letter topic and carry on with the next message.
    """
    try:
        event = parse_event(raw)
    except InvalidEvent as exc:
        return Outcome(None, "dead-letter", str(exc))
    if event.action == events.DELETE_ACCOUNT:
        return forget_user(event)
    if not mongo.product_exists(event.product_id):
        return Outcome(event, "dead-letter", f"unknown product {event.product_id}")
    fresh = mongo.store_rating(event.to_dict())
    if not fresh:
        stored = mongo.get_rating(event.event_id) or {}
        if stored.get("state") == "processed":
            return Outcome(event, "duplicate")
        # stored but the worker died before writing the list: finish the job now
    as_of = time.time()  # before the history is read: a list from an older read never replaces ours
    history = apply_action(event)
    if history is None:  # the account was deleted: keep nothing of it
        mongo.drop_event(event.event_id)
        return Outcome(event, "dropped", "account deleted")
    items, version = recommendations_for(history, model, get_settings().top_n, mongo.exclusions(event.user_id))
    doc = mongo.write_recommendations(event.user_id, items, version, source_event_id=event.event_id, as_of=as_of)
    list_state.announce(event.user_id, list_state.version_of(doc))
    mongo.mark_rating_processed(event.event_id, version)
    return Outcome(event, "processed", latency_s=max(0.0, time.time() - event.ts))


def dead_letter_payload(raw: bytes | None, reason: str, topic: str, partition: int, offset: int,
                        key: bytes | None = None, event_id: str | None = None, attempts: int = 1) -> dict[str, Any]:
    """What a dead letter carries: the reason, where it came from, and the original.

    ``id`` (topic:partition:offset of the original) names the letter for the dead-letters command;
    ``value`` is a readable preview, ``value_b64`` the exact original bytes (events are at most
    ``MAX_EVENT_BYTES``; a larger message is kept as the preview only), which a replay republishes
    with the original ``key``.
    """
    raw_bytes = raw if isinstance(raw, bytes) else (str(raw).encode() if raw is not None else None)
    text = raw_bytes.decode("utf-8", errors="replace") if raw_bytes is not None else "None"
    if event_id is None and raw_bytes is not None:
        try:  # an invalid event may still name itself; the list shows it when it does
            data = json.loads(raw_bytes)
            event_id = data.get("event_id") if isinstance(data, dict) and isinstance(data.get("event_id"), str) else None
        except ValueError:
            pass
    return {"id": f"{topic}:{partition}:{offset}", "reason": reason, "topic": topic, "partition": partition,
            "offset": offset, "key": key.decode("utf-8", "replace") if key else None,
            "event_id": (event_id or "")[:64] or None, "attempts": attempts,
            "value": text[:4096], "value_bytes": len(raw_bytes or b""),
            "value_b64": (base64.b64encode(raw_bytes).decode() if raw_bytes is not None
                          and len(raw_bytes) <= MAX_EVENT_BYTES else None),
            "dead_lettered_at": time.time()}
