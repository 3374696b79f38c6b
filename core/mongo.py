"""The MongoDB access layer: every read and write of the catalog, reviews, live ratings,
recommendations and model records goes through here.

Keeping all queries in one module is what lets the same code run against FerretDB v1 locally and
real MongoDB in production: only CRUD, bulk writes, upserts, simple and unique indexes and simple
aggregation stages are used ($match, $group, $sort, $limit, $project), and no document holds an
array directly inside an array (FerretDB v1 rejects nested arrays). Search reads the inverted
index the batch load builds (``search_index``, see core/search.py) by ``_id``, one document per
query word; never ``$text`` (FerretDB v1 has no text index), never a regex scan, never a
user-supplied operator.

Hot paths read and write documents by ``_id`` only (one ``_id``, or ``_id`` ``$in`` a list).
FerretDB v1 (built by bin/services with fixes so that those use the ``_id`` index, on SQLite and on
PostgreSQL) answers an ``_id`` read or write in 1-2 ms but scans the whole collection for any other
filter or sort (about 300 ms for 9,000 products, measured here), so what a page needs is
precomputed into ``_id``-keyed documents: a user's rating history, a product's review pages, the
catalog's ordering per category.
On real MongoDB the same documents are equally fast.

Batch reloads never leave a reader without a collection: FerretDB v1 has no ``renameCollection``
with ``dropTarget``, so a drop-then-rename swap showed readers a missing ``products`` for a moment
(valid ratings were dead-lettered as "unknown product"). Instead a reload writes a new generation
(``products__g<ms>``) and moves one pointer document; :func:`get_db` returns a database whose
``db[PRODUCTS]`` resolves to the generation the pointer names (cached ``POINTER_TTL_S`` per
process), and a retired generation is dropped only ``RETIRE_GRACE_S`` later, when no process can
still be using it. The model's serving lists (similar items, batch top-N) are kept per model
version and resolve through the published ``CURRENT`` version, so moving ``CURRENT`` switches the
model and its lists at once.
"""
from __future__ import annotations

import math
import random
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterable, Iterator

import pymongo
from pymongo import ASCENDING, DESCENDING, MongoClient, ReplaceOne, UpdateMany
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, ConnectionFailure, DuplicateKeyError, PyMongoError

from core.breaker import CircuitBreaker, Unavailable
from core.settings import get_settings
from core.thread_pools import thread_pool

PRODUCTS = "products"
# The batch reviews of the data's newest weeks, for the trending fallback (core/popular.py). Every
# review is in its user's history, its product's aggregates and (up to 500 a product) pages;
# a collection of every review was 0.5-0.7 KB per review on FerretDB for those few reads.
RECENT_REVIEWS = "recent_reviews"
LEGACY_REVIEWS = "reviews"  # that collection, as earlier versions loaded it: mongo_load retires it
RATINGS = "ratings"  # live rating events from the site, keyed by event id
RECOMMENDATIONS = "recommendations"  # one document per user, written by the workers and Celery (see stored_list)
BATCH_RECOMMENDATIONS = "batch_recommendations"  # the published model's batch top-N, per version
SIMILAR_ITEMS = "similar_items"  # one document per product
POPULAR = "popular"  # precomputed popular / trending lists per category
MODEL_VERSIONS = "model_versions"
PIPELINE_RUNS = "pipeline_runs"
USER_HISTORY = "user_history"  # {_id: user_id, ratings: [{p, r, t}], removed: [{p, t}]} (see history_doc)
PRODUCT_REVIEWS = "product_reviews"  # {_id: "<product_id>:<page>", items: [...], pages: n}
CATALOG_INDEX = "catalog_index"  # {_id: "<category>:<chunk>", ids: [...]} and {_id: "categories"}
POINTERS = "collection_pointers"  # {_id: logical name, physical: live generation, staging: loading one}
RELOADED = frozenset({"products", "recent_reviews", "product_reviews", "user_history", "catalog_index", "search_index"})
PER_MODEL_VERSION = frozenset({"similar_items", "batch_recommendations"})
POINTER_TTL_S = 1.0  # how long a process trusts a pointer it read
RETIRE_GRACE_S = 5.0  # a retired generation outlives every cached pointer and in-flight query
# Claims, each a document whose insert by ``_id`` is the one test-and-set FerretDB v1 and MongoDB share:
# an event's ({_id: event id, state, at}: core.cancellation) and a writer's lock ({_id: "<kind>:<id>",
# token, at}: user_lock, writer_lock). One collection, so that a worker's batch claims its events and
# locks their users in one insert (core.cancellation.claim_batch).
CLAIMS = "event_claims"
LOCKS = CLAIMS
LOCK_STALE_S = 10.0
DEAD_LETTER_REPLAYS = "dead_letter_replays"  # {_id: dead letter id, replayed_at, ...}: one replay each
EXCLUSIONS = "exclusions"  # {_id: user_id, items: [{p, t}]}: "not interested", never recommended again
DELETED_USERS = "deleted_users"  # {_id: user_id, deleted_at, counts}: deleted accounts, left out of training
SEARCH_INDEX = "search_index"  # {_id: "<word or prefix>", ids: "<ranked ids>", ...} (core/search.py)
REVIEWS_PER_PAGE = 10
CATALOG_CHUNK = 5000
ALL = "all"


@lru_cache(maxsize=8)
def get_client(uri: str | None = None) -> MongoClient:
    """One pooled client per URI and process (pymongo clients are thread-safe, not fork-safe)."""
    return MongoClient(uri or get_settings().mongo_uri, serverSelectionTimeoutMS=5000, tz_aware=False)


class ReloadableDatabase(Database):
    """A pymongo database whose reloaded collections resolve to their live generation.

    Every read and write in the project goes through ``db[NAME]``, so resolving there keeps each
    query unaware of reloads (see the module docstring).
    """

    def __init__(self, client: MongoClient, name: str) -> None:
        super().__init__(client, name)
        self._collections: dict[str, Collection] = {}  # by physical name: pymongo builds one per db[...]

    def __getitem__(self, name: str) -> Collection:
        physical = physical_name(self, name)
        collection = self._collections.get(physical)
        if collection is None:
            collection = self._collections[physical] = super().__getitem__(physical)
        return collection

    def get_collection(self, name: str, *args: Any, **kwargs: Any) -> Collection:
        return super().get_collection(physical_name(self, name), *args, **kwargs)


