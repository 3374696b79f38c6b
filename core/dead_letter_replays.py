"""The record of each dead letter's replay (``dead_letter_replays``, one document per letter id),
so that a letter is replayed once unless the operator forces it (``kafka_workers.dead_letters``).

A record says ``replaying`` from its claim until Kafka acknowledged the send, then ``replayed``
(records from before ``state`` existed are replayed). A replay killed in between (or whose ack
never came) leaves ``replaying``: a later replay takes such a record over once it is older than a
send's wait, and sends the letter again (a copy sent twice counts once: its event id).
"""
from __future__ import annotations

import time
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from core import mongo

REPLAYING, REPLAYED = "replaying", "replayed"


def claim(letter_id: str, doc: dict[str, Any], stale_s: float, db: Database | None = None) -> dict | None:
    """Record that a dead letter is being replayed; returns None if this call got it, else the
    earlier record. Insert-by-id: two replays of one letter cannot both win. A record left
    ``replaying`` for more than ``stale_s`` (its replay died before the ack) is taken over."""
    db = db if db is not None else mongo.get_db()
    now = time.time()
    try:
        db[mongo.DEAD_LETTER_REPLAYS].insert_one({**doc, "_id": letter_id, "state": REPLAYING, "claimed_at": now})
        return None
    except DuplicateKeyError:
        earlier = db[mongo.DEAD_LETTER_REPLAYS].find_one({"_id": letter_id}) or {}
    if state(earlier) == REPLAYING and now - float(earlier.get("claimed_at") or 0) > stale_s:
        # conditional on the claim seen, so of two takers one gets it (on MongoDB; on FerretDB v1,
        # a read then a write, both may: the letter is sent twice, and its event id counts once)
        taken = db[mongo.DEAD_LETTER_REPLAYS].update_one(
            {"_id": letter_id, "state": REPLAYING, "claimed_at": earlier.get("claimed_at")},
            {"$set": {"claimed_at": now}})
        if taken.matched_count:
            return None
    return earlier


def state(record: dict | None) -> str | None:
    """``replaying``, ``replayed`` or None (no record)."""
    return None if not record else record.get("state", REPLAYED)


def replayed(letter_id: str, db: Database | None = None) -> None:
    """Record that Kafka acknowledged the replay's send."""
    db = db if db is not None else mongo.get_db()
    db[mongo.DEAD_LETTER_REPLAYS].update_one({"_id": letter_id},
                                             {"$set": {"state": REPLAYED, "replayed_at": time.time()}})


def release(letter_id: str, db: Database | None = None) -> None:
    """Forget a claim whose publish failed, so the letter can be replayed again."""
    db = db if db is not None else mongo.get_db()
    db[mongo.DEAD_LETTER_REPLAYS].delete_one({"_id": letter_id})


def get(letter_id: str, db: Database | None = None) -> dict | None:
    """The record of a letter's replay, None if it was never replayed."""
    db = db if db is not None else mongo.get_db()
    return db[mongo.DEAD_LETTER_REPLAYS].find_one({"_id": letter_id})
