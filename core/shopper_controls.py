"""What a shopper decides about their own data: "not interested" (a product never recommended
to them again) and erasing everything MongoDB keeps about their account.

Taking back a rating is a history change (``core.rating_history.remove_from_history``).
"""
from __future__ import annotations

import time
import uuid
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable, Iterable

from pymongo.database import Database

from core import catalog, locking, mongo, rating_history, search, trending


# --- "not interested" ----------------------------------------------------------------------

def exclusion_entries(doc: dict | None) -> dict[str, float]:
    """{product: when} of an ``exclusions`` document: an array of ``{p, t}`` (any product id fits,
    see :func:`core.rating_history.history_entries`), or the former map keyed by product id."""
    items = (doc or {}).get("items") or []
    if isinstance(items, dict):
        return {p: float(t) for p, t in items.items()}
    return {e["p"]: float(e["t"]) for e in items}


def exclusion_items(items: dict[str, float]) -> list[dict[str, Any]]:
    return [{"p": p, "t": float(t)} for p, t in items.items()]


def exclusions(user_id: str, db: Database | None = None) -> set[str]:
    """Products the user said they are not interested in (one ``_id`` read)."""
    db = db if db is not None else mongo.get_db()
    return set(exclusion_entries(db[mongo.EXCLUSIONS].find_one({"_id": user_id})))


def add_exclusion(user_id: str, product_id: str, ts: float, db: Database | None = None) -> set[str]:
    """Record "not interested" (idempotent: the first time is kept); returns all the user's exclusions.

    A document of its own rather than a field of ``user_history``: the batch load rebuilds the
    histories from the reviews, and the training and publish jobs read every user's exclusions
    at once, which is one small collection here instead of a scan of every history.

    A read-modify-replace under the user's writer lock (``core.locking.writer_lock``), which a
    worker's batch holds while it writes the same document: without it, two members handling one
    partition during a rebalance each replaced the other's "not interested" (a hidden product
    came back: tests/integration/test_concurrent_writers.py). The caller must not hold that lock.
    """
    db = db if db is not None else mongo.get_db()
    with locking.writer_lock(user_id, db=db) as fence:
        items = exclusion_entries(db[mongo.EXCLUSIONS].find_one({"_id": user_id}))
        if product_id not in items:
            items[product_id] = float(ts)
            doc = {"_id": user_id, "items": exclusion_items(items)}
            fence()  # (core.locking.fence)
            db[mongo.EXCLUSIONS].replace_one({"_id": user_id}, doc, upsert=True)
    return set(items)


def all_exclusions(db: Database | None = None) -> dict[str, set[str]]:
    """Every user's exclusions, for the batch jobs that write many users' lists."""
    db = db if db is not None else mongo.get_db()
    return {d["_id"]: set(exclusion_entries(d)) for d in db[mongo.EXCLUSIONS].find({}, {"items": 1})}


# --- erasing an account --------------------------------------------------------------------

def reviewed_products(user_id: str, db: Database | None = None) -> set[str]:
    """The products whose review pages :func:`delete_user_data` rewrites for this user: everything
    in their history (every batch review and live rating, removed ones too).

    The site reads it before the deletion, which removes the history, to drop its cached pages of
    these products (recsite/accounts/deletion.py).
    """
    db = db if db is not None else mongo.get_db()
    rated, removed = rating_history.history_entries(db[mongo.USER_HISTORY].find_one({"_id": user_id}))
    return set(rated) | set(removed)