class StoreUnavailable(Unavailable):
    """MongoDB did not answer a web request in time (or failed moments ago): the site says 503."""


# The site's breaker: after MongoDB failed a request, the next ones are refused at once for a few
# seconds instead of each waiting for the timeout.
BREAKER = CircuitBreaker("mongo", cooldown_s=2.0)


@contextmanager
def fail_fast() -> Iterator[None]:
    """Run a web request's MongoDB calls with a short deadline (``MONGO_REQUEST_TIMEOUT_MS``).

    The client's own timeouts (5 s server selection) suit workers that retry; a page answering a
    user should say "unavailable" within about a second, and at once while the breaker is open.
    """
    if not BREAKER.allow():
        raise StoreUnavailable("MongoDB is unavailable (it failed moments ago); not trying again yet")
    try:
        with pymongo.timeout(get_settings().mongo_request_timeout_ms / 1000):
            yield
    except PyMongoError as exc:
        if isinstance(exc, ConnectionFailure) or exc.timeout:
            BREAKER.failure()
            raise StoreUnavailable(f"MongoDB is unavailable: {exc.__class__.__name__}") from exc
        raise
    BREAKER.success()


_databases: dict[str | None, tuple[MongoClient, dict[str, ReloadableDatabase]]] = {}


def get_db(uri: str | None = None, name: str | None = None) -> Database:
    """The database, one object per client and name and process, with its collections kept: pymongo
    builds a new ``Database`` and ``Collection`` per call (~13 us together, a few dozen times per
    worker batch: ~5% of the worker's CPU, profiled). A new client (``get_client``'s cache
    cleared) replaces all of the old one's, so an old client is not held here."""
    client, name = get_client(uri), name or get_settings().mongo_db
    kept = _databases.get(uri)
    if kept is None or kept[0] is not client:
        kept = _databases[uri] = (client, {})
    db = kept[1].get(name)
    if db is None:
        db = kept[1][name] = ReloadableDatabase(client, name)
    return db


# Per process and database: {"at": when read, "live": {logical: generation}, "version": CURRENT,
# "lists": {logical: collection}}. Refreshed once per POINTER_TTL_S for every collection at once
# (one read of the small pointer collection and of CURRENT); a version's per-version collections
# are looked up once while that version stays current, not again at each refresh.
_pointer_cache: dict[tuple[int, str], dict[str, Any]] = {}


def _raw(db: Database, name: str) -> Collection:
    return Database.__getitem__(db, name)


def _pointers(db: Database) -> dict[str, Any]:
    key, now = (id(db.client), db.name), time.monotonic()
    state = _pointer_cache.get(key)
    if state is not None and now - state["at"] < POINTER_TTL_S:
        return state
    from core import artifacts  # the published version is the pointer of its serving lists

    live = {doc["_id"]: doc["physical"] for doc in _raw(db, POINTERS).find({}, {"physical": 1})
            if doc.get("physical") and doc["_id"] in RELOADED}
    version = artifacts.current_version()
    kept = {} if state is None or state["version"] != version else {
        n: c for n, c in state["lists"].items() if c != n}  # found lists stay; a missing one is looked for again
    state = _pointer_cache[key] = {"at": now, "live": live, "version": version, "lists": kept}
    return state


def physical_name(db: Database, name: str) -> str:
    """The collection that holds ``name`` now: its live generation, its published version's
    collection, or ``name`` itself."""
    if name in RELOADED:
        return _pointers(db)["live"].get(name, name)
    if name not in PER_MODEL_VERSION:
        return name
    state = _pointers(db)
    if name not in state["lists"]:
        physical = per_version_name(name, state["version"]) if state["version"] else name
        if physical != name and not db.list_collection_names(filter={"name": physical}):
            physical = name  # published before lists were kept per version
        state["lists"][name] = physical
    return state["lists"][name]


def live_generation(name: str, db: Database | None = None) -> str:
    """The generation of a reloaded collection that its pointer names now (read, not cached):
    what :func:`physical_name` resolves to once every process's cached pointer has expired."""
    db = db if db is not None else get_db()
    doc = _raw(db, POINTERS).find_one({"_id": name}, {"physical": 1}) or {}
    return doc.get("physical") or name


def per_version_name(name: str, version: str) -> str:
    return f"{name}__v{version}"


def forget_pointers() -> None:
    """Drop this process's cached pointers (after a switch it made itself, and in tests)."""
    _pointer_cache.clear()


_INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    RECENT_REVIEWS: [[("ts", DESCENDING)]],  # the publish job's trending fallback: newest reviews
    PRODUCTS: [[("category", ASCENDING), ("n_reviews", DESCENDING)], [("n_reviews", DESCENDING)]],
    RATINGS: [[("user_id", ASCENDING), ("ts", ASCENDING)], [("ts", DESCENDING)],
              [("stored_at", ASCENDING)]],  # a reload replays the ratings stored while it ran
    MODEL_VERSIONS: [[("published_at", DESCENDING)]],
}


def ensure_indexes(db: Database | None = None) -> None:
    """Create the indexes the site and the workers query by; safe to call on every start."""
    db = db if db is not None else get_db()
    for name, indexes in _INDEXES.items():
        for keys in indexes:
            db[name].create_index(keys)


def bulk_upsert(collection: str, docs: Iterable[dict[str, Any]], db: Database | None = None,
                chunk: int = 500) -> dict[str, int]:
    """Replace-or-insert whole documents by ``_id`` in unordered bulk writes.

    Replacing by a deterministic ``_id`` is what makes every load idempotent: a re-run rewrites the
    same documents instead of adding copies, and the worker's histories and lists are written
    whole each time. Our FerretDB build writes a bulk of replacements by ``_id`` in one
    transaction without reading the documents they replace
    (services/mongo/msg_update_pending.go.snippet): 4,500 documents/s here against 1,700/s one
    ``replace_one`` at a time, and the distinct-users backlog drained 1.3x faster than with
    :func:`set_by_ids` of the same fields. FerretDB v1 as released stalled on such bulks (it kept
    every statement's cursor open to the command's end); MongoDB does this natively. ``_id`` values
    are strings or ObjectIDs: FerretDB v1 finds any other by reading the whole collection.
    """
    ops = (ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs)
    return _bulk_write_chunks(db if db is not None else get_db(), collection, ops, chunk)


