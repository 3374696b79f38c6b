"""Live rating events and each user's rating history.

A rating from the site is stored once by its event id in ``ratings`` (a redelivery is a no-op)
and applied to the user's ``user_history`` document, which holds every batch review and live
rating of that user and is what the recommenders fold in. Every change of a history goes through
:func:`apply_history_change` (the newest change of a product wins; at the same time, by
:func:`change_key`, which the reload's Spark merge sorts by too) under the user's writer lock
(core/locking.py). A deleted account is marked in ``deleted_users`` before its data goes, so
nothing arriving later brings a history back.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Iterable

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from core import events, locking, mongo

log = logging.getLogger(__name__)


# --- live rating events --------------------------------------------------------------------

def rating_doc(event: dict[str, Any], state: str = "stored") -> dict[str, Any]:
    """How a live rating is stored in ``ratings`` (keyed by its event id)."""
    return {"_id": event["event_id"], "user_id": event["user_id"], "product_id": event["product_id"],
            "rating": int(event["rating"]), "text": event.get("text", ""), "ts": float(event["ts"]),
            "action": event.get("action", "rate"), "stored_at": time.time(), "state": state}


def store_rating(event: dict[str, Any], db: Database | None = None) -> bool:
    """Store one live rating by its event id; returns False if it was already stored.

    Insert-by-id (not upsert) makes a redelivered event a no-op, which is what exactly-once
    storage on top of Kafka's at-least-once delivery needs.
    """
    db = db if db is not None else mongo.get_db()
    try:
        db[mongo.RATINGS].insert_one(rating_doc(event))
        return True
    except DuplicateKeyError:
        return False


def store_ratings(docs: list[dict[str, Any]], db: Database | None = None) -> set[str]:
    """:func:`store_rating` for a batch (documents from :func:`rating_doc`) in one unordered
    ``insert_many``; returns the ids that were stored before (a redelivery), which keep their
    first document."""
    db = db if db is not None else mongo.get_db()
    return {docs[i]["_id"] for i in mongo.insert_new(db[mongo.RATINGS], docs)}


def mark_ratings_processed(versions: dict[str, str | None], db: Database | None = None) -> None:
    """Mark stored ratings processed: {event id: model version of the list written}."""
    db = db if db is not None else mongo.get_db()
    now = time.time()
    mongo.set_by_ids(mongo.RATINGS, {eid: {"state": "processed", "processed_at": now, "model_version": v}
                         for eid, v in versions.items()}, db=db, upsert=False)


def get_rating(event_id: str, db: Database | None = None) -> dict | None:
    db = db if db is not None else mongo.get_db()
    return db[mongo.RATINGS].find_one({"_id": str(event_id)})


def drop_event(event_id: str, db: Database | None = None) -> None:
    """Forget a stored event (one of a deleted account that arrived after the deletion)."""
    db = db if db is not None else mongo.get_db()
    db[mongo.RATINGS].delete_one({"_id": str(event_id)})


# --- histories -----------------------------------------------------------------------------

# A history's products whose rating is a batch review dated late enough to fall within trending's
# window (core/trending_votes.py, whose votes are the shoppers' live ratings only). The batch load
# lists them (spark_jobs.mongo_load.user_history_docs); only those: a review dated a window before
# the load can never vote, and the Amazon reviews are years old, so most histories list none (and
# store no list: :func:`history_doc`, and the load alike).
BATCH = "batch"


def history_entries(doc: dict | None) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """({product: (rating, ts)}, {product: removed at}) of a ``user_history`` document.

    The history is stored as arrays of ``{p, r, t}`` / ``{p, t}`` subdocuments (:func:`history_doc`)
    because a product id is data, not a field name: FerretDB v1 refuses keys containing "." or
    starting with "$", so the former map keyed by product id could not hold such a rating (the
    worker dead-lettered it). Documents of that former shape (``{product: [rating, ts]}``) are still
    read, so no migration is needed: the next batch load or worker write rewrites them.
    """
    doc = doc or {}
    ratings, removed = doc.get("ratings") or [], doc.get("removed") or []
    if isinstance(ratings, dict):
        rated = {pid: (float(v[0]), float(v[1])) for pid, v in ratings.items()}
    else:
        rated = {e["p"]: (float(e["r"]), float(e["t"])) for e in ratings}
    if isinstance(removed, dict):
        gone = {pid: float(t) for pid, t in removed.items()}
    else:
        gone = {e["p"]: float(e["t"]) for e in removed}
    return rated, gone


def history_doc(user_id: str, ratings: dict[str, tuple[float, float]], removed: dict[str, float],
                batch: Iterable[str] = ()) -> dict[str, Any]:
    """The stored form of a user's history (read back by :func:`history_entries`); ``batch``: the
    products whose rating is a recent batch review (:func:`recent_batch_reviews`), kept only when
    there is one (a history from before the field has none)."""
    doc = {"_id": user_id, "ratings": [{"p": p, "r": float(r), "t": float(t)} for p, (r, t) in ratings.items()],
           "removed": [{"p": p, "t": float(t)} for p, t in removed.items()]}
    batch = sorted(set(batch) & set(ratings))
    if batch:
        doc[BATCH] = batch
    return doc


# A change of one product in a history: (product, rating or None for a removal, ts), as
# :func:`apply_history_change` takes it
Change = tuple[str, float | None, float]


def recent_batch_reviews(doc: dict | None, ratings: dict[str, tuple[float, float]] | None = None,
                         changes: Iterable[Change] = ()) -> set[str]:
    """The products a history lists as recent batch reviews (:data:`BATCH`).

    With ``ratings``, the history as a live writer left it after applying ``changes``: the listed
    products whose rating it left as read (a live rating that replaced one is no longer a batch
    review), less those one of the changes ties exactly (:func:`ties_entry`). Every writer of a
    history keeps the list this way (:func:`change_history`, kafka_workers/batch.py), and writes the
    history when the list is shorter than the one read even if no rating changed: an exact tie
    changes none."""
    listed = set((doc or {}).get(BATCH) or [])
    if ratings is None or not listed:
        return listed
    before = history_entries(doc)[0]
    kept = {p for p in listed if p in ratings and ratings[p] == before.get(p)}
    return kept - {p for p, rating, ts in changes if ties_entry(ratings, p, rating, ts)}


def ties_entry(ratings: dict[str, tuple[float, float]], product_id: str, rating: float | None, ts: float) -> bool:
    """Is a live rating the very entry the history holds for the product (same rating, same ts)?
    Then that entry is the live rating's too, and no longer a batch review: the reload's merge lets
    a live rating win an exact tie with a review, and the window's events a rebuild folds hold it
    as a vote. :func:`apply_history_change` changes nothing for it, so
    :func:`recent_batch_reviews` takes it off the list."""
    return rating is not None and ratings.get(product_id) == (float(rating), float(ts))


def rating_values(rated: dict[str, tuple[float, float]]) -> dict[str, float]:
    """{product: rating} of {product: (rating, ts)}: what a fold-in and a list need."""
    return {pid: r for pid, (r, _t) in rated.items()}


def user_ratings(user_id: str, db: Database | None = None) -> dict[str, float]:
    """Everything a user has rated (batch reviews and live ratings; the latest rating wins)."""
    return rating_values(user_history(user_id, db=db))


def user_history(user_id: str, db: Database | None = None) -> dict[str, tuple[float, float]]:
    """{product: (rating, ts)} of everything a user has rated (the staff's view of a user)."""
    db = db if db is not None else mongo.get_db()
    return history_entries(db[mongo.USER_HISTORY].find_one({"_id": user_id}))[0]


def history_unless_deleted(user_id: str, db: Database | None = None) -> dict[str, float] | None:
    """``user_ratings``, or None for a deleted account. Only the tests call it now (the read order it
    shares with :func:`change_history`); the worker's batches read ``deleted_users`` in their one read."""
    db = db if db is not None else mongo.get_db()
    doc = _history_doc_unless_deleted(user_id, db)
    return None if doc is None else rating_values(history_entries(doc)[0])


def _history_doc_unless_deleted(user_id: str, db: Database, history: str = mongo.USER_HISTORY) -> dict | None:
    """The user's ``user_history`` document ({} when they have none yet), or None for a deleted
    account, whatever its history: a batch reload builds histories from the reviews and may bring
    a deleted account's back, whose late event then went into it. The history is read first, then
    ``deleted_users`` (an account is marked there before its data goes): read the other way round,
    an account deleted between the two reads would have no history and not be deleted, and a writer
    would bring its history back. The reads of :func:`history_unless_deleted` and :func:`change_history`
    (``history``: the generation it reads, a physical name)."""
    doc = db[history].find_one({"_id": user_id})
    return None if is_deleted_user(user_id, db=db) else (doc or {})


def add_to_history(user_id: str, product_id: str, rating: float, ts: float,
                   db: Database | None = None) -> dict[str, float] | None:
    """Record a live rating in the user's history and return the whole history.

    None means the account was deleted (:func:`core.erasure.delete_user_data`): nothing
    is recorded for it.
    """
    return change_history(user_id, product_id, float(rating), ts, db=db)


def remove_from_history(user_id: str, product_id: str, ts: float,
                        db: Database | None = None) -> dict[str, float] | None:
    """Remove a rating (the shopper took it back); returns the whole history, None if deleted."""
    return change_history(user_id, product_id, None, ts, db=db)


# Reloads a change follows between its read and its write; after that it writes where it read (a
# generation retired meanwhile: the reload's replay of live ratings carries the change over).
_RELOADS_MET = 3


def change_history(user_id: str, product_id: str, rating: float | None, ts: float,
                   db: Database | None = None) -> dict[str, float] | None:
    """Set (``rating``) or remove (None) one rating in the user's history; the newest change wins
    (:func:`apply_history_change`).

    Read-modify-replace of one ``_id`` document under the user's lock
    (:func:`core.locking.writer_lock`): two writers of one user (two members holding one partition
    during a rebalance, a replay beside a worker) both get their change in, where the unlocked
    version lost one of them. Neither a filter on a version field nor ``$set`` of one key is atomic
    on FerretDB v1, and either filter scans the collection there, so the lock is the portable way.
    A change older than the one stored (a redelivery, or two requests of the user racing) does not
    overwrite a newer one; a removal leaves its time in ``removed`` so an older rating of the same
    product cannot bring it back. Returns None for a deleted account (a second ``_id`` read, in
    ``deleted_users``), and changes nothing for it. :class:`core.locking.LeaseLost` when the lock
    was taken over while this writer stalled (nothing written: retry).
    A change is marked for the trending refresh (core/trending.py), which reads changed histories.
    The history is written into the generation it was read from; a reload that moved the pointer
    in between (``core.mongo``) gets the change made again on its new history, which holds what the
    load brought: written by the collection's name, the old history replaced it.
    """
    db = db if db is not None else mongo.get_db()
    with locking.writer_lock(user_id, db=db) as fence:
        for attempt in range(_RELOADS_MET):  # read, change and write one generation (a reload may move it)
            history = mongo.physical_name(db, mongo.USER_HISTORY)
            doc = _history_doc_unless_deleted(user_id, db, history)
            if doc is None:
                return None
            ratings, removed = history_entries(doc)
            changed = apply_history_change(ratings, removed, product_id, rating, ts)
            listed = recent_batch_reviews(doc, ratings, [(product_id, rating, ts)])
            unchanged = not changed and doc and listed == recent_batch_reviews(doc)  # (no doc yet; a tie's list)
            if unchanged:
                break
            fence()  # the lock taken over while this stalled: raises, the newer history stays
            if mongo.physical_name(db, mongo.USER_HISTORY) != history:
                if attempt < _RELOADS_MET - 1:
                    continue  # moved since the read: written by name, the new one lost what the load brought
                log.warning("user_history of %s moved %d times during one change; written into %s, which the "
                            "reload's replay of live ratings carries over", user_id, _RELOADS_MET, history)
            db[history].replace_one({"_id": user_id}, history_doc(user_id, ratings, removed, listed), upsert=True)
            break
    # after the write, changed or not: the refresh that takes the mark reads this history, and a
    # change already written by a batch that failed after its histories' write (the one-at-a-time
    # retry finds it there) is marked here, or trending would never read it
    from core import trending  # here: core.trending_votes, which core.trending imports, imports this module

    trending.mark_changed([user_id], db=db)
    return rating_values(ratings)


HISTORY_ACTIONS = (events.RATE, events.UNRATE)  # the events that change a history ("not interested": exclusions)


def history_rating(action: str, rating: float) -> float | None:
    """What an event of ``HISTORY_ACTIONS`` sets in a history: its rating, or None (removed).
    One rule for the worker's batches, a reload's live ratings and their replay after it."""
    return None if action == events.UNRATE else float(rating)


def change_key(rating: float | None, ts: float) -> tuple[float, bool, float]:
    """Of two changes of one product (a rating, or a removal: ``rating`` None), the history keeps
    the one with the greater key: the later ``ts``; at the same ``ts`` a removal (taking a rating
    back is the shopper's explicit wish, and the safer error), and of two ratings the lower. A
    total order on what both sides have (a batch review has no event id, a history keeps none), so
    the result does not depend on the order changes arrive in. :func:`spark_change_order` is the
    same rule for the reload's Spark merge; tests/integration/test_history_ties_batch.py holds the
    two together."""
    return (float(ts), rating is None, -float(rating or 0.0))


def spark_change_order() -> list:
    """:func:`change_key` as a Spark window order whose first row wins (``ts``, ``rating`` columns;
    spark_jobs.mongo_load.user_history_docs). pyspark is imported here, not at the top: the site
    and the workers import this module without it."""
    from pyspark.sql import functions as F

    return [F.col("ts").desc(), F.col("rating").asc_nulls_first()]


def apply_history_change(ratings: dict[str, tuple[float, float]], removed: dict[str, float], product_id: str,
                         rating: float | None, ts: float) -> bool:
    """Set (``rating``) or remove (None) one rating in a history held in memory, unless the change
    there for that product wins over it (:func:`change_key`: a newer one, or one of the same time
    that the order puts first); True if the history changed. The one rule every history writer
    applies (one event at a time, or a batch of a user's events in order): an older change does not
    overwrite a newer one, a redelivered one changes nothing, and changes of the same time end the
    same whatever order they come in."""
    current = ratings.get(product_id)
    kept = [change_key(*current)] if current is not None else []
    if product_id in removed:
        kept.append(change_key(None, removed[product_id]))
    if kept and max(kept) >= change_key(rating, ts):
        return False
    if rating is None:  # past the check above a removal always changes the history: it takes a
        ratings.pop(product_id, None)  # rating away, or records a newer removal time, which keeps
        removed[product_id] = float(ts)  # out a rating delivered late from between the two
        return True
    ratings[product_id] = (float(rating), float(ts))
    removed.pop(product_id, None)
    return True


# --- after a batch reload ------------------------------------------------------------------

def reapply_live_ratings(since: float, db: Database | None = None, max_passes: int = 5) -> int:
    """Write every live rating and removal stored since ``since`` into the (new) user histories
    again; returns how many were missing.

    A reload builds ``user_history`` from the ratings stored when it started; changes the
    workers stored later went into the generation being replaced. Replaying them (latest change
    wins) after every process reads the new generation is what keeps a reload from erasing them.
    A replay goes through :func:`change_history` (the user's lock, newest change wins), so it
    never overwrites a rating a worker adds meanwhile; each pass re-reads the changes stored since
    ``since`` and passes repeat until one finds nothing missing.
    """
    db = db if db is not None else mongo.get_db()
    replayed = 0
    for _ in range(max_passes):
        missing = 0
        for user, changes in _live_changes_by_user(since, db).items():
            doc = db[mongo.USER_HISTORY].find_one({"_id": user})
            (have, removed), listed = history_entries(doc), recent_batch_reviews(doc)
            for pid, (rating, ts) in changes.items():
                if rating is None:  # a removal is missing while a rating it came after is there
                    if pid in have and have[pid][1] <= ts:
                        missing += 1
                        remove_from_history(user, pid, ts, db=db)
                elif removed.get(pid, float("-inf")) >= ts:
                    continue  # a removal there wins (change_key): adding it would change nothing
                # a batch review's time is whole seconds: the same rating is not missing, unless the
                # review is listed (BATCH): a live rating it does not beat (change_key) wins it, as in
                # the reload's merge; one it beats (as late, higher) was never missing
                elif pid not in have or have[pid][1] < math.floor(ts) or (
                        pid in listed and change_key(rating, ts) >= change_key(*have[pid])):
                    missing += 1
                    add_to_history(user, pid, rating, ts, db=db)
        replayed += missing
        if not missing:
            break
    return replayed


def _live_changes_by_user(since: float, db: Database) -> dict[str, dict[str, tuple[float | None, float]]]:
    """{user: {product: (rating, or None when removed, ts)}} of the live ratings and removals stored
    since ``since``, the one :func:`change_key` puts first winning for each product (as in the
    reload's merge, whatever order they are read in). "Not interested" is stored in ``ratings``
    too but changes no history (its own collection survives a reload)."""
    by_user: dict[str, dict[str, tuple[float | None, float]]] = {}
    fields = {"user_id": 1, "product_id": 1, "rating": 1, "ts": 1, "action": 1}
    for d in db[mongo.RATINGS].find({"stored_at": {"$gte": since}}, fields):
        action = d.get("action", events.RATE)
        if action not in HISTORY_ACTIONS:
            continue
        change = (history_rating(action, d["rating"]), float(d["ts"]))
        seen = by_user.setdefault(d["user_id"], {}).get(d["product_id"])
        if seen is None or change_key(*seen) < change_key(*change):
            by_user[d["user_id"]][d["product_id"]] = change
    return by_user


# --- deleted accounts ----------------------------------------------------------------------
# Their marks in ``deleted_users``, made before an account's data goes (core.erasure); every
# writer of a history or a list reads them, so nothing arriving later brings the account back.

def is_deleted_user(user_id: str, db: Database | None = None) -> bool:
    db = db if db is not None else mongo.get_db()
    return db[mongo.DELETED_USERS].find_one({"_id": user_id}, {"_id": 1}) is not None


def deleted_user_ids(db: Database | None = None, since: float | None = None) -> set[str]:
    """Recommender ids of deleted accounts: the batch jobs leave their reviews out. With ``since``,
    only those deleted then or later: a batch job erases them again after it wrote what it had
    read before their deletion (a scan of ``deleted_users``, a small collection)."""
    db = db if db is not None else mongo.get_db()
    query = {} if since is None else {"deleted_at": {"$gte": since}}
    return {d["_id"] for d in db[mongo.DELETED_USERS].find(query, {"_id": 1})}