def delete_user_data(user_id: str, db: Database | None = None,
                     indexed: dict[str, list[str]] | None = None) -> dict[str, int]:
    """Remove everything MongoDB keeps about one recommender id; returns what was removed, by kind.

    Idempotent (a second call removes nothing more). Live ratings and a linked reviewer's recent
    reviews are found by ``user_id`` (indexed on MongoDB, a scan on FerretDB: this runs once per
    deleted account, not per request); the review pages a reviewer appears on are the products of
    the user's history (which holds every batch review and live rating), rewritten without them.
    What the load derived from those reviews goes too, so that nothing the person wrote stays on
    the site until the next reload: each product's counts, average and histogram lose their
    ratings, a summary of theirs quoted by the product (its ``sample_summary``, and a generated
    title) is replaced by the next most helpful one, and the search index no longer lists the
    product under a word only their summary had (:func:`_erase_reviews`).

    ``indexed`` ({product: summaries}): the account's reviews a batch load built the search index
    from, for the load's eraser (spark_jobs/mongo_load.py). An account deleted while the load ran
    was erased by the site from the pages then live, so neither its history nor the pages may
    still hold those reviews when the load's index (with their words) goes live; their words are
    unlisted like the pages' ones, and only the pages' reviews are subtracted from the counts.
    """
    db = db if db is not None else mongo.get_db()
    indexed = indexed or {}
    rated, removed = rating_history.history_entries(db[mongo.USER_HISTORY].find_one({"_id": user_id}))
    products = set(rated) | set(removed) | set(indexed)  # reviewed_products(), without reading the history twice
    pages = corrected = 0
    unlist: dict[str, set[str]] = {}  # search key -> products no longer listed under it
    for pid in sorted(products):
        changed_pages, product_changed, words = _erase_reviews(pid, user_id, db, indexed.get(pid, ()))
        pages, corrected = pages + changed_pages, corrected + product_changed
        for word in words:
            unlist.setdefault(word, set()).add(pid)
    top = db[mongo.CATALOG_INDEX].find_one({"_id": "top_users"})  # the most active reviewers, by id
    top_users = 0
    if top and any(d.get("user_id") == user_id for d in top.get("items") or []):
        db[mongo.CATALOG_INDEX].update_one({"_id": "top_users"}, {"$set": {
            "items": [d for d in top["items"] if d.get("user_id") != user_id]}})
        top_users = 1
    counts = {
        "top_users": top_users,
        "ratings": db[mongo.RATINGS].delete_many({"user_id": user_id}).deleted_count,
        "recent_reviews": db[mongo.RECENT_REVIEWS].delete_many({"user_id": user_id}).deleted_count,
        "review_pages": pages,
        "products": corrected,
        "search_postings": _unlist_words(unlist, db),
        "history": db[mongo.USER_HISTORY].delete_one({"_id": user_id}).deleted_count,
        "rated_products": len(rated),
        "recommendations": db[mongo.RECOMMENDATIONS].delete_one({"_id": user_id}).deleted_count
        + db[mongo.BATCH_RECOMMENDATIONS].delete_one({"_id": user_id}).deleted_count,
        "exclusions": len(exclusions(user_id, db=db)),
        "exclusion_docs": db[mongo.EXCLUSIONS].delete_one({"_id": user_id}).deleted_count,
    }
    trending.mark_changed([user_id], db=db)  # the history is gone: their trending votes go with it
    return counts


LOAD_STAMP = "load_stamp"  # a product document's field: which write of a load made it (spark_jobs/mongo_load.py)
_PRODUCT_FIELDS = {"n_reviews": 1, "avg_rating": 1, "rating_hist": 1, "sample_summary": 1, "title_generated": 1,
                   "categories": 1, "category": 1, "brand": 1, LOAD_STAMP: 1}


