"""The MongoDB access layer: every read and write of the catalog, reviews, live ratings,
recommendations and model records goes through here.

Keeping all queries in one module is what lets the same code run against FerretDB v1 locally and
real MongoDB in production: only CRUD, bulk writes, upserts, simple and unique indexes and simple
aggregation stages are used ($match, $group, $sort, $limit, $project), and no document holds an
array directly inside an array (FerretDB v1 rejects nested arrays). Search uses anchored or
case-insensitive ``$regex`` on escaped user input, never ``$text`` (FerretDB v1 has no text index)
and never a user-supplied operator.

Hot paths read and write documents by ``_id`` only. FerretDB v1 on SQLite (built by bin/services
with a one-line fix so ``_id`` lookups use their index) answers an ``_id`` read or write in 1-2 ms
but scans the whole collection for any other filter, sort or ``$in`` (about 300 ms for 9,000
products, measured here), so what a page needs is precomputed into ``_id``-keyed
documents: a user's rating history, a product's review pages, the catalog's ordering per category.
On real MongoDB the same documents are equally fast.
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
USER_HISTORY = "user_history"  # {_id: user_id, ratings: {product_id: [rating, ts]}}
PRODUCT_REVIEWS = "product_reviews"  # {_id: "<product_id>:<page>", items: [...], pages: n}
CATALOG_INDEX = "catalog_index"  # {_id: "<category>:<chunk>", ids: [...]} and {_id: "categories"}
REVIEWS_PER_PAGE = 10
CATALOG_CHUNK = 5000
ALL = "all"


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


@lru_cache(maxsize=8)
def _is_ferretdb(client: MongoClient) -> bool:
    return "ferretdbVersion" in client.admin.command("buildInfo")


def bulk_upsert(collection: str, docs: Iterable[dict[str, Any]], batch_size: int = 1000,
                db: Database | None = None) -> dict[str, int]:
    """Replace-or-insert documents by ``_id`` in unordered batches.

    Replacing by a deterministic ``_id`` is what makes every load idempotent: a re-run rewrites the
    same documents instead of adding copies. On FerretDB v1 a bulk write of 100 upserts into a
    1,400-document collection stalled the whole server here (10 took 0.5 s), while single
    ``replace_one`` calls take 1-2 ms, so there the documents go one by one (~600/s); real
    MongoDB gets proper unordered bulk writes.
    """
    db = db if db is not None else get_db()
    coll = db[collection]
    totals = {"matched": 0, "upserted": 0, "modified": 0, "sent": 0}
    if _is_ferretdb(db.client):
        for doc in docs:
            result = coll.replace_one({"_id": doc["_id"]}, doc, upsert=True)
            totals["matched"] += result.matched_count
            totals["modified"] += result.modified_count
            totals["upserted"] += 1 if result.upserted_id is not None else 0
            totals["sent"] += 1
        return totals
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


def replace_collection_start(name: str, db: Database | None = None) -> str:
    """Begin a full reload of ``name``: an empty staging collection to insert into.

    A batch load inserts into staging (``insert_many`` is ~100x faster than per-document upserts
    on FerretDB) and then :func:`replace_collection_finish` swaps it in, so a re-run ends with
    exactly the same documents, never duplicates.
    """
    db = db if db is not None else get_db()
    staging = f"{name}__staging"
    db.drop_collection(staging)
    db.create_collection(staging)
    return staging


def insert_docs(collection: str, docs: Iterable[dict[str, Any]], batch_size: int = 2000,
                db: Database | None = None) -> int:
    """Unordered ``insert_many`` in batches; returns the number inserted."""
    db = db if db is not None else get_db()
    n = 0
    for batch in iter_batches(iter(docs), batch_size):
        n += len(db[collection].insert_many(batch, ordered=False).inserted_ids)
    return n


def replace_collection_finish(name: str, db: Database | None = None) -> None:
    """Swap the staging collection in (drop + rename: FerretDB v1 lacks ``dropTarget``)."""
    db = db if db is not None else get_db()
    db.drop_collection(name)
    db.client.admin.command("renameCollection", f"{db.name}.{name}__staging", to=f"{db.name}.{name}")


# --- catalog -------------------------------------------------------------------------------

_PRODUCT_LIST_FIELDS = {"title": 1, "category": 1, "price": 1, "n_reviews": 1, "avg_rating": 1, "brand": 1,
                        "sample_summary": 1}


def categories(db: Database | None = None) -> list[dict]:
    """[{name, n_products}] most products first, as the batch load recorded them."""
    db = db if db is not None else get_db()
    doc = db[CATALOG_INDEX].find_one({"_id": "categories"})
    return doc["items"] if doc else []


def list_products(page: int = 1, per_page: int = 24, category: str | None = None,
                  query: str | None = None, db: Database | None = None) -> tuple[list[dict], int]:
    """A page of products, most reviewed first, and the total count for pagination.

    Browsing reads the precomputed order (chunks of ids per category) and then each product by
    id; a search scans titles and review snippets with an escaped, case-insensitive regex.
    """
    db = db if db is not None else get_db()
    page, per_page = max(1, int(page)), max(1, min(100, int(per_page)))
    start = (page - 1) * per_page
    if query:
        pattern = {"$regex": re.escape(str(query)[:100]), "$options": "i"}
        flt: dict[str, Any] = {"$or": [{"title": pattern}, {"search_text": pattern}]}
        if category:
            flt["category"] = str(category)
        # Sorted, paged and counted by the server: every match is ranked, not just a first batch.
        found = list(db[PRODUCTS].find(flt, _PRODUCT_LIST_FIELDS)
                      .sort([("n_reviews", DESCENDING), ("_id", ASCENDING)]).skip(start).limit(per_page))
        return found, db[PRODUCTS].count_documents(flt)
    key = str(category) if category else ALL
    total_doc = db[CATALOG_INDEX].find_one({"_id": f"{key}:count"})
    total = int(total_doc["n"]) if total_doc else 0
    ids: list[str] = []
    chunk = start // CATALOG_CHUNK
    while len(ids) < per_page and chunk * CATALOG_CHUNK < total:
        doc = db[CATALOG_INDEX].find_one({"_id": f"{key}:{chunk}"})
        if not doc:
            break
        offset = start - chunk * CATALOG_CHUNK if not ids else 0
        ids.extend(doc["ids"][offset:offset + per_page - len(ids)])
        chunk += 1
    products = get_products(ids, db=db)
    return [products[i] for i in ids if i in products], total


def get_product(product_id: str, db: Database | None = None) -> dict | None:
    db = db if db is not None else get_db()
    return db[PRODUCTS].find_one({"_id": str(product_id)})


def get_products(product_ids: list[str], db: Database | None = None) -> dict[str, dict]:
    """Products by id, one ``_id`` lookup each (fast on FerretDB and MongoDB alike; ``$in`` is not)."""
    db = db if db is not None else get_db()
    out = {}
    for pid in dict.fromkeys(str(p) for p in product_ids):
        doc = db[PRODUCTS].find_one({"_id": pid}, _PRODUCT_LIST_FIELDS)
        if doc:
            out[pid] = doc
    return out


def product_exists(product_id: str, db: Database | None = None) -> bool:
    db = db if db is not None else get_db()
    return db[PRODUCTS].find_one({"_id": str(product_id)}, {"_id": 1}) is not None


def product_reviews(product_id: str, page: int = 1, db: Database | None = None) -> tuple[list[dict], int]:
    """One page of a product's reviews (most helpful, then newest first) and the page count."""
    db = db if db is not None else get_db()
    doc = db[PRODUCT_REVIEWS].find_one({"_id": f"{product_id}:{max(1, int(page))}"})
    if not doc:
        return [], 0
    return doc["items"], int(doc["pages"])


