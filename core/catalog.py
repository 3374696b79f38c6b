"""Reads of the catalog the batch load wrote: products, their review pages, the browse order
per category, search, and the product ids a worker remembers as existing.

Every page reads ``_id``-keyed documents the load precomputed (see core/mongo.py on why): a
category's order in chunks of ids (``catalog_index``), one ``search_index`` document per query
word (core/search.py), a product's reviews by page (``product_reviews``).
"""
from __future__ import annotations

from typing import Any, Iterable, NamedTuple, Sequence

from pymongo.database import Database

from core import mongo


# --- the generated title of a product without one ------------------------------------------

FALLBACK_SUMMARY_CHARS = 80  # of a review's summary quoted in a generated title


def fallback_title(categories: Sequence[str] | None, category: str | None, brand: str | None,
                   summary: str | None) -> str:
    """A readable headline for a product whose data has no title (never its bare id).

    The most specific category it is filed under (the last of its category path, else its
    category, else "Catalog"), with what its most helpful review says ("Musical Instruments –
    “Great strings, no buzz”"), else the brand and that category. Written once, here, because two
    places title a product: the batch load, for every product without a title
    (spark_jobs/mongo_load.py applies this in Arrow batches), and an account deletion, which titles
    a product again when the summary quoted was the deleted reviewer's (core.erasure). A
    copy in each would let a reload and a deletion name the same product differently.
    """
    path = list(categories) if categories is not None else []
    leaf = (path[-1] if path else None) or category or "Catalog"
    short = (summary or "").strip()
    if len(short) > FALLBACK_SUMMARY_CHARS:
        short = short[:FALLBACK_SUMMARY_CHARS - 1].rstrip() + "…"
    if short:
        return f"{leaf} – “{short}”"
    brand = (brand or "").strip()
    return f"{brand} {leaf}" if brand else f"{leaf} product"


def most_helpful_summary(reviews: Iterable[dict[str, Any]]) -> str:
    """The summary a product is quoted by (its ``sample_summary``, and the generated title's words):
    the first non-empty one of ``reviews`` taken in the order of the review pages (most helpful,
    then newest), which is the review the load picks by helpful votes, then time; "" for none."""
    return next((str(r["summary"]) for r in reviews if str(r.get("summary") or "").strip()), "")


# --- products, review pages, browsing and search -------------------------------------------

_PRODUCT_LIST_FIELDS = {"title": 1, "category": 1, "price": 1, "n_reviews": 1, "avg_rating": 1, "brand": 1,
                        "sample_summary": 1, "image": 1, "has_metadata": 1}


def categories(db: Database | None = None) -> list[dict]:
    """[{name, n_products}] most products first, as the batch load recorded them."""
    db = db if db is not None else mongo.get_db()
    doc = db[mongo.CATALOG_INDEX].find_one({"_id": "categories"})
    return doc["items"] if doc else []


def list_products(page: int = 1, per_page: int = 24, category: str | None = None,
                  query: str | None = None, db: Database | None = None) -> tuple[list[dict], int]:
    """A page of products and the total count for pagination.

    Browsing reads the precomputed order (chunks of ids per category, most reviewed first) and
    then each product by id; a search reads one ``search_index`` document per query word and
    ranks the intersection (core/search.py): title, brand and category matches first.
    """
    db = db if db is not None else mongo.get_db()
    page, per_page = max(1, int(page)), max(1, min(100, int(per_page)))
    start = (page - 1) * per_page
    if query:
        ids = search_ids(str(query), category=str(category) if category else None, db=db)
        shown = ids[start:start + per_page]
        products = get_products(shown, db=db)
        return [products[i] for i in shown if i in products], len(ids)
    key = str(category) if category else mongo.ALL
    total_doc = db[mongo.CATALOG_INDEX].find_one({"_id": f"{key}:count"})
    total = int(total_doc["n"]) if total_doc else 0
    ids: list[str] = []
    chunk = start // mongo.CATALOG_CHUNK
    while len(ids) < per_page and chunk * mongo.CATALOG_CHUNK < total:
        doc = db[mongo.CATALOG_INDEX].find_one({"_id": f"{key}:{chunk}"})
        if not doc:
            break
        offset = start - chunk * mongo.CATALOG_CHUNK if not ids else 0
        ids.extend(doc["ids"][offset:offset + per_page - len(ids)])
        chunk += 1
    products = get_products(ids, db=db)
    return [products[i] for i in ids if i in products], total


