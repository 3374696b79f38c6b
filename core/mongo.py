"""The MongoDB access layer: every read and write of the catalog, reviews, live ratings,
recommendations and model records goes through here.

Keeping all queries in one module is what lets the same code run against FerretDB v1 locally and
real MongoDB in production: only CRUD, bulk writes, upserts, simple and unique indexes and simple
aggregation stages are used ($match, $group, $sort, $limit, $project). Search uses anchored or
case-insensitive ``$regex`` on escaped user input, never ``$text`` (FerretDB v1 has no text index)
and never a user-supplied operator.
"""
from __future__ import annotations

import re
import time
from functools import lru_cache
from typing import Any, Iterable, Iterator

from pymongo import ASCENDING, DESCENDING, MongoClient, ReplaceOne
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from core.settings import get_settings

PRODUCTS = "products"
REVIEWS = "reviews"
RATINGS = "ratings"  # live rating events from the site, keyed by event id
RECOMMENDATIONS = "recommendations"  # one document per user
SIMILAR_ITEMS = "similar_items"  # one document per product
POPULAR = "popular"  # precomputed popular / trending lists per category
MODEL_VERSIONS = "model_versions"
PIPELINE_RUNS = "pipeline_runs"


@lru_cache(maxsize=8)
def get_client(uri: str | None = None) -> MongoClient:
    """One pooled client per URI and process (pymongo clients are thread-safe, not fork-safe)."""
    return MongoClient(uri or get_settings().mongo_uri, serverSelectionTimeoutMS=5000, tz_aware=False)


def get_db(uri: str | None = None, name: str | None = None) -> Database:
    return get_client(uri)[name or get_settings().mongo_db]


def ensure_indexes(db: Database | None = None) -> None:
    """Create the indexes the site and the workers query by; safe to call on every start."""
    db = db if db is not None else get_db()
    db[REVIEWS].create_index([("product_id", ASCENDING), ("ts", DESCENDING)])
    db[REVIEWS].create_index([("user_id", ASCENDING)])
    db[PRODUCTS].create_index([("category", ASCENDING), ("n_reviews", DESCENDING)])
    db[PRODUCTS].create_index([("n_reviews", DESCENDING)])
    db[RATINGS].create_index([("user_id", ASCENDING), ("ts", ASCENDING)])
    db[RATINGS].create_index([("ts", DESCENDING)])
    db[MODEL_VERSIONS].create_index([("published_at", DESCENDING)])


def bulk_upsert(collection: str, docs: Iterable[dict[str, Any]], batch_size: int = 1000,
                db: Database | None = None) -> dict[str, int]:
    """Replace-or-insert documents by ``_id`` in unordered batches.

    Replacing by a deterministic ``_id`` is what makes every load idempotent: a re-run rewrites the
    same documents instead of adding copies.
    """
    db = db if db is not None else get_db()
    coll = db[collection]
    totals = {"matched": 0, "upserted": 0, "modified": 0, "sent": 0}
    batch: list[ReplaceOne] = []

    def flush() -> None:
        if not batch:
            return
        result = coll.bulk_write(batch, ordered=False)
        totals["matched"] += result.matched_count
        totals["upserted"] += result.upserted_count
        totals["modified"] += result.modified_count
        totals["sent"] += len(batch)
        batch.clear()

    for doc in docs:
        batch.append(ReplaceOne({"_id": doc["_id"]}, doc, upsert=True))
        if len(batch) >= batch_size:
            flush()
    flush()
    return totals


# --- catalog -------------------------------------------------------------------------------

_PRODUCT_LIST_FIELDS = {"title": 1, "category": 1, "price": 1, "n_reviews": 1, "avg_rating": 1, "brand": 1}


def list_products(page: int = 1, per_page: int = 24, category: str | None = None,
                  query: str | None = None, db: Database | None = None) -> tuple[list[dict], int]:
    """A page of products, most reviewed first, with the total count for pagination."""
    db = db if db is not None else get_db()
    flt: dict[str, Any] = {}
    if category:
        flt["category"] = str(category)
    if query:
        flt["title"] = {"$regex": re.escape(str(query)[:100]), "$options": "i"}
    page, per_page = max(1, int(page)), max(1, min(100, int(per_page)))
    cursor = (db[PRODUCTS].find(flt, _PRODUCT_LIST_FIELDS)
              .sort([("n_reviews", DESCENDING), ("_id", ASCENDING)])
              .skip((page - 1) * per_page).limit(per_page))
    return list(cursor), db[PRODUCTS].count_documents(flt)


def get_product(product_id: str, db: Database | None = None) -> dict | None:
    db = db if db is not None else get_db()
    return db[PRODUCTS].find_one({"_id": str(product_id)})


def get_products(product_ids: list[str], db: Database | None = None) -> dict[str, dict]:
    """Products by id, for rendering lists of recommendations in one round trip."""
    db = db if db is not None else get_db()
    ids = [str(p) for p in product_ids]
    return {d["_id"]: d for d in db[PRODUCTS].find({"_id": {"$in": ids}}, _PRODUCT_LIST_FIELDS)}


def product_exists(product_id: str, db: Database | None = None) -> bool:
    db = db if db is not None else get_db()
    return db[PRODUCTS].count_documents({"_id": str(product_id)}, limit=1) > 0


# --- ratings --------------------------------------------------------------------------------