def _erase_reviews(product_id: str, user_id: str, db: Database,
                   indexed: Iterable[str] = ()) -> tuple[int, int, set[str]]:
    """Take ``user_id``'s reviews off one product: its review pages, then what the load derived
    from them in the product's document. Returns the pages rewritten, 1 if the product document
    changed (else 0), and the search words only the removed summaries (and ``indexed``, their
    summaries as the load indexed them) gave the product.

    Under the product's lock (core.locking): two deletions of reviewers of one product would each
    rewrite its pages from the same read, and one reviewer's review would come back. Only the
    reviews found on the pages are subtracted, in the same hold, so a repeated deletion (the
    worker's ``delete_account`` after the site's) never subtracts them twice, and of those only the
    ones the product document still counts (:func:`_subtract_reviews`: a load may have written the
    document after the pages it was read with, and write pages with them again); the pages are written
    first, so a deletion interrupted in between leaves the counts as they were until the reload.
    The pages hold a product's 500 most helpful reviews: a review beyond them (a product with more)
    stays counted until the reload. Each write is fenced (core.locking.fenced_lock): a deletion
    stalled past the lock's lease while another took the lock over raises ``LeaseLost`` instead of
    writing pages or counts from its old read (a review the other one removed came back); it is
    safe mid-way, as the erasure is idempotent and its callers run it again (the worker retries
    the ``delete_account`` event; the site answers an error, the account still there to delete).
    """
    with locking.fenced_lock(f"product:{product_id}", db=db) as fence:
        mine: list[dict[str, Any]] = []
        others: list[dict[str, Any]] = []  # every other review on the pages, in page order
        pages, page, n_pages = 0, 1, 1
        while page <= n_pages:
            doc = db[mongo.PRODUCT_REVIEWS].find_one({"_id": f"{product_id}:{page}"})
            if not doc:
                break
            n_pages = int(doc.get("pages") or 1)
            items = doc.get("items") or []
            kept = [r for r in items if r.get("user_id") != user_id]
            others.extend(kept)
            if len(kept) != len(items):
                mine.extend(r for r in items if r.get("user_id") == user_id)
                fence()
                db[mongo.PRODUCT_REVIEWS].update_one({"_id": doc["_id"]}, {"$set": {"items": kept}})
                pages += 1
            page += 1
        if not mine and not indexed:
            return pages, 0, set()
        changed = bool(mine) and _subtract_reviews(product_id, user_id, mine, others, db, fence)
    still_said = {w for r in others for w in search.words(r.get("summary") or "")}
    theirs = [str(r.get("summary") or "") for r in mine] + list(indexed)
    gone = {w for text in theirs for w in search.words(text)} - still_said
    return pages, int(changed), gone


def _subtract_reviews(product_id: str, user_id: str, mine: list[dict[str, Any]], others: list[dict[str, Any]],
                      db: Database, fence: Callable[[], None]) -> bool:
    """The product's document without ``user_id``'s reviews ``mine``, as the load would write it
    without them: count, histogram and average (rounded as Spark rounds), and, when its quoted
    summary was one of theirs, the next most helpful one of ``others`` and the generated title made
    from it (core.catalog: the load's own rule). False when there is no product document, or
    nothing in it changed.

    Only the reviews this document still counts are subtracted. The pages they were found on are
    not always the pages that go live with the document: a load writes the products, then the pages,
    so an account deleted in between is taken off the load's product by the previous pages, and the
    load's eraser then finds the account's reviews again on the load's pages. So each subtraction
    is recorded (``mongo.COUNT_ERASURES``, one document per product and account: the reviews by
    rating and time, and the document's ``LOAD_STAMP``), and the reviews recorded against the
    document's current stamp are not subtracted again; a review only the load's pages hold (more
    of the account's reviews than the previous pages) still is. A record of another stamp was made
    on a document the load has replaced since, which counts every review again: it is replaced.
    Called under the product's lock (:func:`_erase_reviews`), which the record shares; ``fence``
    is the lock's (``core.locking.fence``), called before each write. The next
    load's eraser deletes the records (:func:`forget_count_erasures`).
    """
    doc = db[mongo.PRODUCTS].find_one({"_id": product_id}, _PRODUCT_FIELDS)
    if not doc:
        return False
    stamp, key = doc.get(LOAD_STAMP), f"{product_id}|{user_id}"
    record = db[mongo.COUNT_ERASURES].find_one({"_id": key}) or {}
    done = [(float(e["r"]), float(e["t"])) for e in record.get("reviews") or []] \
        if record and record.get("stamp") == stamp else []
    counted = _not_in(mine, done)
    fields: dict[str, Any] = {}
    if counted:
        n = int(doc.get("n_reviews") or 0)
        hist = {str(s): int((doc.get("rating_hist") or {}).get(str(s)) or 0) for s in range(1, 6)}
        # The ratings' sum: exact from the histogram when it holds every rating (whole stars), else
        # from the stored average, which is rounded to 3 decimals.
        total = (sum(s * hist[str(s)] for s in range(1, 6)) if sum(hist.values()) == n
                 else float(doc.get("avg_rating") or 0) * n)
        for r in counted:
            rating = float(r.get("rating") or 0)
            total -= rating
            star = str(int(rating)) if rating.is_integer() else None
            if star in hist and hist[star] > 0:
                hist[star] -= 1
        left = max(0, n - len(counted))
        fields = {"n_reviews": left, "rating_hist": hist, "avg_rating": _round3(total / left) if left else 0.0}
    quoted = str(doc.get("sample_summary") or "")
    if quoted.strip() and any(str(r.get("summary") or "") == quoted for r in mine):
        fields["sample_summary"] = catalog.most_helpful_summary(others)
        if doc.get("title_generated"):
            fields["title"] = catalog.fallback_title(doc.get("categories"), doc.get("category"), doc.get("brand"),
                                                     fields["sample_summary"])
    if not fields:
        return False
    fence()
    db[mongo.PRODUCTS].update_one({"_id": product_id}, {"$set": fields})
    if counted:
        reviews = [{"r": r, "t": t} for r, t in done + [_identity(r) for r in counted]]
        fence()
        db[mongo.COUNT_ERASURES].replace_one({"_id": key}, {"_id": key, "stamp": stamp, "reviews": reviews,
                                                            "at": time.time()}, upsert=True)
    return True