def replace_collection_start(name: str, db: Database | None = None) -> str:
    """Begin a full reload of ``name``: a new, empty generation to insert into.

    A batch load inserts into the new generation (``insert_many`` is ~100x faster than
    per-document upserts on FerretDB) and :func:`replace_collection_finish` points readers at it,
    so a re-run ends with exactly the same documents, never duplicates. A generation left by a
    load that died is dropped here.
    """
    db = db if db is not None else get_db()
    pointer = _raw(db, POINTERS).find_one({"_id": name}) or {}
    if pointer.get("staging"):
        db.drop_collection(pointer["staging"])
    db.drop_collection(f"{name}__staging")  # the staging name of the drop-and-rename swap
    staging = f"{name}__g{time.time_ns() // 1_000_000}"
    db.create_collection(staging)
    _raw(db, POINTERS).update_one({"_id": name}, {"$set": {"staging": staging}}, upsert=True)
    return staging


def insert_docs(collection: str, docs: Iterable[dict[str, Any]], batch_size: int = 2000,
                db: Database | None = None, threads: int = 1) -> int:
    """Unordered ``insert_many`` in batches; returns the number the server acknowledged.

    ``threads`` > 1 keeps that many batches in flight while the next ones are built: FerretDB on
    PostgreSQL took 24k serving lists 1.3x faster from 3 threads than from 1 (on a busy machine;
    publish's 9.57M lists at 51.6M reviews, docs/benchmarks.md). Any batch's error is raised,
    after the batches in flight finish.
    """
    db = db if db is not None else get_db()
    target = db[collection]

    def insert(batch: list[dict[str, Any]]) -> int:
        return len(target.insert_many(batch, ordered=False).inserted_ids)

    if threads <= 1:
        return sum(insert(batch) for batch in iter_batches(iter(docs), batch_size))
    n, pending = 0, set()
    with ThreadPoolExecutor(threads) as pool:
        for batch in iter_batches(iter(docs), batch_size):
            if len(pending) >= 2 * threads:  # bounded: a file of millions of lists is never all in memory
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                n += sum(f.result() for f in done)
            pending.add(pool.submit(insert, batch))
        n += sum(f.result() for f in pending)
    return n


def replace_collection_finish(name: str, db: Database | None = None) -> str:
    """Point readers at the generation :func:`replace_collection_start` began; returns its name.

    One ``_id`` update switches every reader (within ``POINTER_TTL_S``); the generation it
    replaces is retired, not dropped, so a reader still holding the old pointer keeps its data
    until :func:`drop_retired` removes it after ``RETIRE_GRACE_S``.
    """
    db = db if db is not None else get_db()
    pointers = _raw(db, POINTERS)
    pointer = pointers.find_one({"_id": name}) or {}
    staging = pointer.get("staging")
    if not staging:
        raise RuntimeError(f"no reload of {name} in progress")
    for keys in _INDEXES.get(name, []):
        _raw(db, staging).create_index(keys)
    previous = pointer.get("physical") or name
    now = time.time()
    pointers.update_one({"_id": name}, {"$set": {"physical": staging, "staging": None, "switched_at": now}})
    if previous != staging:
        pointers.replace_one({"_id": f"retired:{previous}"},
                             {"_id": f"retired:{previous}", "retired": previous, "of": name, "at": now}, upsert=True)
    forget_pointers()
    drop_retired(db=db)
    return staging


def retire_collection(name: str, db: Database | None = None) -> str | None:
    """Retire every generation of a logical collection no longer loaded (dropped by
    :func:`drop_retired` after the grace period); returns the live generation's name, if any."""
    db = db if db is not None else get_db()
    pointers = _raw(db, POINTERS)
    pointer = pointers.find_one({"_id": name}) or {}
    live = pointer.get("physical") or (name if name in db.list_collection_names() else None)
    if live:
        pointers.replace_one({"_id": f"retired:{live}"},
                             {"_id": f"retired:{live}", "retired": live, "of": name, "at": time.time()}, upsert=True)
    pointers.delete_one({"_id": name})
    forget_pointers()
    return live


def drop_retired(wait: bool = False, db: Database | None = None) -> list[str]:
    """Drop the retired generations whose grace period has passed (with ``wait``: all of them,
    sleeping until the last grace ends); returns the dropped names."""
    db = db if db is not None else get_db()
    pointers = _raw(db, POINTERS)
    retired = sorted(pointers.find({"retired": {"$exists": True}}), key=lambda d: d["at"])
    if wait and retired:
        time.sleep(max(0.0, retired[-1]["at"] + RETIRE_GRACE_S - time.time()))
    dropped = []
    for doc in retired:
        if doc["at"] + RETIRE_GRACE_S <= time.time():
            db.drop_collection(doc["retired"])
            pointers.delete_one({"_id": doc["_id"]})
            dropped.append(doc["retired"])
    return dropped


def reapply_live_ratings(since: float, db: Database | None = None, max_passes: int = 5) -> int:
    """Write every live rating stored since ``since`` into the (new) user histories again;
    returns how many were missing.

    A reload builds ``user_history`` from the ratings stored when it started; ratings the
    workers stored later went into the generation being replaced. Replaying them (latest rating
    wins) after every process reads the new generation is what keeps a reload from erasing them.
    A replay goes through :func:`add_to_history` (the user's lock, newest change wins), so it
    never overwrites a rating a worker adds meanwhile; each pass re-reads the ratings stored since
    ``since`` and passes repeat until one finds nothing missing.
    """
    db = db if db is not None else get_db()
    replayed = 0
    for _ in range(max_passes):
        missing = 0
        for user, ratings in _live_ratings_by_user(since, db).items():
            have, _removed = history_entries(db[USER_HISTORY].find_one({"_id": user}))
            for pid, (rating, ts) in ratings.items():
                # the batch history keeps whole seconds (mongo_load): the same rating is not missing
                if pid not in have or have[pid][1] < math.floor(ts):
                    missing += 1
                    add_to_history(user, pid, rating, ts, db=db)
        replayed += missing
        if not missing:
            break
    return replayed


def _live_ratings_by_user(since: float, db: Database) -> dict[str, dict[str, tuple[float, float]]]:
    """{user: {product: (rating, ts)}} of the live ratings stored since ``since``, latest wins."""
    by_user: dict[str, dict[str, tuple[float, float]]] = {}
    for d in db[RATINGS].find({"stored_at": {"$gte": since}}, {"user_id": 1, "product_id": 1, "rating": 1, "ts": 1}):
        seen = by_user.setdefault(d["user_id"], {}).get(d["product_id"])
        if seen is None or seen[1] <= float(d["ts"]):
            by_user[d["user_id"]][d["product_id"]] = (float(d["rating"]), float(d["ts"]))
    return by_user


