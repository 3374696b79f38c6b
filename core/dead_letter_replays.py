"""The record of each dead letter's replay (``dead_letter_replays``, one document per letter id),
so that a letter is replayed once unless the operator forces it (``kafka_workers.dead_letters``)."""
from __future__ import annotations

import time
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from core import mongo


def claim(letter_id: str, doc: dict[str, Any], db: Database | None = None) -> dict | None:
    """Record that a dead letter is being replayed; returns None if this call got it, else the
    earlier record. Insert-by-id: two replays of one letter cannot both win."""
    db = db if db is not None else mongo.get_db()
    try:
        db[mongo.DEAD_LETTER_REPLAYS].insert_one({**doc, "_id": letter_id, "replayed_at": time.time()})
        return None
    except DuplicateKeyError:
        return db[mongo.DEAD_LETTER_REPLAYS].find_one({"_id": letter_id}) or {}


def release(letter_id: str, db: Database | None = None) -> None:
    """Forget a claim whose publish failed, so the letter can be replayed again."""
    db = db if db is not None else mongo.get_db()
    db[mongo.DEAD_LETTER_REPLAYS].delete_one({"_id": letter_id})


def get(letter_id: str, db: Database | None = None) -> dict | None:
    """The record of a letter's replay, None if it was never replayed."""
    db = db if db is not None else mongo.get_db()
    return db[mongo.DEAD_LETTER_REPLAYS].find_one({"_id": letter_id})