def _identity(review: dict[str, Any]) -> tuple[float, float]:
    """A review of one account and product, as the load writes it again: its rating and time."""
    return float(review.get("rating") or 0), float(review.get("ts") or 0)


def _not_in(reviews: list[dict[str, Any]], recorded: list[tuple[float, float]]) -> list[dict[str, Any]]:
    """``reviews`` less ``recorded`` (:func:`_identity`), each recorded one matching one review."""
    left = Counter(recorded)
    rest = []
    for r in reviews:
        if left[_identity(r)]:
            left[_identity(r)] -= 1
        else:
            rest.append(r)
    return rest


def forget_count_erasures(before: float, db: Database | None = None) -> int:
    """Delete the records of :func:`_subtract_reviews` made before ``before``; returns how many.

    The load's eraser calls it once it has erased every account deleted while the load ran
    (spark_jobs/mongo_load.py): a record matters only while pages holding the account's reviews
    may still go live beside a product document it was made on, and by then every such page is live
    and erased. A deletion when no load runs leaves its records until the next load's eraser.
    """
    db = db if db is not None else mongo.get_db()
    return db[mongo.COUNT_ERASURES].delete_many({"at": {"$lt": before}}).deleted_count


def _round3(x: float) -> float:
    """``x`` rounded to 3 decimals half up, as the load's ``F.round(avg, 3)`` (Spark rounds the
    double's shortest decimal form, which Python's ``repr`` gives)."""
    return float(Decimal(repr(x)).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


def _unlist_words(unlist: dict[str, set[str]], db: Database) -> int:
    """Take each product off the search keys of ``unlist`` ({key: products}) where it is listed
    by its review words only; returns the postings removed.

    The keys' locks are taken at once (core.locking.take_locks: one insert), so two deletions
    never rewrite one key from the same read; the keys are read by ``_id`` in one ``$in`` per
    1,000 and written back by ``_id``, each write fenced (core.locking.fence: ``LeaseLost``, nothing
    written, when a stall let another deletion take the keys over).
    """
    if not unlist:
        return 0
    names = {key: f"search:{key}" for key in unlist}
    token = uuid.uuid4().hex
    fence = locking.take_locks(names.values(), token, db=db)
    try:
        removed, rewritten, emptied = 0, [], []
        for key, doc in mongo.find_by_ids(mongo.SEARCH_INDEX, list(unlist), db=db).items():
            new, n = search.without_review_postings(doc, unlist[key])
            removed += n
            if new is None:
                emptied.append(key)
            elif n:
                rewritten.append(new)
        if rewritten:
            fence()
            mongo.bulk_upsert(mongo.SEARCH_INDEX, rewritten, db=db)
        if emptied:
            fence()
            db[mongo.SEARCH_INDEX].delete_many({"_id": {"$in": emptied}})
    finally:
        locking.release_locks(names.values(), token, db=db)
    return removed