# --- catalog -------------------------------------------------------------------------------

_PRODUCT_LIST_FIELDS = {"title": 1, "category": 1, "price": 1, "n_reviews": 1, "avg_rating": 1, "brand": 1,
                        "sample_summary": 1, "image": 1, "has_metadata": 1}


def categories(db: Database | None = None) -> list[dict]:
    """[{name, n_products}] most products first, as the batch load recorded them."""
    db = db if db is not None else get_db()
    doc = db[CATALOG_INDEX].find_one({"_id": "categories"})
    return doc["items"] if doc else []


def list_products(page: int = 1, per_page: int = 24, category: str | None = None,
                  query: str | None = None, db: Database | None = None) -> tuple[list[dict], int]:
    """A page of products and the total count for pagination.

    Browsing reads the precomputed order (chunks of ids per category, most reviewed first) and
    then each product by id; a search reads one ``search_index`` document per query word and
    ranks the intersection (core/search.py): title, brand and category matches first.
    """
    db = db if db is not None else get_db()
    page, per_page = max(1, int(page)), max(1, min(100, int(per_page)))
    start = (page - 1) * per_page
    if query:
        ids = search_ids(str(query), category=str(category) if category else None, db=db)
        shown = ids[start:start + per_page]
        products = get_products(shown, db=db)
        return [products[i] for i in shown if i in products], len(ids)
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


def search_ids(query: str, category: str | None = None, db: Database | None = None) -> list[str]:
    """Every product matching all words of ``query``, best first (one ``_id`` read per word)."""
    from core import search

    db = db if db is not None else get_db()
    keys = search.query_keys(query)
    postings = []
    for key in keys:
        doc = db[SEARCH_INDEX].find_one({"_id": key})
        if doc is None:
            return []
        postings.append(search.Postings.from_doc(doc))
    return search.rank(postings, category)


def get_product(product_id: str, db: Database | None = None) -> dict | None:
    db = db if db is not None else get_db()
    return db[PRODUCTS].find_one({"_id": str(product_id)})


def get_products(product_ids: list[str], db: Database | None = None) -> dict[str, dict]:
    """Products by id, in the order asked (the ones that exist)."""
    ids = [str(p) for p in product_ids]
    found = find_by_ids(PRODUCTS, ids, _PRODUCT_LIST_FIELDS, db=db)
    return {pid: found[pid] for pid in dict.fromkeys(ids) if pid in found}


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
    db = db if db is not None else get_db()
    try:
        db[RATINGS].insert_one(rating_doc(event))
        return True
    except DuplicateKeyError:
        return False


def store_ratings(docs: list[dict[str, Any]], db: Database | None = None) -> set[str]:
    """:func:`store_rating` for a batch (documents from :func:`rating_doc`) in one unordered
    ``insert_many``; returns the ids that were stored before (a redelivery), which keep their
    first document."""
    db = db if db is not None else get_db()
    if not docs:
        return set()
    try:
        db[RATINGS].insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != 11000 for e in errors):
            raise
        return {docs[e["index"]]["_id"] for e in errors}
    return set()


def mark_ratings_processed(versions: dict[str, str | None], db: Database | None = None) -> None:
    """:func:`mark_rating_processed` for a batch: {event id: model version of the list written}."""
    db = db if db is not None else get_db()
    now = time.time()
    set_by_ids(RATINGS, {eid: {"state": "processed", "processed_at": now, "model_version": v}
                         for eid, v in versions.items()}, db=db, upsert=False)


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


def history_doc(user_id: str, ratings: dict[str, tuple[float, float]], removed: dict[str, float]) -> dict[str, Any]:
    """The stored form of a user's history (read back by :func:`history_entries`)."""
    return {"_id": user_id, "ratings": [{"p": p, "r": float(r), "t": float(t)} for p, (r, t) in ratings.items()],
            "removed": [{"p": p, "t": float(t)} for p, t in removed.items()]}


def user_ratings(user_id: str, db: Database | None = None) -> dict[str, float]:
    """Everything a user has rated (batch reviews and live ratings; the latest rating wins)."""
    db = db if db is not None else get_db()
    rated, _ = history_entries(db[USER_HISTORY].find_one({"_id": user_id}))
    return {pid: r for pid, (r, _t) in rated.items()}


def user_history(user_id: str, db: Database | None = None) -> dict[str, tuple[float, float]]:
    """{product: (rating, ts)} of everything a user has rated (the staff's view of a user)."""
    db = db if db is not None else get_db()
    return history_entries(db[USER_HISTORY].find_one({"_id": user_id}))[0]


def lock_doc(name: str, token: str, at: float) -> dict[str, Any]:
    """The document that holds lock ``name`` for ``token`` since ``at`` (its age tells a stale one):
    inserted by :func:`user_lock`, :func:`take_locks` and a worker's claim of its batch
    (``core.cancellation.claim_batch``)."""
    return {"_id": name, "token": token, "at": at}


@contextmanager
def user_lock(name: str, db: Database | None = None, wait_s: float = 30.0) -> Iterator[None]:
    """Hold a named lock (one document in ``LOCKS``, inserted by ``_id``) around a user's write.

    FerretDB v1 runs a filtered update as a find then a write, not atomically: a replace
    conditional on a version field still lost a quarter of concurrent history writes there
    (tests/integration/test_concurrent_writers.py). The unique ``_id`` index is atomic on both
    servers, so inserting the lock document is the one test-and-set they share; the writes under it
    filter by ``_id`` alone, the only filter FerretDB v1 answers without a scan. A holder that died
    leaves a lock older than ``LOCK_STALE_S``, which the next writer removes.
    """
    db = db if db is not None else get_db()
    token = uuid.uuid4().hex
    _acquire(name, token, time.monotonic() + wait_s, wait_s, db)
    try:
        yield
    finally:
        db[LOCKS].delete_one({"_id": name, "token": token})


def _acquire(name: str, token: str, deadline: float, wait_s: float, db: Database) -> None:
    """Insert the lock document ``name`` (waiting while another writer holds it, removing a stale one)."""
    delay = 0.001
    while True:
        try:
            db[LOCKS].insert_one(lock_doc(name, token, time.time()))
            return
        except DuplicateKeyError:
            held = db[LOCKS].find_one({"_id": name}) or {}
            if held and time.time() - float(held.get("at", 0)) > LOCK_STALE_S:
                db[LOCKS].delete_one({"_id": name, "token": held.get("token")})
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"lock {name} held for more than {wait_s:.0f}s") from None
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 0.05)