# --- ratings --------------------------------------------------------------------------------

def store_rating(event: dict[str, Any], db: Database | None = None) -> bool:
    """Store one live rating by its event id; returns False if it was already stored.

    Insert-by-id (not upsert) makes a redelivered event a no-op, which is what exactly-once
    storage on top of Kafka's at-least-once delivery needs.
    """
    db = db if db is not None else get_db()
    doc = {"_id": event["event_id"], "user_id": event["user_id"], "product_id": event["product_id"],
           "rating": int(event["rating"]), "text": event.get("text", ""), "ts": float(event["ts"]),
           "stored_at": time.time(), "state": "stored"}
    try:
        db[RATINGS].insert_one(doc)
        return True
    except DuplicateKeyError:
        return False


def user_ratings(user_id: str, db: Database | None = None) -> dict[str, float]:
    """Everything a user has rated (batch reviews and live ratings; the latest rating wins)."""
    db = db if db is not None else get_db()
    doc = db[USER_HISTORY].find_one({"_id": user_id})
    return {pid: float(v[0]) for pid, v in (doc or {}).get("ratings", {}).items()}


def add_to_history(user_id: str, product_id: str, rating: float, ts: float,
                   db: Database | None = None) -> dict[str, float]:
    """Record a live rating in the user's history and return the whole history.

    Read-modify-replace of one ``_id`` document; a user's events are processed in order by one
    worker (Kafka key = user), so there is no concurrent writer for the same document. An older
    event than the one stored (a redelivery) does not overwrite a newer rating.
    """
    db = db if db is not None else get_db()
    doc = db[USER_HISTORY].find_one({"_id": user_id}) or {"_id": user_id, "ratings": {}}
    current = doc["ratings"].get(product_id)
    if current is None or float(current[1]) <= ts:
        doc["ratings"][product_id] = [float(rating), float(ts)]
        db[USER_HISTORY].replace_one({"_id": user_id}, doc, upsert=True)
    return {pid: float(v[0]) for pid, v in doc["ratings"].items()}


