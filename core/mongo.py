"""The MongoDB access layer's ground floor: the client, the collections' names, batch reloads
(generations behind a pointer) and the bulk reads and writes by ``_id`` that everything else
uses. What is stored, and the rules for changing it, live in the modules built on this one:

- ``core.catalog``: products, review pages, search, the worker's remembered product ids;
- ``core.rating_history``: live rating events, each user's history, which accounts are deleted;
- ``core.locking``: the per-user writer lock every history and list writer holds;
- ``core.stored_lists``: recommendation lists (per user, per product, popular);
- ``core.shopper_controls``: "not interested";
- ``core.erasure``: erasing a deleted account, and its marks in ``deleted_users``;
- ``core.cancellation``: the claim of each event (exactly-once effects).

Keeping all queries in these modules is what lets the same code run against FerretDB v1 locally and
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
still be using it. Code that reads a reloaded collection and then writes or judges by what it
read resolves the generation once (:func:`physical_name`) and uses that name for both: resolved
twice, the pointer could move in between (a history read from the old generation replaced the
new one's; a product remembered of the old one was judged against the new one's empty set).
The model's serving lists (similar items, batch top-N) are kept per model version and resolve
through the published ``CURRENT`` version, so moving ``CURRENT`` switches the model and its lists
at once.
"""
from __future__ import annotations

import logging
import re
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator

import pymongo
from pymongo import ASCENDING, DESCENDING, MongoClient, ReplaceOne, UpdateMany
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, ConnectionFailure, PyMongoError

from core.breaker import CircuitBreaker, Unavailable
from core.settings import get_settings
from core.thread_pools import thread_pool

log = logging.getLogger(__name__)


# --- collections ---------------------------------------------------------------------------

PRODUCTS = "products"
# The batch reviews of the data's newest weeks, for the trending fallback (core/popular.py). Every
# review is in its user's history, its product's aggregates and (up to 500 a product) pages;
# a collection of every review was 0.5-0.7 KB per review on FerretDB for those few reads.
RECENT_REVIEWS = "recent_reviews"
LEGACY_REVIEWS = "reviews"  # that collection, as earlier versions loaded it: mongo_load retires it
RATINGS = "ratings"  # live rating events from the site, keyed by event id
RECOMMENDATIONS = "recommendations"  # one document per user, written by the workers and Celery (core.stored_lists)
BATCH_RECOMMENDATIONS = "batch_recommendations"  # the published model's batch top-N, per version
SIMILAR_ITEMS = "similar_items"  # one document per product
POPULAR = "popular"  # precomputed popular / trending lists per category
MODEL_VERSIONS = "model_versions"
PIPELINE_RUNS = "pipeline_runs"
USER_HISTORY = "user_history"  # {_id: user_id, ratings: [{p, r, t}], removed: [{p, t}]} (core.rating_history)
PRODUCT_REVIEWS = "product_reviews"  # {_id: "<product_id>:<page>", items: [...], pages: n}
CATALOG_INDEX = "catalog_index"  # {_id: "<category>:<chunk>", ids: [...]} and {_id: "categories"}
POINTERS = "collection_pointers"  # {_id: logical name, physical: live generation, staging: loading one}
RELOADED = frozenset({"products", "recent_reviews", "product_reviews", "user_history", "catalog_index", "search_index"})
PER_MODEL_VERSION = frozenset({"similar_items", "batch_recommendations"})
POINTER_TTL_S = 1.0  # how long a process trusts a pointer it read
RETIRE_GRACE_S = 5.0  # a retired generation outlives every cached pointer and in-flight query
# Claims, each a document whose insert by ``_id`` is the one test-and-set FerretDB v1 and MongoDB share:
# an event's ({_id: event id, state: "stored" | "cancelled", at, dead_lettered_at?}: core.cancellation) and a writer's lock ({_id: "<kind>:<id>",
# token, at}: core.locking). One collection, so that a worker's batch claims its events and
# locks their users in one insert (core.cancellation.claim_batch).
EVENT_CLAIMS = "event_claims"
DEAD_LETTER_REPLAYS = "dead_letter_replays"  # {_id: dead letter id, state, claimed_at, replayed_at, ...}: one replay each
EXCLUSIONS = "exclusions"  # {_id: user_id, items: [{p, t}]}: "not interested", never recommended again
DELETED_USERS = "deleted_users"  # {_id: user_id, deleted_at, erased_at, refs}: deleted accounts, left out of training
SEARCH_INDEX = "search_index"  # {_id: "<word or prefix>", ids: "<ranked ids>", ...} (core/search.py)
# {_id: product, stamp}: products whose counts a deletion during load ``stamp`` may have got wrong
# (core.erasure._pages_older): the load's eraser recounts them (no account in it)
RECOUNTS = "recounts"
REVIEWS_PER_PAGE = 10
CATALOG_CHUNK = 5000
ALL = "all"