@contextmanager
def user_locks(names: Iterable[str], db: Database | None = None, wait_s: float = 30.0) -> Iterator[None]:
    """:func:`user_lock` for many names at once (the worker's batches): one ``insert_many``.

    When another writer holds some of them, everything taken is given back and the names are
    taken one at a time in sorted order, so two batch writers never wait on each other in a
    circle (a single :func:`user_lock` holder waits for nothing while it holds). Released with one
    ``delete_many`` by ``_id`` and token: through the ``_id`` index on MongoDB and on the FerretDB
    build of bin/services; stock FerretDB v1 reads the whole collection for it, every event's claim
    included (``CLAIMS``).
    """
    db = db if db is not None else get_db()
    names, token = sorted(set(names)), uuid.uuid4().hex
    take_locks(names, token, db=db, wait_s=wait_s)
    try:
        yield
    finally:
        release_locks(names, token, db=db)


def take_locks(names: Iterable[str], token: str, db: Database | None = None, wait_s: float = 30.0,
               wait: bool = True) -> bool:
    """Take the locks ``names`` under ``token`` (:func:`user_locks`, which gives them back).

    With ``wait=False``, returns False instead of waiting when another writer holds one of them,
    having taken none: a caller that holds other locks gives those back before it waits, so that
    two such callers never wait on each other in a circle.
    """
    db = db if db is not None else get_db()
    names = sorted(set(names))
    if not names:
        return True
    try:
        now = time.time()
        db[LOCKS].insert_many([lock_doc(n, token, now) for n in names], ordered=False)
        return True
    except BulkWriteError as exc:
        if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
            raise
    release_locks(names, token, db=db)
    if not wait:
        return False
    deadline, taken = time.monotonic() + wait_s, []
    try:
        for n in names:
            _acquire(n, token, deadline, wait_s, db)
            taken.append(n)
    except BaseException:
        release_locks(taken, token, db=db)
        raise
    return True


def release_locks(names: Iterable[str], token: str, db: Database | None = None) -> None:
    """Give back the locks of :func:`take_locks` (those of ``names`` this token holds)."""
    names = list(names)
    if names:
        (db if db is not None else get_db())[LOCKS].delete_many({"_id": {"$in": names}, "token": token})


IN_CHUNK = 1000  # ids per `$in` query: the most the FerretDB build of bin/services pushes down to the index
CONCURRENT_READS_FROM_IDS = 64  # find_by_ids_many reads this many ids or more from threads


def find_by_ids(collection: str, ids: Iterable[str], projection: dict | None = None,
                db: Database | None = None) -> dict[str, dict]:
    """Documents of many ``_id`` values, by id: one ``$in`` query per 1,000 ids, served by the
    ``_id`` index (on FerretDB v1 only by the build of bin/services, which pushes it down; stock
    FerretDB v1 reads the whole collection for it)."""
    return find_by_ids_many([(collection, ids, projection)], db=db)[0]


def find_by_ids_many(requests: list[tuple[str, Iterable[str], dict | None]],
                     db: Database | None = None) -> list[dict[str, dict]]:
    """:func:`find_by_ids` of several collections, one result per ``(collection, ids, projection)``.

    Queries for many ids run concurrently (pymongo clients are thread-safe), so a large batch
    waits for the slowest of its reads instead of their sum (5-10% for three of 256 ids on
    FerretDB here). A few ids are read one query after the other in this thread: handing one-id
    queries to threads cost more than it saved (two of them: p50 0.72 against 0.67 ms, p99 1.3-1.9
    against 1.1 ms, 40% more CPU; docs/benchmarks.md), and that is the one-rating batch's path.
    """
    db = db if db is not None else get_db()
    queries = [(k, db[c], chunk, proj) for k, (c, ids, proj) in enumerate(requests)
               for chunk in _chunks(list(dict.fromkeys(ids)))]
    concurrently = len(queries) > 1 and sum(len(q[2]) for q in queries) >= CONCURRENT_READS_FROM_IDS

    def run(query: tuple[int, Collection, list[str], dict | None]) -> tuple[int, list[dict]]:
        k, coll, ids, proj = query
        return k, list(coll.find({"_id": {"$in": ids}}, proj))

    out: list[dict[str, dict]] = [{} for _ in requests]
    for k, docs in (_readers().map(run, queries) if concurrently else map(run, queries)):
        out[k].update((d["_id"], d) for d in docs)
    return out


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[lo:lo + IN_CHUNK] for lo in range(0, len(ids), IN_CHUNK)]


def _readers() -> ThreadPoolExecutor:
    """This process's threads for :func:`find_by_ids_many`."""
    return thread_pool("find-by-ids", 6)


def set_by_ids(collection: str, fields_by_id: dict[str, dict[str, Any]], db: Database | None = None,
               chunk: int = 500, upsert: bool = True) -> dict[str, int]:
    """Set (upsert) the given fields of many documents by ``_id`` in unordered bulk writes;
    returns the documents matched, upserted and modified.

    Each statement is an update of *many* documents filtered by ``_id`` alone (so at most one):
    FerretDB v1 keeps the read cursor of every single-document update (``ReplaceOne``,
    ``UpdateOne``) of one command open until the command ends, and a bulk of ~100 of them on
    existing documents exhausted its connection pool and hung that database (seen here); a
    multi-document update reads its cursor to the end and closes it (500 existing histories in
    0.4 s). The build of bin/services closes each statement's cursor when it ends, so there both
    work; this keeps a server without that fix safe. On MongoDB it is the same single-document
    upsert.
    """
    ops = (UpdateMany({"_id": i}, {"$set": fields}, upsert=upsert) for i, fields in fields_by_id.items())
    return _bulk_write_chunks(db if db is not None else get_db(), collection, ops, chunk)


def _bulk_write_chunks(db: Database, collection: str, ops: Iterable, chunk: int) -> dict[str, int]:
    """Unordered bulk writes of ``chunk`` operations each; the documents matched, upserted and
    modified over all of them."""
    totals = {"matched": 0, "upserted": 0, "modified": 0}
    for batch in iter_batches(iter(ops), chunk):
        result = db[collection].bulk_write(batch, ordered=False)
        totals["matched"] += result.matched_count
        totals["upserted"] += result.upserted_count
        totals["modified"] += result.modified_count
    return totals