def mark_rating_processed(event_id: str, model_version: str | None, db: Database | None = None) -> None:
    db = db if db is not None else get_db()
    db[RATINGS].update_one({"_id": event_id}, {"$set": {"state": "processed", "processed_at": time.time(),
                                                        "model_version": model_version}})


def get_rating(event_id: str, db: Database | None = None) -> dict | None:
    db = db if db is not None else get_db()
    return db[RATINGS].find_one({"_id": str(event_id)})


# --- recommendations ------------------------------------------------------------------------

def write_recommendations(user_id: str, items: list[dict[str, Any]], model_version: str,
                          source_event_id: str | None = None, db: Database | None = None) -> dict[str, Any]:
    """Replace a user's recommendation list; returns the stored document (its version is announced)."""
    db = db if db is not None else get_db()
    doc = {"_id": user_id, "items": items, "model_version": model_version,
           "source_event_id": source_event_id, "updated_at": time.time()}
    db[RECOMMENDATIONS].replace_one({"_id": user_id}, doc, upsert=True)
    return doc


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
    """Most-reviewed products, from the catalog order the batch load precomputed (no scan)."""
    db = db if db is not None else get_db()
    doc = db[CATALOG_INDEX].find_one({"_id": f"{category or ALL}:0"})
    ids = (doc or {}).get("ids", [])[:limit]
    products = get_products(ids, db=db)
    return [{"product_id": i, "score": float(products[i].get("n_reviews", 0))} for i in ids if i in products]


def most_active_users(limit: int = 10, db: Database | None = None) -> list[tuple[str, int]]:
    """(user id, number of ratings) of the most active reviewers, as the batch load recorded them."""
    db = db if db is not None else get_db()
    doc = db[CATALOG_INDEX].find_one({"_id": "top_users"})
    return [(d["user_id"], int(d["n"])) for d in (doc or {}).get("items", [])[:limit]]


# --- model versions -------------------------------------------------------------------------

def record_model_version(version: str, doc: dict[str, Any], db: Database | None = None) -> None:
    db = db if db is not None else get_db()
    db[MODEL_VERSIONS].update_one({"_id": version}, {"$set": {**doc, "_id": version}}, upsert=True)


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

