"""Named locks, one document each in ``event_claims`` (``mongo.EVENT_CLAIMS``), inserted by ``_id``.

Every writer of a user's history or recommendation list holds the user's writer lock (the Kafka
workers, Celery's re-scoring, a replay after a reload), so two of them never interleave a
read-modify-replace of one user's documents. A worker's batch takes its users' locks in the same
insert that claims its events (``core.cancellation.claim_batch``), with :func:`lock_doc`.

Every other holder that writes what it read under a named lock holds it with :func:`fenced_lock`
(a product's review pages and counts, a search key, a collection's pointer): a fence before each
write stops one that stalled past ``LOCK_STALE_S`` while the lock was taken over.

A batch job holds the one batch lock for as long as it runs (``spark_jobs.common.batch_lock``):
a :func:`lease`, renewed from a thread, that expires when its holder dies.
"""
from __future__ import annotations

import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from core import mongo


LOCK_STALE_S = 10.0
LEASE_RENEWALS = 4  # a lease is renewed this many times per lease period


class LockHeld(TimeoutError):
    """The lock stayed held by another holder for the whole wait (the message names a lease's holder)."""


class LeaseLost(RuntimeError):
    """A renewal (or a write's fence, :func:`still_held`) found the lock gone: it expired while its
    holder stalled, and was taken over."""


def writer_lock_name(user_id: str) -> str:
    """The name of the lock every writer of a user's history or list holds (:func:`writer_lock`).

    One lock for both: the worker's batches write both, and two lock documents per user cost a
    batch two more writes. A writer of only one of them (a history change, a Celery re-scoring's
    list) also waits for a writer of the other: a few milliseconds, never a cycle, as no holder
    takes a second lock.
    """
    return f"user:{user_id}"


@contextmanager
def writer_lock(user_id: str, db: Database | None = None) -> Iterator[Callable[[], None]]:
    """Hold ``user_id``'s writer lock (:func:`writer_lock_name`) around a change of their history or
    list; yields the lock's fence, to call just before each write (:func:`fence`)."""
    with fenced_lock(writer_lock_name(user_id), db=db) as check:
        yield check


@contextmanager
def fenced_lock(name: str, db: Database | None = None, wait_s: float = 30.0) -> Iterator[Callable[[], None]]:
    """Hold the named lock ``name`` (:func:`named_lock`) around a read and the writes computed from
    it; yields the lock's fence, to call just before each write (:func:`fence`). Every holder that
    writes what it read under a lock holds it this way: one stalled past ``LOCK_STALE_S`` while
    another took the lock over would otherwise write over the newer holder's writes."""
    taken_at = time.monotonic()  # before the lock document's ``at``: its age is never underestimated
    with named_lock(name, db=db, wait_s=wait_s) as token:
        yield fence([name], token, taken_at, db=db)


def fence(names: Iterable[str], token: str, taken_at: float, db: Database | None = None) -> Callable[[], None]:
    """The fence of writes under the locks ``names``, which ``token`` took after ``taken_at``
    (``time.monotonic()``): call it just before each write.

    Guaranteed: a write that follows its call within half ``LOCK_STALE_S`` lands while every lock
    is still this holder's; or the call raised :class:`LeaseLost` (a lock was taken over) and the
    write must not happen. While the locks are younger than half ``LOCK_STALE_S`` a call returns
    at once (nobody takes a lock over before ``LOCK_STALE_S``), so a quick writer pays no round
    trip; after that it is :func:`still_held`, which renews them.

    What gets through: a stall of half ``LOCK_STALE_S`` or more between a call and the write it
    fences (the write lands after a takeover); on FerretDB v1, a takeover inside the renewal's own
    read-then-write (after a stall of ``LOCK_STALE_S``, within the same millisecond); holders whose
    clocks disagree by a good part of ``LOCK_STALE_S``."""
    names = list(names)
    fresh_since = taken_at

    def check() -> None:
        nonlocal fresh_since
        if time.monotonic() - fresh_since < LOCK_STALE_S / 2:
            return
        asked_at = time.monotonic()
        still_held(names, token, db=db)
        fresh_since = asked_at
    return check


