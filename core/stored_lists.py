"""The lists the site shows, as MongoDB stores them: each user's live list (written by the
workers and Celery), the published model's batch lists and similar items (one collection per
model version), and the popular and trending lists per category.
"""
from __future__ import annotations

import json
import time
from typing import Any

from pymongo.database import Database

from core import locking, mongo, rating_history


# --- each user's list ----------------------------------------------------------------------

def stored_list(doc: dict[str, Any]) -> dict[str, Any]:
    """A live list as ``recommendations`` stores it: the items as one JSON string (``items_json``).

    The workers' and Celery's lists are most of what a drain writes, and on FerretDB-SQLite every
    write of a document marshals it with a type schema per value and has SQLite parse the old and
    the new JSON for the ``_id`` index. 500 replacements of 20-item lists took 190 ms with the items
    as objects, 110-122 ms by field (``item_fields``, the format before) and 66 ms as one string
    (docs/benchmarks.md). Nothing queries inside a list: it is read whole, by ``_id``, through
    :func:`read_list`, which turns it back (and reads the two formats before).
    """
    return {**{k: v for k, v in doc.items() if k != "items"},
            "items_json": json.dumps(doc["items"], separators=(",", ":"))}


def read_list(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored list with its ``items`` as objects again (:func:`stored_list`), changed in place
    (it comes fresh from the driver). A list stored by field (the format before) is read too; one
    stored as objects (older, and every batch list) already has them."""
    if doc is None:
        return doc
    if "items_json" in doc:
        doc["items"] = json.loads(doc.pop("items_json"))
    elif "item_fields" in doc:
        fields = doc.pop("item_fields")
        n = max((len(values) for values in fields.values()), default=0)
        doc["items"] = [{f: values[i] for f, values in fields.items()} for i in range(n)]
    return doc


def get_live_recommendations(user_id: str, db: Database | None = None) -> dict[str, Any] | None:
    """The list a worker or Celery last wrote for the user (not the published batch list)."""
    db = db if db is not None else mongo.get_db()
    return read_list(db[mongo.RECOMMENDATIONS].find_one({"_id": user_id}))


def write_recommendations(user_id: str, items: list[dict[str, Any]], model_version: str,
                          source_event_id: str | None = None, as_of: float | None = None,
                          db: Database | None = None) -> dict[str, Any] | None:
    """Replace a user's list unless a newer one is stored; returns the stored document, or None
    when the account is deleted (nothing is written).

    ``as_of`` is a time when the history the list comes from was current: taken just before a
    reader (Celery) read it, and just after a worker wrote it. A stored list with a later ``as_of``
    stays (a batch list has none and is replaced): the writer that read an older history (Celery
    re-scoring while a worker processed the user's next rating) must not replace the list built
    from the newer one. Every history write is followed by its own worker's list with a later
    ``as_of``, so the last rating always shows.
    Clocks of the writing hosts are assumed synchronised (NTP); a skew only delays a list until
    the user's next rating. The stored document (ours or the newer one) is what gets announced.
    A deleted account (``deleted_users``, marked before its data goes) gets no list: Celery's
    re-scoring, which read the history before the deletion, stored one after it, and nothing
    removed it. Checked under the lock, which the worker's deletion waits for once after marking
    the account (``kafka_workers.batch.forget_user``), so no write passes the check and lands
    after the data is gone. :class:`core.locking.LeaseLost` when the lock was taken over while
    this writer stalled (nothing written).
    """
    db = db if db is not None else mongo.get_db()
    as_of = time.time() if as_of is None else float(as_of)
    doc = {"_id": user_id, "items": items, "model_version": model_version,
           "source_event_id": source_event_id, "updated_at": time.time(), "as_of": as_of}
    with locking.writer_lock(user_id, db=db) as fence:  # read-check-replace by _id, as one step
        if rating_history.is_deleted_user(user_id, db=db):
            return None
        stored = db[mongo.RECOMMENDATIONS].find_one({"_id": user_id}, {"as_of": 1})
        if stored is not None and stored.get("as_of") is not None and float(stored["as_of"]) > as_of:
            return get_live_recommendations(user_id, db=db) or doc
        new = stored_list(doc)
        fence()  # the lock taken over after the check: raises, a newer list may be stored
        db[mongo.RECOMMENDATIONS].replace_one({"_id": user_id}, new, upsert=True)
    return doc


def write_recommendations_many(lists: list[dict[str, Any]], as_of: float,
                               db: Database | None = None) -> dict[str, dict[str, Any]]:
    """Replace many users' lists at once (the worker's batches); returns the written document per
    user, which is what gets announced.

    ``lists`` are ``{"_id": user, "items", "model_version", "source_event_id"}``; ``as_of`` is a
    time when the histories they come from were current. The caller holds every user's
    :func:`core.locking.writer_lock`, and has since before ``as_of`` (the worker takes it before it
    writes the histories): every list writer holds that lock, so no stored list can be newer, and the check
    of the stored ``as_of`` that :func:`write_recommendations` makes is not needed.
    """
    now, as_of = time.time(), float(as_of)
    docs = {d["_id"]: {**d, "updated_at": now, "as_of": as_of} for d in lists}
    mongo.bulk_upsert(mongo.RECOMMENDATIONS, [stored_list(d) for d in docs.values()], db=db)
    return docs


def get_recommendations(user_id: str, db: Database | None = None) -> dict | None:
    """The user's newest list: one a worker or Celery wrote, or the published version's batch list.

    Batch lists live per model version (switched with ``CURRENT``: ``core.mongo.physical_name``), so
    a publish never overwrites the lists the workers keep; the newer of the two is the user's.
    """
    db = db if db is not None else mongo.get_db()
    live = get_live_recommendations(user_id, db=db)
    batch = db[mongo.BATCH_RECOMMENDATIONS].find_one({"_id": user_id})
    if batch is None or (live is not None and float(live.get("updated_at") or 0) >= float(batch.get("updated_at") or 0)):
        return live
    return batch


# --- the published model's lists, per version ----------------------------------------------

def get_similar_items(product_id: str, db: Database | None = None) -> list[dict]:
    db = db if db is not None else mongo.get_db()
    doc = db[mongo.SIMILAR_ITEMS].find_one({"_id": str(product_id)})
    return doc["items"] if doc else []


def drop_serving_lists(keep: set[str], db: Database | None = None) -> list[str]:
    """Drop the serving-list collections of model versions not in ``keep`` (and the unversioned
    ones of before); returns the dropped names."""
    db = db if db is not None else mongo.get_db()
    keep_names = {mongo.per_version_name(n, v) for n in mongo.PER_MODEL_VERSION for v in keep}
    dropped = [c for c in db.list_collection_names()
               if c not in keep_names and (c in mongo.PER_MODEL_VERSION
                                           or any(c.startswith(f"{n}__v") for n in mongo.PER_MODEL_VERSION))]
    for name in dropped:
        db.drop_collection(name)
    return dropped


# --- popular and trending, per category ----------------------------------------------------

def get_popular(category: str = "all", kind: str = "popular", db: Database | None = None) -> list[dict]:
    db = db if db is not None else mongo.get_db()
    doc = db[mongo.POPULAR].find_one({"_id": f"{kind}:{category}"})
    return doc["items"] if doc else []


def write_popular(category: str, kind: str, items: list[dict[str, Any]], db: Database | None = None) -> None:
    db = db if db is not None else mongo.get_db()
    db[mongo.POPULAR].replace_one({"_id": f"{kind}:{category}"},
                            {"_id": f"{kind}:{category}", "kind": kind, "category": category,
                             "items": items, "updated_at": time.time()}, upsert=True)