# --- the client ----------------------------------------------------------------------------

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


_IN_WEB_REQUEST: ContextVar[bool] = ContextVar("mongo_in_web_request", default=False)


@contextmanager
def web_request() -> Iterator[None]:
    """A web request's use of MongoDB: refused at once while it is known to be down.

    Pages and the API's reads use the client's own 5 s server selection. During an outage each
    of them held a gunicorn thread for those 5 s, so a few requests a second stalled the whole
    site, pages that need no MongoDB included. Inside this block :func:`get_db` raises
    :class:`KnownDown` at once when a call failed in the last ``KNOWN_DOWN_S`` (``BREAKER``; each
    refusal counts as one, so a steady outage stays known) and the driver has not seen the server
    since. The driver's monitor looks for it every 10 s, so pages come back within about that
    of the server. A slow server (a timeout, the server still known) is tried as before, and so
    is the first request after a quiet ``KNOWN_DOWN_S``.
    """
    token = _IN_WEB_REQUEST.set(True)
    try:
        yield
    finally:
        _IN_WEB_REQUEST.reset(token)


KNOWN_DOWN_S = 30.0


class KnownDown(ConnectionFailure, StoreUnavailable):
    """Refused without trying (:func:`web_request`). A ``ConnectionFailure`` too, so code that
    carries on without MongoDB (``except PyMongoError``: the dashboard's numbers, an erasure's
    staff note) does so as when the driver itself fails."""


def _refuse_while_down(client: MongoClient) -> None:
    if BREAKER.failed_within(KNOWN_DOWN_S) and not client.topology_description.has_readable_server():
        raise KnownDown("MongoDB is unavailable (it failed moments ago and has not been seen since)")


_databases: dict[str | None, tuple[MongoClient, dict[str, ReloadableDatabase]]] = {}


def get_db(uri: str | None = None, name: str | None = None) -> Database:
    """The database, one object per client and name and process, with its collections kept: pymongo
    builds a new ``Database`` and ``Collection`` per call (~13 us together, a few dozen times per
    worker batch: ~5% of the worker's CPU, profiled). A new client (``get_client``'s cache
    cleared) replaces all of the old one's, so an old client is not held here."""
    client, name = get_client(uri), name or get_settings().mongo_db
    if _IN_WEB_REQUEST.get():
        _refuse_while_down(client)
    kept = _databases.get(uri)
    if kept is None or kept[0] is not client:
        kept = _databases[uri] = (client, {})
    db = kept[1].get(name)
    if db is None:
        db = kept[1][name] = ReloadableDatabase(client, name)
    return db


_INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    RECENT_REVIEWS: [[("ts", DESCENDING)]],  # the publish job's trending fallback: newest reviews
    PRODUCTS: [[("category", ASCENDING), ("n_reviews", DESCENDING)], [("n_reviews", DESCENDING)]],
    RATINGS: [[("user_id", ASCENDING), ("ts", ASCENDING)], [("ts", DESCENDING)],
              [("stored_at", ASCENDING)]],  # a reload replays the ratings stored while it ran
    MODEL_VERSIONS: [[("published_at", DESCENDING)]],
    DELETED_USERS: [[("refs", ASCENDING)]],  # the staff records of erasures left unfinished (accounts.deletion)
}


def ensure_indexes(db: Database | None = None) -> None:
    """Create the indexes the site and the workers query by; safe to call on every start."""
    db = db if db is not None else get_db()
    for name, indexes in _INDEXES.items():
        for keys in indexes:
            db[name].create_index(keys)


# --- reload generations --------------------------------------------------------------------

# Per process and database: {"at": when read, "live": {logical: generation}, "version": CURRENT,
# "lists": {logical: collection}}. Refreshed once per POINTER_TTL_S for every collection at once
# (one read of the small pointer collection, and CURRENT from ``core.published``); a version's per-version collections
# are looked up once while that version stays current, not again at each refresh.
_pointer_cache: dict[tuple[int, str], dict[str, Any]] = {}


def raw_collection(db: Database, name: str) -> Collection:
    """The collection called ``name`` itself, not the generation or version it points to."""
    return Database.__getitem__(db, name)