def still_held(names: Iterable[str], token: str, db: Database | None = None) -> None:
    """The fence of a write under the locks ``names``: renew them (``at`` now) if ``token`` still
    holds every one, else raise :class:`LeaseLost` and let the caller write nothing.

    Why: a holder stalled past ``LOCK_STALE_S`` (a GC or VM pause, a server slow to answer) may
    have been taken over: the next writer then read and wrote the same documents, and this
    holder's write, computed from what it read before, would replace theirs (a rating or a newer
    list lost: tests/integration/test_writer_fencing.py).

    Guaranteed: when it returns, every lock was this holder's, and is again for ``LOCK_STALE_S``
    from the renewal. One ``update_many`` by ``_id`` and token, like :func:`release_locks` (16 ms for
    200 locks on FerretDB here, hence :func:`fence`, which asks only when the locks are old enough
    to need it).

    What gets through: a stall of ``LOCK_STALE_S`` between this call and the write it fences. A
    fencing token checked by the write itself would close that too, but a filter beside ``_id`` is
    no atomic step on FerretDB v1 (a read, then a write) and scans there; for the same reason, on
    FerretDB v1 a takeover landing inside this update's read-then-write is not seen.
    """
    names = sorted(set(names))
    if not names:
        return
    db = db if db is not None else mongo.get_db()
    kept = db[mongo.EVENT_CLAIMS].update_many({"_id": {"$in": names}, "token": token},
                                       {"$set": {"at": time.time()}}).matched_count
    if kept != len(names):
        raise LeaseLost(f"{len(names) - kept} of {len(names)} lock(s) ({names[0]}, ...) taken over while held "
                        "(the holder stalled past LOCK_STALE_S); nothing written")


def lock_doc(name: str, token: str, at: float) -> dict[str, Any]:
    """The document that holds lock ``name`` for ``token`` since ``at`` (its age tells a stale one):
    inserted by :func:`named_lock`, :func:`take_locks` and a worker's claim of its batch
    (``core.cancellation.claim_batch``)."""
    return {"_id": name, "token": token, "at": at}