_known_products: dict[tuple[str, str], set[str]] = {}


def existing_products(product_ids: Iterable[str], db: Database | None = None,
                      found: dict[str, dict] | None = None) -> set[str]:
    """Which of these products the live catalog holds (the worker's ``product_exists`` for a batch).

    A product once found is remembered per database and catalog generation: products change only
    by a reload, which writes a new generation (see :func:`get_db`), so a remembered id is never
    stale; an unknown one is read again each time. ``found``: the caller already read the ids
    :func:`products_to_look_up` gave (the worker, beside its other reads).
    """
    db = db if db is not None else get_db()
    known = _remembered_products(db)
    wanted = set(product_ids)
    if found is None:
        found = find_by_ids(PRODUCTS, [p for p in wanted if p not in known], {"_id": 1}, db=db)
    known.update(found)
    return wanted & known


def products_to_look_up(product_ids: Iterable[str], db: Database | None = None) -> list[str]:
    """The ids :func:`existing_products` would read (those not remembered as existing)."""
    known = _remembered_products(db if db is not None else get_db())
    return [p for p in dict.fromkeys(product_ids) if p not in known]


def _remembered_products(db: Database, generation: str | None = None) -> set[str]:
    key = (db.name, generation or physical_name(db, PRODUCTS))
    known = _known_products.get(key)
    if known is None or len(known) > KNOWN_PRODUCTS_MAX:
        _known_products.clear()
        known = _known_products[key] = set()
    return known


KNOWN_PRODUCTS_MAX = 2_000_000  # product ids remembered per process (~200 MB), then it starts again
_catalog_read: dict[str, str] = {}  # per database: the catalog generation remember_catalog read last


def remember_catalog(limit: int, db: Database | None = None) -> int:
    """Remember every product of the live catalog, in one read, when it holds at most ``limit``;
    returns how many (0 when it holds more, or this generation was read before).

    A worker otherwise learns a product the first time an event names it, by a read: one of a
    one-rating batch's six commands, in three of four batches of a fresh worker at 10k products
    (bench/realtime_latency.py --trace), until the catalog is learnt. Remembering is safe for the
    reason given in :func:`existing_products`.
    """
    db = db if db is not None else get_db()
    generation = physical_name(db, PRODUCTS)
    if _catalog_read.get(db.name) == generation:
        return 0
    _catalog_read[db.name] = generation
    limit = min(limit, KNOWN_PRODUCTS_MAX)  # (not counted first: FerretDB v1 counts by reading every document)
    ids = [d["_id"] for d in _raw(db, generation).find({}, {"_id": 1}).limit(limit + 1)]
    if len(ids) > limit:
        return 0
    _remembered_products(db, generation).update(ids)  # this generation's set, whatever is live by now
    return len(ids)


def history_unless_deleted(user_id: str, db: Database | None = None) -> dict[str, float] | None:
    """``user_ratings``, or None for a deleted account (checked only when there is no history)."""
    db = db if db is not None else get_db()
    doc = db[USER_HISTORY].find_one({"_id": user_id})
    if doc is None and is_deleted_user(user_id, db=db):
        return None
    return {pid: r for pid, (r, _t) in history_entries(doc)[0].items()}


def add_to_history(user_id: str, product_id: str, rating: float, ts: float,
                   db: Database | None = None) -> dict[str, float] | None:
    """Record a live rating in the user's history and return the whole history.

    None means the account was deleted (:func:`delete_user_data`): nothing is recorded for it.
    """
    return change_history(user_id, product_id, float(rating), ts, db=db)


def remove_from_history(user_id: str, product_id: str, ts: float,
                        db: Database | None = None) -> dict[str, float] | None:
    """Remove a rating (the shopper took it back); returns the whole history, None if deleted."""
    return change_history(user_id, product_id, None, ts, db=db)


def change_history(user_id: str, product_id: str, rating: float | None, ts: float,
                   db: Database | None = None) -> dict[str, float] | None:
    """Set (``rating``) or remove (None) one rating in the user's history; the newest change wins.

    Read-modify-replace of one ``_id`` document under the user's lock (:func:`user_lock`): two
    writers of one user (two members holding one partition during a rebalance, a replay beside a
    worker) both get their change in, where the unlocked version lost one of them. Neither a filter
    on a version field nor ``$set`` of one key is atomic on FerretDB v1, and either filter scans the
    collection there, so the lock is the portable way. A change
    older than the one stored (a redelivery, or two requests of the user racing) does not
    overwrite a newer one; a removal leaves its time in ``removed`` so an older rating of the same
    product cannot bring it back. Returns None for a deleted account: a user without a history
    document may be one, which costs a second ``_id`` read only for users with no history yet.
    """
    db = db if db is not None else get_db()
    with user_lock(writer_lock(user_id), db=db):
        doc = db[USER_HISTORY].find_one({"_id": user_id})
        if doc is None and is_deleted_user(user_id, db=db):
            return None
        ratings, removed = history_entries(doc)
        if apply_history_change(ratings, removed, product_id, rating, ts) or doc is None:
            db[USER_HISTORY].replace_one({"_id": user_id}, history_doc(user_id, ratings, removed), upsert=True)
    return {pid: r for pid, (r, _t) in ratings.items()}


def apply_history_change(ratings: dict[str, tuple[float, float]], removed: dict[str, float], product_id: str,
                         rating: float | None, ts: float) -> bool:
    """Set (``rating``) or remove (None) one rating in a history held in memory, unless a newer
    change of that product is there; True if the history changed. The one rule every history
    writer applies (one event at a time, or a batch of a user's events in order)."""
    current = ratings.get(product_id)
    newest = max(current[1] if current is not None else float("-inf"), removed.get(product_id, float("-inf")))
    if newest > ts:
        return False
    if rating is None:
        changed = ratings.pop(product_id, None) is not None or product_id not in removed
        removed[product_id] = float(ts)
        return changed
    ratings[product_id] = (float(rating), float(ts))
    removed.pop(product_id, None)
    return True


def mark_rating_processed(event_id: str, model_version: str | None, db: Database | None = None) -> None:
    db = db if db is not None else get_db()
    db[RATINGS].update_one({"_id": event_id}, {"$set": {"state": "processed", "processed_at": time.time(),
                                                        "model_version": model_version}})


def get_rating(event_id: str, db: Database | None = None) -> dict | None:
    db = db if db is not None else get_db()
    return db[RATINGS].find_one({"_id": str(event_id)})