def _pointers(db: Database) -> dict[str, Any]:
    key, now = (id(db.client), db.name), time.monotonic()
    state = _pointer_cache.get(key)
    if state is not None and now - state["at"] < POINTER_TTL_S:
        return state
    from core import published  # the published version is the pointer of its serving lists

    live = {doc["_id"]: doc["physical"] for doc in raw_collection(db, POINTERS).find({}, {"physical": 1})
            if doc.get("physical") and doc["_id"] in RELOADED}
    version = published.current_version()
    kept = {} if state is None or state["version"] != version else {
        n: c for n, c in state["lists"].items() if c != n}  # found lists stay; a missing one is looked for again
    state = _pointer_cache[key] = {"at": now, "live": live, "version": version, "lists": kept}
    return state


def physical_name(db: Database, name: str) -> str:
    """The collection that holds ``name`` now: its live generation, its published version's
    collection, or ``name`` itself (a collection never reloaded: that name resolves through the
    pointer of a reload made since, so holding it pins nothing until the first load)."""
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
    doc = raw_collection(db, POINTERS).find_one({"_id": name}, {"physical": 1}) or {}
    return doc.get("physical") or name


def per_version_name(name: str, version: str) -> str:
    return f"{name}__v{version}"


def forget_pointers() -> None:
    """Drop this process's cached pointers and published version (after a switch it made itself,
    and in tests)."""
    from core import published

    _pointer_cache.clear()
    published.forget()


def replace_collection_start(name: str, db: Database | None = None) -> str:
    """Begin a full reload of ``name``: a new, empty generation to insert into.

    A batch load inserts into the new generation (``insert_many`` is ~100x faster than
    per-document upserts on FerretDB) and :func:`replace_collection_finish` points readers at it,
    so a re-run ends with exactly the same documents, never duplicates. A generation left by a
    load that died is dropped here.
    """
    db = db if db is not None else get_db()
    with _pointer_lock(name, db) as fence:
        pointer = raw_collection(db, POINTERS).find_one({"_id": name}) or {}
        fence()
        if pointer.get("staging"):
            db.drop_collection(pointer["staging"])
        db.drop_collection(f"{name}__staging")  # the staging name of the drop-and-rename swap
        staging = f"{name}__g{time.time_ns() // 1_000_000}"
        db.create_collection(staging)
        try:
            fence()
        except Exception:  # not to be pointed at (the lock lost: core.locking.LeaseLost): nor left behind
            db.drop_collection(staging)
            raise
        raw_collection(db, POINTERS).update_one({"_id": name}, {"$set": {"staging": staging}}, upsert=True)
    return staging


@contextmanager
def _pointer_lock(name: str, db: Database) -> Iterator[Callable[[], None]]:
    """The pointer's read, check and write in one step, against another start or finish of the same
    collection (normally kept apart by the batch lock: this holds when it did not, e.g. a job that
    lost its lease still running). A filtered update is no such step on FerretDB v1, which runs it
    as a read, then a write: a start's write landing between the two was overwritten (reviewed:
    37 of 400 races). Inserting a lock document by ``_id`` is (core.locking.named_lock). Yields
    the lock's fence (core.locking.fenced_lock), called before each write: a holder stalled past
    the lock's lease while another start or finish took it over raises ``LeaseLost`` instead of
    writing what it read before (a stalled start overwrote the newer start's ``staging``)."""
    from core import locking  # here: core.locking imports this module

    with locking.fenced_lock(f"pointer:{name}", db=db, wait_s=120.0) as fence:
        yield fence


def replace_collection_finish(name: str, db: Database | None = None, staging: str | None = None) -> str:
    """Point readers at the generation :func:`replace_collection_start` began; returns its name.

    One ``_id`` update switches every reader (within ``POINTER_TTL_S``); the generation it
    replaces is retired, not dropped, so a reader still holding the old pointer keeps its data
    until :func:`drop_retired` removes it after ``RETIRE_GRACE_S``. ``staging``: the generation the
    caller filled (what its start returned); when another reload's start has replaced it since,
    this refuses, so readers never switch to a generation another job is still filling (or that
    its start dropped). The check and the switch hold the pointer's lock (:func:`_pointer_lock`),
    as a start does: a start between the two would otherwise be switched over.
    """
    db = db if db is not None else get_db()
    pointers = raw_collection(db, POINTERS)
    pointer = pointers.find_one({"_id": name}) or {}
    staging = staging or pointer.get("staging")
    if not staging:
        raise RuntimeError(f"no reload of {name} in progress")
    if pointer.get("staging") != staging:  # early, before building its indexes; decided under the lock
        raise _replaced(name, staging, pointer)
    for keys in _INDEXES.get(name, []):
        raw_collection(db, staging).create_index(keys)
    with _pointer_lock(name, db) as fence:
        pointer = pointers.find_one({"_id": name}) or {}
        previous = pointer.get("physical") or name
        now = time.time()
        fence()
        # conditional as well: a start that does not take the lock (an older version) is refused too
        switched = pointers.update_one({"_id": name, "staging": staging},
                                       {"$set": {"physical": staging, "staging": None, "switched_at": now}})
        if switched.matched_count != 1:
            raise _replaced(name, staging, pointers.find_one({"_id": name}) or {})
    if previous != staging:
        pointers.replace_one({"_id": f"retired:{previous}"},
                             {"_id": f"retired:{previous}", "retired": previous, "of": name, "at": now}, upsert=True)
    forget_pointers()
    drop_retired(db=db)
    return staging


def _replaced(name: str, staging: str, pointer: dict[str, Any]) -> RuntimeError:
    return RuntimeError(f"the reload of {name} into {staging} was replaced by another "
                       f"({pointer.get('staging') or 'finished'}); readers stay where they were")


def retire_collection(name: str, db: Database | None = None) -> str | None:
    """Retire every generation of a logical collection no longer loaded (dropped by
    :func:`drop_retired` after the grace period); returns the live generation's name, if any."""
    db = db if db is not None else get_db()
    pointers = raw_collection(db, POINTERS)
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
    pointers = raw_collection(db, POINTERS)
    retired = sorted(pointers.find({"retired": {"$exists": True}}), key=lambda d: d["at"])
    if wait and retired:
        time.sleep(max(0.0, retired[-1]["at"] + RETIRE_GRACE_S - time.time()))
    dropped = []
    for doc in retired:
        if doc["at"] + RETIRE_GRACE_S <= time.time():
            db.drop_collection(doc["retired"])
            pointers.delete_one({"_id": doc["_id"]})
            dropped.append(doc["retired"])
    return dropped + _drop_orphans(db)


_GENERATION = re.compile(r"(.+)__g([0-9]+)")  # <logical name>__g<ms at its creation>


def _orphans(db: Database, names: Iterable[str]) -> dict[str, list[str]]:
    """Per logical name, its generations a stalled writer made again after they were dropped.

    A write resolved to a generation (``physical_name``) that reaches the server after the
    generation's grace ended creates an empty collection of that name holding the write, which no
    pointer or retired record names (the write itself is carried over by the reload's replay,
    ``core.rating_history``). Such a collection is named older than the live generation and is
    neither live, staging nor waiting out its grace; or it is the plain name itself, which the
    collection's first reload retired (a write resolved before it). It is looked for only once the
    switch to the live one is past the grace (a finish writes the previous generation's retired
    record just after its switch; on one clock: ``switched_at`` is the finishing host's).
    """
    wanted = set(names) & RELOADED
    pointers = {d["_id"]: d for d in raw_collection(db, POINTERS).find({"_id": {"$in": sorted(wanted)}})}
    retiring = {d["retired"] for d in raw_collection(db, POINTERS).find({"retired": {"$exists": True}})}
    now, found = time.time(), {}
    for collection in db.list_collection_names():
        match = _GENERATION.fullmatch(collection)
        logical = match[1] if match else collection  # the plain name: the first reload retired it
        pointer = pointers.get(logical)
        if pointer is None or collection in retiring or collection in (pointer.get("physical"), pointer.get("staging")):
            continue
        live = _GENERATION.fullmatch(pointer.get("physical") or "")
        older = live is not None and (match is None or int(match[2]) < int(live[2]))
        if older and pointer.get("switched_at", now) + RETIRE_GRACE_S <= now:
            found.setdefault(logical, []).append(collection)
    return found


def _drop_orphans(db: Database) -> list[str]:
    """Drop what :func:`_orphans` finds, each name's under its pointer's lock, looked for again
    there: a start creates its staging and names it in the pointer under that lock, so a staging
    named older than the live generation (another host's clock behind; a start stalled before
    naming it) is never taken for an orphan. Optional cleanup: an error is logged, never raised
    (it runs after a finish's switch, and a load that switched must not fail for it)."""
    dropped: list[str] = []
    try:
        for name in _orphans(db, RELOADED):
            with _pointer_lock(name, db):
                for collection in _orphans(db, [name]).get(name, []):
                    db.drop_collection(collection)
                    dropped.append(collection)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("dropping orphaned generations stopped (%s: %s); the next reload tries again",
                    exc.__class__.__name__, exc)
    return dropped


# --- bulk reads and writes by _id ----------------------------------------------------------

DUPLICATE_KEY = 11000  # the server's error code for an ``_id`` (or unique key) already present
IN_CHUNK = 1000  # ids per `$in` query: the most the FerretDB build of bin/services pushes down to the index


CONCURRENT_READS_FROM_IDS = 64  # find_by_ids_many reads this many ids or more from threads


def insert_new(collection: Collection, docs: list[dict[str, Any]]) -> list[int]:
    """Insert ``docs`` in one unordered ``insert_many``; returns the positions of those whose
    ``_id`` was present already (they are left as they were), every other one inserted.

    Insert-by-``_id`` is the test-and-set FerretDB v1 and MongoDB share (see core/locking.py), so a
    duplicate is an answer here, not a failure; any other write error is raised.
    """
    if not docs:
        return []
    try:
        collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return [e["index"] for e in errors]
    return []


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
               for chunk in chunks(list(dict.fromkeys(ids)))]
    concurrently = len(queries) > 1 and sum(len(q[2]) for q in queries) >= CONCURRENT_READS_FROM_IDS

    def run(query: tuple[int, Collection, list[str], dict | None]) -> tuple[int, list[dict]]:
        k, coll, ids, proj = query
        return k, list(coll.find({"_id": {"$in": ids}}, proj))

    out: list[dict[str, dict]] = [{} for _ in requests]
    for k, docs in (_readers().map(run, queries) if concurrently else map(run, queries)):
        out[k].update((d["_id"], d) for d in docs)
    return out


def chunks(ids: list[str]) -> list[list[str]]:
    """``ids`` in groups of ``IN_CHUNK``: one ``$in`` each."""
    return [ids[lo:lo + IN_CHUNK] for lo in range(0, len(ids), IN_CHUNK)]


def _readers() -> ThreadPoolExecutor:
    """This process's threads for :func:`find_by_ids_many`."""
    return thread_pool("find-by-ids", 6)


def set_by_ids(collection: str, fields_by_id: dict[str, dict[str, Any]], db: Database | None = None,
               chunk: int = 500, upsert: bool = True) -> dict[str, int]:
    """Set (upsert) the given fields of many documents by ``_id`` in unordered bulk writes (a field
    valued :data:`UNSET` is removed); returns the documents matched, upserted and modified.

    Each statement is an update of *many* documents filtered by ``_id`` alone (so at most one):
    FerretDB v1 keeps the read cursor of every single-document update (``ReplaceOne``,
    ``UpdateOne``) of one command open until the command ends, and a bulk of ~100 of them on
    existing documents exhausted its connection pool and hung that database (seen here); a
    multi-document update reads its cursor to the end and closes it (500 existing histories in
    0.4 s). The build of bin/services closes each statement's cursor when it ends, so there both
    work; this keeps a server without that fix safe. On MongoDB it is the same single-document
    upsert.
    """
    ops = (UpdateMany({"_id": i}, _set_and_unset(fields), upsert=upsert) for i, fields in fields_by_id.items())
    return _bulk_write_chunks(db if db is not None else get_db(), collection, ops, chunk)


UNSET = object()  # a field's value in set_by_ids: the field is removed (a document that leaves it out)


def _set_and_unset(fields: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The update of :func:`set_by_ids`: ``$set`` of the fields, ``$unset`` of those valued :data:`UNSET`."""
    gone = {k: "" for k, v in fields.items() if v is UNSET}
    return {"$set": {k: v for k, v in fields.items() if v is not UNSET}, **({"$unset": gone} if gone else {})}


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


def iter_batches(cursor: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for doc in cursor:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- model versions and pipeline runs ------------------------------------------------------

def record_model_version(version: str, doc: dict[str, Any], db: Database | None = None) -> None:
    db = db if db is not None else get_db()
    db[MODEL_VERSIONS].update_one({"_id": version}, {"$set": {**doc, "_id": version}}, upsert=True)


def record_pruned_versions(versions: Iterable[str], db: Database | None = None) -> None:
    """Mark the records of versions whose folders were deleted (``pruned_at``) instead of deleting
    them: their metrics stay for the history, and the admin shows them as pruned rather than
    offering a rollback to files that are gone (spark_jobs.publish refuses one)."""
    versions = sorted(set(versions))
    if versions:
        db = db if db is not None else get_db()
        db[MODEL_VERSIONS].update_many({"_id": {"$in": versions}}, {"$set": {"pruned_at": time.time()}})


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