@contextmanager
def named_lock(name: str, db: Database | None = None, wait_s: float = 30.0) -> Iterator[str]:
    """Hold a named lock (one document, inserted by ``_id``) around a write; yields its token (for
    :func:`still_held`).

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
        yield token
    finally:
        db[mongo.EVENT_CLAIMS].delete_one({"_id": name, "token": token})


def _expired(held: dict[str, Any], now: float) -> bool:
    """Whether a lock document is past its lease (``expires``, a :func:`lease`'s) or, without one,
    older than ``LOCK_STALE_S``."""
    return now > float(held.get("expires", float(held.get("at", 0)) + LOCK_STALE_S))


def _acquire(name: str, token: str, deadline: float, wait_s: float, db: Database,
             fields: Callable[[float], dict[str, Any]] | None = None, poll_s: float = 0.05,
             on_wait: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any] | None:
    """Insert the lock document ``name`` (waiting while another writer holds it, removing a stale one).

    ``fields(now)``: more of the document (a lease's holder and expiry); ``poll_s``: the longest
    pause between tries; ``on_wait(held)``: told once that another holder makes it wait. Returns
    the stale holder's document it removed, if any; :class:`LockHeld` names the holder that
    outlasted ``wait_s``.
    """
    delay, stale, told = 0.001, None, False
    while True:
        now = time.time()
        try:
            db[mongo.EVENT_CLAIMS].insert_one({**lock_doc(name, token, now), **(fields(now) if fields else {})})
            return stale
        except DuplicateKeyError:
            held = db[mongo.EVENT_CLAIMS].find_one({"_id": name}) or {}
            if held and _expired(held, time.time()):
                db[mongo.EVENT_CLAIMS].delete_one({"_id": name, "token": held.get("token")})
                stale = held
                continue
            if time.monotonic() > deadline:
                raise LockHeld(f"lock {name} held for more than {wait_s:.0f}s{describe(held)}") from None
            if held and on_wait is not None and not told:
                on_wait(held)
                told = True
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, poll_s)


def describe(held: dict[str, Any]) -> str:
    """Who holds a lock, from its document: " by run R, stage S, host H, pid P, since T" (what a
    :func:`lease` holder recorded; "" for a plain lock)."""
    who = [f"{key.replace('_', ' ')} {held[key]}" for key in ("run_id", "stage", "host", "pid") if key in held]
    if "started_at" in held:
        who.append("since " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(held["started_at"]))))
    return f" by {', '.join(who)}" if who else ""


def exit_now(message: str) -> None:
    """End the process at once, status 1: what a :func:`lease` holder does when it finds its lease
    gone, as another holder may be writing the same things by now.

    As ``kill -9`` would, which every holder survives (a batch job's stage is redone). Gentler ways
    fail: a SIGINT to the main thread, blocked in a Spark call, makes PySpark's handler cancel the
    jobs over the very py4j connection that call is reading ("reentrant call"), and the driver
    hangs up on its JVM; a job outside Spark (numpy training, publish) would not notice a cancel.
    """
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)


@contextmanager
def lease(name: str, holder: dict[str, Any], lease_s: float, wait_s: float, db: Database | None = None,
          poll_s: float = 5.0, on_wait: Callable[[dict[str, Any]], None] | None = None,
          on_lost: Callable[[str], None] = exit_now) -> Iterator[dict[str, Any] | None]:
    """Hold lock ``name`` for as long as a long job runs; yields the expired holder's document it
    took over, if any.

    The lock document carries ``holder`` (who: a run id, stage, host, pid) for whoever waits, and
    expires ``lease_s`` after its last renewal. A thread renews it ``LEASE_RENEWALS`` times per
    period while the body runs, so a holder that died (``kill -9``, a lost host) blocks the next
    one for at most ``lease_s``: an expired lease is removed and taken over. Another holder is
    waited for up to ``wait_s`` (polled at most ``poll_s`` apart, ``on_wait`` told once); then
    :class:`LockHeld` names it. The holders' clocks must agree to well within ``lease_s``.

    A renewal that finds the lease gone (it expired while this process stalled and another holder
    took it, or the server was unreachable for the whole lease) calls ``on_lost`` from the renewing
    thread, by default :func:`exit_now`; when it returns, leaving the block raises :class:`LeaseLost`.
    """
    db = db if db is not None else mongo.get_db()
    token = uuid.uuid4().hex
    stale = _acquire(name, token, time.monotonic() + wait_s, wait_s, db,
                     fields=lambda now: {**holder, "expires": now + lease_s}, poll_s=poll_s, on_wait=on_wait)
    try:
        with renewing(_lease_renewal(name, token, lease_s, on_lost, db), lease_s / LEASE_RENEWALS,
                      f"lease {name}") as lost:
            yield stale
    finally:  # once no renewal can run: one after the delete would find the lease gone
        db[mongo.EVENT_CLAIMS].delete_one({"_id": name, "token": token})
    if lost.is_set():
        raise LeaseLost(f"lost the lease on lock {name} while holding it")


def _lease_renewal(name: str, token: str, lease_s: float, on_lost: Callable[[str], None],
                   db: Database) -> Callable[[], bool | None]:
    """One renewal of lease ``token`` of lock ``name`` (:func:`renewing`'s ``renew``); on finding it
    gone, ``on_lost`` is called once. An unreachable server is retried until the lease has run out."""
    good_until = time.time() + lease_s

    def renew() -> bool | None:
        nonlocal good_until
        now = time.time()
        try:
            kept = db[mongo.EVENT_CLAIMS].update_one({"_id": name, "token": token},
                                              {"$set": {"at": now, "expires": now + lease_s}}).matched_count
        except PyMongoError:
            kept = None if now < good_until else 0
        if kept:
            good_until = now + lease_s
            return True
        if kept == 0:
            on_lost(f"lock {name}: lost the lease (it ran out, and another holder may have taken it); stopping")
            return False
        return None
    return renew


@contextmanager
def renewing(renew: Callable[[], bool | None], period_s: float, name: str) -> Iterator[threading.Event]:
    """Call ``renew`` every ``period_s`` from a thread of its own while the block runs: it answers
    True (renewed), None (not now: tried again next time) or False (lost: taken over or run out),
    which sets the yielded event and ends the renewals. A lease of a batch job (:func:`lease`) and
    Celery's re-score mark (kafka_workers/tasks.py) are kept this way through work that never
    stops to renew them. The thread is stopped and joined when the block ends."""
    stop, lost = threading.Event(), threading.Event()

    def run() -> None:
        while not stop.wait(period_s):
            if renew() is False:
                lost.set()
                return

    renewer = threading.Thread(target=run, name=name, daemon=True)
    renewer.start()
    try:
        yield lost
    finally:
        stop.set()
        renewer.join()


def take_locks(names: Iterable[str], token: str, db: Database | None = None,
               wait_s: float = 30.0) -> Callable[[], None]:
    """Take the locks ``names`` under ``token`` (given back by :func:`release_locks`): one
    ``insert_many``; when another writer holds some of them, everything taken is given back and the
    names are taken one at a time in sorted order, so two such callers never wait on each other in
    a circle. Returns the locks' fence, to call just before each write under them (:func:`fence`)."""
    db = db if db is not None else mongo.get_db()
    names = sorted(set(names))
    taken_at = time.monotonic()  # before every lock document's ``at``
    check = fence(names, token, taken_at, db=db)
    if not names:
        return check
    now = time.time()
    if not mongo.insert_new(db[mongo.EVENT_CLAIMS], [lock_doc(n, token, now) for n in names]):
        return check
    release_locks(names, token, db=db)
    deadline, taken = time.monotonic() + wait_s, []
    try:
        for n in names:
            _acquire(n, token, deadline, wait_s, db)
            taken.append(n)
    except BaseException:
        release_locks(taken, token, db=db)
        raise
    return check


def release_locks(names: Iterable[str], token: str, db: Database | None = None) -> None:
    """Give back the locks of :func:`take_locks` (those of ``names`` this token holds): one
    ``delete_many`` by ``_id`` and token, through the ``_id`` index on MongoDB and on the FerretDB
    build of bin/services (stock FerretDB v1 reads the whole collection for it, every event's claim
    included)."""
    names = list(names)
    if names:
        (db if db is not None else mongo.get_db())[mongo.EVENT_CLAIMS].delete_many({"_id": {"$in": names}, "token": token})