def store_rating(event: dict[str, Any], db: Database | None = None) -> bool:
    """Store one live rating by its event id; returns False if it was already stored.

    Insert-by-id (not upsert) makes a redelivered event a no-op, which is what exactly-once
    storage on top of Kafka's at-least-once delivery needs.
    """
    db = db if db is not None else get_db()
    doc = {"_id": event["event_id"], "user_id": event["user_id"], "product_id": event["product_id"],
           "rating": int(event["rating"]), "text": event.get("text", ""), "ts": float(event["ts"]),
           "stored_at": time.time()}
    try:
        db[RATINGS].insert_one(doc)
        return True
    except DuplicateKeyError:
        return False


def user_ratings(user_id: str, db: Database | None = None, limit: int = 5000) -> dict[str, float]:
    """Everything a user has rated, batch reviews and live ratings merged, latest rating winning."""
    db = db if db is not None else get_db()
    rows: list[tuple[float, str, float]] = []
    for doc in db[REVIEWS].find({"user_id": user_id}, {"product_id": 1, "rating": 1, "ts": 1}).limit(limit):
        rows.append((float(doc.get("ts", 0)), doc["product_id"], float(doc["rating"])))
    for doc in db[RATINGS].find({"user_id": user_id}, {"product_id": 1, "rating": 1, "ts": 1}).limit(limit):
        rows.append((float(doc.get("ts", 0)), doc["product_id"], float(doc["rating"])))
    rows.sort()
    return {product: rating for _, product, rating in rows}


# --- recommendations ------------------------------------------------------------------------

def write_recommendations(user_id: str, items: list[dict[str, Any]], model_version: str,
                          source_event_id: str | None = None, db: Database | None = None) -> float:
    """Replace a user's recommendation list; returns its ``updated_at`` (the page polls on it)."""
    db = db if db is not None else get_db()
    updated_at = time.time()
    db[RECOMMENDATIONS].replace_one(
        {"_id": user_id},
        {"_id": user_id, "items": items, "model_version": model_version,
         "source_event_id": source_event_id, "updated_at": updated_at},
        upsert=True,
    )
    return updated_at


def write_recommendations_bulk(docs: Iterable[dict[str, Any]], db: Database | None = None) -> dict[str, int]:
    """Batch job variant: documents already shaped as ``write_recommendations`` stores them."""
    return bulk_upsert(RECOMMENDATIONS, docs, db=db)


def get_recommendations(user_id: str, db: Database | None = None) -> dict | None:
    db = db if db is not None else get_db()
    return db[RECOMMENDATIONS].find_one({"_id": user_id})


def get_similar_items(product_id: str, db: Database | None = None) -> list[dict]:
    db = db if db is not None else get_db()
    doc = db[SIMILAR_ITEMS].find_one({"_id": str(product_id)})
    return doc["items"] if doc else []


def get_popular(category: str = "all", kind: str = "popular", db: Database | None = None) -> list[dict]:
    db = db if db is not None else get_db()
    doc = db[POPULAR].find_one({"_id": f"{kind}:{category}"})
    return doc["items"] if doc else []


def write_popular(category: str, kind: str, items: list[dict[str, Any]], db: Database | None = None) -> None:
    db = db if db is not None else get_db()
    db[POPULAR].replace_one({"_id": f"{kind}:{category}"},
                            {"_id": f"{kind}:{category}", "kind": kind, "category": category,
                             "items": items, "updated_at": time.time()}, upsert=True)


def compute_popular(limit: int = 50, category: str | None = None, db: Database | None = None) -> list[dict]:
    """Most-reviewed products with a good average, from the catalog's precomputed counts."""
    db = db if db is not None else get_db()
    flt: dict[str, Any] = {"n_reviews": {"$gt": 0}}
    if category:
        flt["category"] = category
    cursor = db[PRODUCTS].find(flt, {"n_reviews": 1, "avg_rating": 1}).sort(
        [("n_reviews", DESCENDING), ("_id", ASCENDING)]).limit(limit)
    return [{"product_id": d["_id"], "score": float(d.get("n_reviews", 0))} for d in cursor]


# --- model versions -------------------------------------------------------------------------

def record_model_version(version: str, doc: dict[str, Any], db: Database | None = None) -> None:
    db = db if db is not None else get_db()
    db[MODEL_VERSIONS].update_one({"_id": version}, {"$set": {**doc, "_id": version}}, upsert=True)


def current_model_version(db: Database | None = None) -> str | None:
    """The newest published version, which workers and the site poll to hot-reload models."""
    db = db if db is not None else get_db()
    doc = db[MODEL_VERSIONS].find_one({"published": True}, sort=[("published_at", DESCENDING)])
    return doc["_id"] if doc else None


# --- pipeline runs --------------------------------------------------------------------------

def record_pipeline_run(run_id: str, job: str, doc: dict[str, Any], db: Database | None = None) -> None:
    """Record one batch job's outcome (status, reconciliation counts, metrics, timings).

    One document per (run, job), ``_id = "<run_id>:<job>"``, so re-running a job in the same run
    overwrites its record instead of adding another; the site's admin shows these to staff.
    """
    db = db if db is not None else get_db()
    db[PIPELINE_RUNS].update_one(
        {"_id": f"{run_id}:{job}"},
        {"$set": {**doc, "run_id": run_id, "job": job, "recorded_at": time.time()}},
        upsert=True,
    )


def iter_batches(cursor: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for doc in cursor:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch

