"""Event claims (``event_claims``): who decides a timed-out rating, the site's "not saved" or the
worker's "stored", never both; the workers' claim of every event; the dead-letter marks that
``GET /api/ratings/<id>/`` reads (:func:`note_dead_letter`, :func:`dead_lettered`).

The site waits ``KAFKA_DELIVERY_TIMEOUT_MS`` for the broker's ack. A broker that stalls (a restart,
a pause) can still write the record after the site gave up, and a worker would then store a rating
the shopper was told was not saved (the soak's "ghost" ratings). So before the site answers 503 it
cancels the event id, and a worker claims every event id before it stores it. Both are an insert
of one document keyed by the event id into ``event_claims`` (where the writer locks live too,
``core.mongo.EVENT_CLAIMS``): the unique ``_id`` index is atomic on
FerretDB v1 and MongoDB alike, so the first writer wins and exactly one of these holds:

- ``{"state": "cancelled"}``: the site answered 503; every copy of the event is skipped (and its
  offset committed) by the workers;
- ``{"state": "stored"}``: a worker had it first; the site answers 202 after all.

The shopper's retry with the same idempotency key removes the cancellation (:func:`uncancel`)
before it publishes again, so the retry is stored, once (storage is by event id). The site
serialises the attempts of one key (see ``shop.ratings``), so a cancellation never undoes
another attempt's success. Reads and writes are by ``_id`` only (FerretDB v1 scans otherwise).
"""
from __future__ import annotations

import time
from typing import Iterable

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from core import locking, mongo

STORED, CANCELLED = "stored", "cancelled"


def _db(db: Database | None) -> Database:
    return db if db is not None else mongo.get_db()


def _decide(event_id: str, state: str, db: Database) -> str:
    """Insert ``state`` for the id unless it is decided already; returns the state that holds."""
    while True:
        try:
            db[mongo.EVENT_CLAIMS].insert_one({"_id": event_id, "state": state, "at": time.time()})
            return state
        except DuplicateKeyError:
            doc = db[mongo.EVENT_CLAIMS].find_one({"_id": event_id})
            if doc is not None:
                return doc.get("state", STORED)
            # removed in between (a retry un-cancelled it): decide again


def claim_batch(event_ids: Iterable[str], db: Database | None = None, locks: Iterable[str] = (),
                token: str = "") -> tuple[set[str], set[str], bool]:
    """For a worker, before it stores a batch of events (one bulk insert): which the site cancelled
    (skipped, never stored) and which a worker had claimed before (a redelivery finds its own
    earlier claim and goes on: storage is idempotent), and whether it got the locks: (cancelled,
    claimed earlier by a worker, locked). Every worker path claims its events here, once, before it
    stores them, so an id claimed for the first time now was never stored by a worker: the
    worker's batches read back only the others to tell a fresh event from a redelivery.

    The same insert takes the writer ``locks`` under ``token`` (``core.locking.take_locks``: they
    share the collection), one command instead of two for each of a worker's batches. ``locked``
    is False when another writer held one of them: then none is kept (those the insert took are
    given back), as :func:`core.locking.take_locks` does before it waits, and the caller waits for
    them its own way.
    """
    db, ids, names = _db(db), list(dict.fromkeys(event_ids)), sorted(set(locks))
    if not ids and not names:
        return set(), set(), True
    now = time.time()
    present = mongo.insert_new(db[mongo.EVENT_CLAIMS], [{"_id": i, "state": STORED, "at": now} for i in ids]
                               + [locking.lock_doc(n, token, now) for n in names])
    taken = [ids[k] for k in present if k < len(ids)]
    locked = all(k < len(ids) for k in present)
    if not locked:
        locking.release_locks(names, token, db=db)
    cancelled = {i for i in taken if _decide(i, STORED, db) == CANCELLED}
    return cancelled, set(taken) - cancelled, locked


def cancel(event_id: str, db: Database | None = None) -> bool:
    """For the site, when the broker's ack did not come in time: True if the event is now
    cancelled (answer 503), False if a worker had already claimed it (it is stored: answer 202)."""
    return _decide(event_id, CANCELLED, _db(db)) == CANCELLED


def uncancel(event_id: str, db: Database | None = None) -> None:
    """For the site, before a retry of a cancelled submission publishes it again."""
    _db(db)[mongo.EVENT_CLAIMS].delete_one({"_id": event_id, "state": CANCELLED})


def state(event_id: str, db: Database | None = None) -> str | None:
    doc = _db(db)[mongo.EVENT_CLAIMS].find_one({"_id": event_id})
    return doc.get("state") if doc else None


def note_dead_letter(event_id: str, db: Database | None = None) -> None:
    """For a worker about to dead-letter an event: mark its claim, so that the site can tell the
    shopper it will not be processed (``shop.ratings.processing_state``) instead of "pending" for
    ever. Only the dead-letter path pays this write; a claim is found or made by its ``_id``, and a
    claim without ``state`` reads as stored (:func:`_decide`), which a dead-lettered event was."""
    _db(db)[mongo.EVENT_CLAIMS].update_one({"_id": event_id}, {"$set": {"dead_lettered_at": time.time()}}, upsert=True)


def forget_dead_letter(event_id: str, db: Database | None = None) -> None:
    """For a replay of a dead letter: its event can be processed again, so it is pending again."""
    _db(db)[mongo.EVENT_CLAIMS].update_one({"_id": event_id}, {"$unset": {"dead_lettered_at": ""}})


def dead_lettered(event_id: str, db: Database | None = None) -> bool:
    """Whether a worker dead-lettered the event (and no replay has sent it again since)."""
    doc = _db(db)[mongo.EVENT_CLAIMS].find_one({"_id": event_id}, {"dead_lettered_at": 1})
    return bool(doc and doc.get("dead_lettered_at"))
