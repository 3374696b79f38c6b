"""The record of each dead letter's replay (``dead_letter_replays``, one document per letter id),
so that a letter is replayed once unless the operator forces it (``kafka_workers.dead_letters``).

A record says ``replaying`` from its claim until Kafka acknowledged the send, then ``replayed``
(records from before ``state`` existed are replayed). A replay killed in between (or whose ack
never came) leaves ``replaying``: a later replay takes such a record over once it is older than a
send's wait (``core.kafka_io.send_wait_s``), and sends the letter again (a copy sent twice counts
once: its event id). Each claim has its own token, and a replay changes or removes the record only
while it holds its token: a slow replay that was taken over leaves the record of the one that took it.
"""
from __future__ import annotations

import time
import uuid
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from core import mongo

REPLAYING, REPLAYED = "replaying", "replayed"


def claim(letter_id: str, doc: dict[str, Any], stale_s: float,
          db: Database | None = None) -> tuple[str | None, dict | None]:
    """Record that a dead letter is being replayed: (token, None) if this call got it (the token for
    :func:`replayed` and :func:`release`), else (None, the earlier record). Insert-by-id: two
    replays of one letter cannot both win. A record left ``replaying`` for more than ``stale_s``
    (its replay died before the ack) is taken over, with a new token."""
    db = db if db is not None else mongo.get_db()
    now, token = time.time(), uuid.uuid4().hex
    try:
        db[mongo.DEAD_LETTER_REPLAYS].insert_one({**doc, "_id": letter_id, "state": REPLAYING, "claimed_at": now,
                                                  "token": token})
        return token, None
    except DuplicateKeyError:
        earlier = db[mongo.DEAD_LETTER_REPLAYS].find_one({"_id": letter_id}) or {}
    if state(earlier) == REPLAYING and now - float(earlier.get("claimed_at") or 0) > stale_s:
        # conditional on the claim seen, so of two takers one gets it (on MongoDB; on FerretDB v1,
        # a read then a write, both may: the letter is sent twice, and its event id counts once)
        taken = db[mongo.DEAD_LETTER_REPLAYS].update_one(
            {"_id": letter_id, "state": REPLAYING, "claimed_at": earlier.get("claimed_at")},
            {"$set": {"claimed_at": now, "token": token}})
        if taken.matched_count:
            return token, None
    return None, earlier


def state(record: dict | None) -> str | None:
    """``replaying``, ``replayed`` or None (no record)."""
    return None if not record else record.get("state", REPLAYED)


def replayed(letter_id: str, token: str | None, db: Database | None = None) -> None:
    """Record that Kafka acknowledged the send of the replay that claimed the letter with ``token``
    (None: a forced replay, which claimed nothing). A replay taken over meanwhile records nothing:
    the record is the other replay's, which records its own send."""
    db = db if db is not None else mongo.get_db()
    mine = {"_id": letter_id} if token is None else {"_id": letter_id, "token": token}
    db[mongo.DEAD_LETTER_REPLAYS].update_one(mine, {"$set": {"state": REPLAYED, "replayed_at": time.time()}})


def release(letter_id: str, token: str, db: Database | None = None) -> None:
    """Forget the claim ``token`` whose publish failed, so the letter can be replayed again; a
    replay that took this one over keeps its record."""
    db = db if db is not None else mongo.get_db()
    db[mongo.DEAD_LETTER_REPLAYS].delete_one({"_id": letter_id, "token": token})


def get(letter_id: str, db: Database | None = None) -> dict | None:
    """The record of a letter's replay, None if it was never replayed."""
    db = db if db is not None else mongo.get_db()
    return db[mongo.DEAD_LETTER_REPLAYS].find_one({"_id": letter_id})