# --- dead letters ---------------------------------------------------------------------------

def claim_replay(letter_id: str, doc: dict[str, Any], db: Database | None = None) -> dict | None:
    """Record that a dead letter is being replayed; returns None if this call got it, else the
    earlier record. Insert-by-id, like ``store_rating``: two replays of one letter cannot both win."""
    db = db if db is not None else get_db()
    try:
        db[DEAD_LETTER_REPLAYS].insert_one({**doc, "_id": letter_id, "replayed_at": time.time()})
        return None
    except DuplicateKeyError:
        return db[DEAD_LETTER_REPLAYS].find_one({"_id": letter_id}) or {}


def release_replay(letter_id: str, db: Database | None = None) -> None:
    """Forget a claim whose publish failed, so the letter can be replayed again."""
    db = db if db is not None else get_db()
    db[DEAD_LETTER_REPLAYS].delete_one({"_id": letter_id})


def get_replay(letter_id: str, db: Database | None = None) -> dict | None:
    db = db if db is not None else get_db()
    return db[DEAD_LETTER_REPLAYS].find_one({"_id": letter_id})
def drop_event(event_id: str, db: Database | None = None) -> None:
    """Forget a stored event (one of a deleted account that arrived after the deletion)."""
    db = db if db is not None else get_db()
    db[RATINGS].delete_one({"_id": str(event_id)})


# --- "not interested" -----------------------------------------------------------------------

def exclusion_entries(doc: dict | None) -> dict[str, float]:
    """{product: when} of an ``exclusions`` document: an array of ``{p, t}`` (any product id fits,
    see :func:`history_entries`), or the former map keyed by product id."""
    items = (doc or {}).get("items") or []
    if isinstance(items, dict):
        return {p: float(t) for p, t in items.items()}
    return {e["p"]: float(e["t"]) for e in items}


def exclusion_items(items: dict[str, float]) -> list[dict[str, Any]]:
    return [{"p": p, "t": float(t)} for p, t in items.items()]


def exclusions(user_id: str, db: Database | None = None) -> set[str]:
    """Products the user said they are not interested in (one ``_id`` read)."""
    db = db if db is not None else get_db()
    return set(exclusion_entries(db[EXCLUSIONS].find_one({"_id": user_id})))


def add_exclusion(user_id: str, product_id: str, ts: float, db: Database | None = None) -> set[str]:
    """Record "not interested" (idempotent: the first time is kept); returns all the user's exclusions.

    A document of its own rather than a field of ``user_history``: the batch load rebuilds the
    histories from the reviews, and the training and publish jobs read every user's exclusions
    at once, which is one small collection here instead of a scan of every history.
    """
    db = db if db is not None else get_db()
    items = exclusion_entries(db[EXCLUSIONS].find_one({"_id": user_id}))
    if product_id not in items:
        items[product_id] = float(ts)
        db[EXCLUSIONS].replace_one({"_id": user_id}, {"_id": user_id, "items": exclusion_items(items)}, upsert=True)
    return set(items)


def all_exclusions(db: Database | None = None) -> dict[str, set[str]]:
    """Every user's exclusions, for the batch jobs that write many users' lists."""
    db = db if db is not None else get_db()
    return {d["_id"]: set(exclusion_entries(d)) for d in db[EXCLUSIONS].find({}, {"items": 1})}


# --- deleted accounts -----------------------------------------------------------------------

def is_deleted_user(user_id: str, db: Database | None = None) -> bool:
    db = db if db is not None else get_db()
    return db[DELETED_USERS].find_one({"_id": user_id}, {"_id": 1}) is not None


def deleted_user_ids(db: Database | None = None) -> set[str]:
    """Recommender ids of deleted accounts: the batch jobs leave their reviews out."""
    db = db if db is not None else get_db()
    return {d["_id"] for d in db[DELETED_USERS].find({}, {"_id": 1})}


def record_deleted_user(user_id: str, db: Database | None = None) -> None:
    """Mark the id deleted before its data goes, so a worker drops whatever arrives for it later.

    Only the pseudonymous recommender id and the time are kept: the training job needs the id to
    leave a linked reviewer's batch reviews out, and a redelivered event must find it.
    """
    db = db if db is not None else get_db()
    db[DELETED_USERS].update_one({"_id": user_id}, {"$setOnInsert": {"deleted_at": time.time()}}, upsert=True)


def delete_user_data(user_id: str, db: Database | None = None) -> dict[str, int]:
    """Remove everything MongoDB keeps about one recommender id; returns what was removed, by kind.

    Idempotent (a second call removes nothing more). Live ratings and a linked reviewer's recent
    reviews are found by ``user_id`` (indexed on MongoDB, a scan on FerretDB: this runs once per
    deleted account, not per request); the review pages a reviewer appears on are the products of
    the user's history (which holds every batch review and live rating), rewritten without them.
    """
    db = db if db is not None else get_db()
    rated, removed = history_entries(db[USER_HISTORY].find_one({"_id": user_id}))
    products = set(rated) | set(removed)
    pages = 0
    for pid in sorted(products):
        page, n_pages = 1, 1
        while page <= n_pages:
            doc = db[PRODUCT_REVIEWS].find_one({"_id": f"{pid}:{page}"})
            if not doc:
                break
            n_pages = int(doc.get("pages") or 1)
            kept = [r for r in doc.get("items") or [] if r.get("user_id") != user_id]
            if len(kept) != len(doc.get("items") or []):
                db[PRODUCT_REVIEWS].update_one({"_id": doc["_id"]}, {"$set": {"items": kept}})
                pages += 1
            page += 1
    top = db[CATALOG_INDEX].find_one({"_id": "top_users"})  # the most active reviewers, by id
    top_users = 0
    if top and any(d.get("user_id") == user_id for d in top.get("items") or []):
        db[CATALOG_INDEX].update_one({"_id": "top_users"}, {"$set": {
            "items": [d for d in top["items"] if d.get("user_id") != user_id]}})
        top_users = 1
    return {
        "top_users": top_users,
        "ratings": db[RATINGS].delete_many({"user_id": user_id}).deleted_count,
        "recent_reviews": db[RECENT_REVIEWS].delete_many({"user_id": user_id}).deleted_count,
        "review_pages": pages,
        "history": db[USER_HISTORY].delete_one({"_id": user_id}).deleted_count,
        "rated_products": len(rated),
        "recommendations": db[RECOMMENDATIONS].delete_one({"_id": user_id}).deleted_count
        + db[BATCH_RECOMMENDATIONS].delete_one({"_id": user_id}).deleted_count,
        "exclusions": len(exclusions(user_id, db=db)),
        "exclusion_docs": db[EXCLUSIONS].delete_one({"_id": user_id}).deleted_count,
    }


# --- recommendations ------------------------------------------------------------------------

def stored_list(doc: dict[str, Any]) -> dict[str, Any]:
    """A live list as ``recommendations`` stores it: the items by field
    (``item_fields: {"product_id": [...], "score": [...], "because": [...]}``), not one object each.

    The workers' and Celery's lists are most of what a drain writes, and on FerretDB-SQLite every
    write of a document marshals it with a type schema per value and has SQLite parse the old and
    the new JSON for the ``_id`` index: 20 items as objects were 4.8 KB, by field 2.3 KB, and 500
    replacements took 190 against 110 ms (docs/benchmarks.md). :func:`read_list` turns it back.
    """
    items = doc["items"]
    fields = list(dict.fromkeys(k for item in items for k in item))
    return {**{k: v for k, v in doc.items() if k != "items"},
            "item_fields": {f: [item.get(f) for item in items] for f in fields}}


def read_list(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored list with its ``items`` as objects again (:func:`stored_list`), changed in place
    (it comes fresh from the driver); a list stored before that format, and a batch list, already
    has them."""
    if doc is None or "item_fields" not in doc:
        return doc
    fields = doc.pop("item_fields")
    n = max((len(values) for values in fields.values()), default=0)
    doc["items"] = [{f: values[i] for f, values in fields.items()} for i in range(n)]
    return doc


def get_live_recommendations(user_id: str, db: Database | None = None) -> dict[str, Any] | None:
    """The list a worker or Celery last wrote for the user (not the published batch list)."""
    db = db if db is not None else get_db()
    return read_list(db[RECOMMENDATIONS].find_one({"_id": user_id}))


def write_recommendations(user_id: str, items: list[dict[str, Any]], model_version: str,
                          source_event_id: str | None = None, as_of: float | None = None,
                          db: Database | None = None) -> dict[str, Any]:
    """Replace a user's list unless a newer one is stored; returns the stored document.

    ``as_of`` is a time when the history the list comes from was current: taken just before a
    reader (Celery) read it, and just after a worker wrote it. A stored list with a later ``as_of``
    stays (a batch list has none and is replaced): the writer that read an older history (Celery
    re-scoring while a worker processed the user's next rating) must not replace the list built
    from the newer one. Every history write is followed by its own worker's list with a later
    ``as_of``, so the last rating always shows.
    Clocks of the writing hosts are assumed synchronised (NTP); a skew only delays a list until
    the user's next rating. The stored document (ours or the newer one) is what gets announced.
    """
    db = db if db is not None else get_db()
    as_of = time.time() if as_of is None else float(as_of)
    doc = {"_id": user_id, "items": items, "model_version": model_version,
           "source_event_id": source_event_id, "updated_at": time.time(), "as_of": as_of}
    with user_lock(writer_lock(user_id), db=db):  # read-check-replace by _id, as one step
        stored = db[RECOMMENDATIONS].find_one({"_id": user_id}, {"as_of": 1})
        if stored is not None and stored.get("as_of") is not None and float(stored["as_of"]) > as_of:
            return get_live_recommendations(user_id, db=db) or doc
        db[RECOMMENDATIONS].replace_one({"_id": user_id}, stored_list(doc), upsert=True)
    return doc


def writer_lock(user_id: str) -> str:
    """The name of the lock every writer of a user's history or list holds (:func:`user_lock`).

    One lock for both: the worker's batches write both, and two lock documents per user (taken
    and released per batch) were ~20% of a batch's time in a drain of distinct users
    (docs/benchmarks.md). A writer of only one of them (a history change, a Celery re-scoring's
    list) now also waits for a writer of the other: a few milliseconds, never a cycle, as no
    holder takes a second lock. The two names of before (``history:`` and ``recommendations:``)
    do not exclude this one: an upgrade stops every old worker and Celery process before a new
    one starts, or a user's writes of the two versions could interleave for those moments. An old
    lock left behind by a crash is never read again.
    """
    return f"user:{user_id}"


def write_recommendations_many(lists: list[dict[str, Any]], as_of: float,
                               db: Database | None = None) -> dict[str, dict[str, Any]]:
    """Replace many users' lists at once (the worker's batches); returns the written document per
    user, which is what gets announced.

    ``lists`` are ``{"_id": user, "items", "model_version", "source_event_id"}``; ``as_of`` is a
    time when the histories they come from were current. The caller holds every user's
    :func:`writer_lock`, and has since before ``as_of`` (the worker takes it before it writes the
    histories): every list writer holds that lock, so no stored list can be newer, and the check
    of the stored ``as_of`` that :func:`write_recommendations` makes is not needed.
    """
    now, as_of = time.time(), float(as_of)
    docs = {d["_id"]: {**d, "updated_at": now, "as_of": as_of} for d in lists}
    bulk_upsert(RECOMMENDATIONS, [stored_list(d) for d in docs.values()], db=db)
    return docs


def get_recommendations(user_id: str, db: Database | None = None) -> dict | None:
    """The user's newest list: one a worker or Celery wrote, or the published version's batch list.

    Batch lists live per model version (switched with ``CURRENT``, see the module docstring), so
    a publish never overwrites the lists the workers keep; the newer of the two is the user's.
    """
    db = db if db is not None else get_db()
    live = get_live_recommendations(user_id, db=db)
    batch = db[BATCH_RECOMMENDATIONS].find_one({"_id": user_id})
    if batch is None or (live is not None and float(live.get("updated_at") or 0) >= float(batch.get("updated_at") or 0)):
        return live
    return batch


def drop_serving_lists(keep: set[str], db: Database | None = None) -> list[str]:
    """Drop the serving-list collections of model versions not in ``keep`` (and the unversioned
    ones of before); returns the dropped names."""
    db = db if db is not None else get_db()
    keep_names = {per_version_name(n, v) for n in PER_MODEL_VERSION for v in keep}
    dropped = [c for c in db.list_collection_names()
               if c not in keep_names and (c in PER_MODEL_VERSION or any(c.startswith(f"{n}__v") for n in PER_MODEL_VERSION))]
    for name in dropped:
        db.drop_collection(name)
    return dropped


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

