"""Named locks, one document each in ``event_claims`` (``mongo.CLAIMS``), inserted by ``_id``.

Every writer of a user's history or recommendation list holds the user's writer lock (the Kafka
workers, Celery's re-scoring, a replay after a reload), so two of them never interleave a
read-modify-replace of one user's documents. A worker's batch takes its users' locks in the same
insert that claims its events (``core.cancellation.claim_batch``), with :func:`lock_doc`.
"""
from __future__ import annotations

import random
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from core import mongo


LOCK_STALE_S = 10.0


def writer_lock_name(user_id: str) -> str:
    """The name of the lock every writer of a user's history or list holds (:func:`writer_lock`).

    One lock for both: the worker's batches write both, and two lock documents per user cost a
    batch two more writes. A writer of only one of them (a history change, a Celery re-scoring's
    list) also waits for a writer of the other: a few milliseconds, never a cycle, as no holder
    takes a second lock.
    """
    return f"user:{user_id}"


@contextmanager
def writer_lock(user_id: str, db: Database | None = None) -> Iterator[None]:
    """Hold ``user_id``'s writer lock (:func:`writer_lock_name`) around a change of their history or list."""
    with named_lock(writer_lock_name(user_id), db=db):
        yield


def lock_doc(name: str, token: str, at: float) -> dict[str, Any]:
    """The document that holds lock ``name`` for ``token`` since ``at`` (its age tells a stale one):
    inserted by :func:`named_lock`, :func:`take_locks` and a worker's claim of its batch
    (``core.cancellation.claim_batch``)."""
    return {"_id": name, "token": token, "at": at}


@contextmanager
def named_lock(name: str, db: Database | None = None, wait_s: float = 30.0) -> Iterator[None]:
    """Hold a named lock (one document, inserted by ``_id``) around a write.

    FerretDB v1 runs a filtered update as a find then a write, not atomically: a replace
    conditional on a version field still lost a quarter of concurrent history writes there
    (tests/integration/test_concurrent_writers.py). The unique ``_id`` index is atomic on both
    servers, so inserting the lock document is the one test-and-set they share; the writes under it
    filter by ``_id`` alone, the only filter FerretDB v1 answers without a scan. A holder that died
    leaves a lock older than ``LOCK_STALE_S``, which the next writer removes.
    """
    db = db if db is not None else mongo.get_db()
    token = uuid.uuid4().hex
    _acquire(name, token, time.monotonic() + wait_s, wait_s, db)
    try:
        yield
    finally:
        db[mongo.LOCKS].delete_one({"_id": name, "token": token})


def _acquire(name: str, token: str, deadline: float, wait_s: float, db: Database) -> None:
    """Insert the lock document ``name`` (waiting while another writer holds it, removing a stale one)."""
    delay = 0.001
    while True:
        try:
            db[mongo.LOCKS].insert_one(lock_doc(name, token, time.time()))
            return
        except DuplicateKeyError:
            held = db[mongo.LOCKS].find_one({"_id": name}) or {}
            if held and time.time() - float(held.get("at", 0)) > LOCK_STALE_S:
                db[mongo.LOCKS].delete_one({"_id": name, "token": held.get("token")})
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"lock {name} held for more than {wait_s:.0f}s") from None
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 0.05)


def take_locks(names: Iterable[str], token: str, db: Database | None = None, wait_s: float = 30.0) -> None:
    """Take the locks ``names`` under ``token`` (given back by :func:`release_locks`): one
    ``insert_many``; when another writer holds some of them, everything taken is given back and the
    names are taken one at a time in sorted order, so two such callers never wait on each other in
    a circle."""
    db = db if db is not None else mongo.get_db()
    names = sorted(set(names))
    if not names:
        return
    now = time.time()
    if not mongo.insert_new(db[mongo.LOCKS], [lock_doc(n, token, now) for n in names]):
        return
    release_locks(names, token, db=db)
    deadline, taken = time.monotonic() + wait_s, []
    try:
        for n in names:
            _acquire(n, token, deadline, wait_s, db)
            taken.append(n)
    except BaseException:
        release_locks(taken, token, db=db)
        raise


def release_locks(names: Iterable[str], token: str, db: Database | None = None) -> None:
    """Give back the locks of :func:`take_locks` (those of ``names`` this token holds): one
    ``delete_many`` by ``_id`` and token, through the ``_id`` index on MongoDB and on the FerretDB
    build of bin/services (stock FerretDB v1 reads the whole collection for it, every event's claim
    included)."""
    names = list(names)
    if names:
        (db if db is not None else mongo.get_db())[mongo.LOCKS].delete_many({"_id": {"$in": names}, "token": token})