def search_ids(query: str, category: str | None = None, db: Database | None = None) -> list[str]:
    """Every product matching all words of ``query`` (its first ``MAX_QUERY_WORDS``), best first (one
    ``_id`` read per word; two for a word longer than the indexed prefixes that is not indexed whole:
    the products of its prefix; none when a word is too long to be indexed: nothing matches it)."""
    from core import search

    db = db if db is not None else mongo.get_db()
    keys = search.query_keys(query)
    if not all(search.indexed(key) for key in keys):
        return []  # no product is listed under that word: ignoring it would widen the search
    postings = []
    for key in keys:
        doc = db[mongo.SEARCH_INDEX].find_one({"_id": key})
        if doc is None and len(key) > search.MAX_PREFIX:  # a long word not typed to its end yet:
            doc = db[mongo.SEARCH_INDEX].find_one({"_id": key[:search.MAX_PREFIX]})  # its longest prefix
        if doc is None:
            return []
        postings.append(search.Postings.from_doc(doc))
    return search.rank(postings, category)


def get_product(product_id: str, db: Database | None = None) -> dict | None:
    db = db if db is not None else mongo.get_db()
    return db[mongo.PRODUCTS].find_one({"_id": str(product_id)})


def get_products(product_ids: list[str], db: Database | None = None) -> dict[str, dict]:
    """Products by id, in the order asked (the ones that exist)."""
    ids = [str(p) for p in product_ids]
    found = mongo.find_by_ids(mongo.PRODUCTS, ids, _PRODUCT_LIST_FIELDS, db=db)
    return {pid: found[pid] for pid in dict.fromkeys(ids) if pid in found}


def product_exists(product_id: str, db: Database | None = None) -> bool:
    db = db if db is not None else mongo.get_db()
    return db[mongo.PRODUCTS].find_one({"_id": str(product_id)}, {"_id": 1}) is not None


def product_reviews(product_id: str, page: int = 1, db: Database | None = None) -> tuple[list[dict], int]:
    """One page of a product's reviews (most helpful, then newest first) and the page count."""
    db = db if db is not None else mongo.get_db()
    doc = db[mongo.PRODUCT_REVIEWS].find_one({"_id": f"{product_id}:{max(1, int(page))}"})
    if not doc:
        return [], 0
    return doc["items"], int(doc["pages"])


def compute_popular(limit: int = 50, category: str | None = None, db: Database | None = None) -> list[dict]:
    """Most-reviewed products, from the catalog order the batch load precomputed (no scan)."""
    db = db if db is not None else mongo.get_db()
    doc = db[mongo.CATALOG_INDEX].find_one({"_id": f"{category or mongo.ALL}:0"})
    ids = (doc or {}).get("ids", [])[:limit]
    products = get_products(ids, db=db)
    return [{"product_id": i, "score": float(products[i].get("n_reviews", 0))} for i in ids if i in products]


def most_active_users(limit: int = 10, db: Database | None = None) -> list[tuple[str, int]]:
    """(user id, number of ratings) of the most active reviewers, as the batch load recorded them."""
    db = db if db is not None else mongo.get_db()
    doc = db[mongo.CATALOG_INDEX].find_one({"_id": "top_users"})
    return [(d["user_id"], int(d["n"])) for d in (doc or {}).get("items", [])[:limit]]


# --- product ids a worker remembers --------------------------------------------------------

KNOWN_PRODUCTS_MAX = 2_000_000  # product ids remembered per process (~200 MB), then it starts again


_known_products: dict[tuple[str, str], set[str]] = {}


_catalog_read: dict[str, str] = {}  # per database: the catalog generation remember_catalog read last


class ProductLookup(NamedTuple):
    """Which products a batch must read, all of one catalog generation (:func:`products_to_look_up`)."""

    collection: str  # the generation to read them from (a physical collection name)
    ids: list[str]  # those not remembered as existing
    known: set[str]  # the products remembered of that generation


def existing_products(product_ids: Iterable[str], db: Database | None = None,
                      lookup: ProductLookup | None = None, found: dict[str, dict] | None = None) -> set[str]:
    """Which of these products the live catalog holds (the worker's ``product_exists`` for a batch).

    A product once found is remembered per database and catalog generation: products change only
    by a reload, which writes a new generation (see :func:`core.mongo.get_db`), so a remembered id is never
    stale; an unknown one is read again each time. ``lookup`` and ``found``: the caller already
    read ``lookup.ids`` from ``lookup.collection`` (the worker, beside its other reads). The plan,
    the read and the judgement use one generation: judged against a newer one (its pointer moved
    in between), a product remembered of the old one was neither read nor known, and a valid
    rating was dead-lettered as "unknown product". A product not found is looked for once more in
    the generation live now, if that is another: the one read may have been retired and dropped
    since (a batch's reads can start seconds after its plan), or be older than this process's
    cached pointer said (a product the reload added).
    """
    db = db if db is not None else mongo.get_db()
    wanted = set(product_ids)
    if lookup is None or found is None:
        lookup = products_to_look_up(wanted, db=db)
        found = mongo.find_by_ids(lookup.collection, lookup.ids, {"_id": 1}, db=db)
    lookup.known.update(found)
    missing = {p for p in wanted if p not in lookup.known}
    if missing:  # rare (a bad event): make sure the generation read was not retired meanwhile
        live = mongo.live_generation(mongo.PRODUCTS, db)
        if live != lookup.collection:  # a reload since the plan: its generation may be dropped already
            # not remembered: a set made for ``live`` while this process's cached pointer still names
            # the old generation would be dropped by the next batch's plan, and with it the whole read
            # of the catalog remember_catalog may have put in it
            missing -= mongo.find_by_ids(live, list(missing), {"_id": 1}, db=db).keys()
    return wanted - missing


def products_to_look_up(product_ids: Iterable[str], db: Database | None = None) -> ProductLookup:
    """The catalog generation live now and the ids of ``product_ids`` :func:`existing_products` must
    read from it (those not remembered as existing)."""
    db = db if db is not None else mongo.get_db()
    generation = mongo.physical_name(db, mongo.PRODUCTS)
    known = _remembered_products(db, generation)
    return ProductLookup(generation, [p for p in dict.fromkeys(product_ids) if p not in known], known)


def _remembered_products(db: Database, generation: str | None = None) -> set[str]:
    key = (db.name, generation or mongo.physical_name(db, mongo.PRODUCTS))
    known = _known_products.get(key)
    if known is None or len(known) > KNOWN_PRODUCTS_MAX:
        _known_products.clear()
        known = _known_products[key] = set()
    return known


def remember_catalog(limit: int, db: Database | None = None) -> int:
    """Remember every product of the live catalog, in one read, when it holds at most ``limit``;
    returns how many (0 when it holds more, or this generation was read before).

    A worker otherwise learns a product the first time an event names it, by a read: one of a
    one-rating batch's six commands, in three of four batches of a fresh worker at 10k products
    (bench/realtime_latency.py --trace), until the catalog is learnt. Remembering is safe for the
    reason given in :func:`existing_products`.
    """
    db = db if db is not None else mongo.get_db()
    generation = mongo.physical_name(db, mongo.PRODUCTS)
    if _catalog_read.get(db.name) == generation:
        return 0
    _catalog_read[db.name] = generation
    limit = min(limit, KNOWN_PRODUCTS_MAX)  # (not counted first: FerretDB v1 counts by reading every document)
    ids = [d["_id"] for d in mongo.raw_collection(db, generation).find({}, {"_id": 1}).limit(limit + 1)]
    if len(ids) > limit:
        return 0
    _remembered_products(db, generation).update(ids)  # this generation's set, whatever is live by now
    return len(ids)
