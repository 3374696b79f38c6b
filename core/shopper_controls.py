"""What a shopper decides about their own data: "not interested" (a product never recommended
to them again) and erasing everything MongoDB keeps about their account. The erasure is
resumable: stopped anywhere, the next run finishes it, each review subtracted from its product's
counts once (``mongo.PENDING_ERASURES``, :func:`_erase_reviews`).

Taking back a rating is a history change (``core.rating_history.remove_from_history``).
"""
from __future__ import annotations

import json
import uuid
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable, Iterable

from pymongo.collection import Collection
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

    Resumable and idempotent: stopped anywhere (a lost lock, a load's contention, a killed
    process), a second call finishes it, each review subtracted once (:func:`_erase_reviews`); a
    call after a finished one removes nothing more. Live ratings and a linked reviewer's recent
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
    # an erasure a stopped run began goes on, even if a load has since rewritten the history (a
    # scan on FerretDB, of a collection that holds only erasures under way)
    begun = {d["product"] for d in db[mongo.PENDING_ERASURES].find({"user": user_id}, {"product": 1})}
    products = set(rated) | set(removed) | set(indexed) | begun  # reviewed_products(), less one history read
    pages = corrected = 0
    unlist: dict[str, set[str]] = {}  # search key -> products no longer listed under it
    finished: dict[str, str] = {}  # pending erasure -> its token, once its product is done
    for pid in sorted(products):
        changed_pages, product_changed, words, token = _erase_reviews(pid, user_id, db, indexed.get(pid, ()))
        pages, corrected = pages + changed_pages, corrected + product_changed
        for word in words:
            unlist.setdefault(word, set()).add(pid)
        if token:
            finished[_pending_id(user_id, pid)] = token
    top = db[mongo.CATALOG_INDEX].find_one({"_id": "top_users"})  # the most active reviewers, by id
    top_users = 0
    if top and any(d.get("user_id") == user_id for d in top.get("items") or []):
        db[mongo.CATALOG_INDEX].update_one({"_id": "top_users"}, {"$set": {
            "items": [d for d in top["items"] if d.get("user_id") != user_id]}})
        top_users = 1
    search_postings = _unlist_words(unlist, db)
    if finished:  # last: until here a retry unlists their words again (by token: not a pass begun since)
        db[mongo.PENDING_ERASURES].delete_many({"_id": {"$in": list(finished)},
                                                "token": {"$in": list(finished.values())}})
    counts = {
        "top_users": top_users,
        "ratings": db[mongo.RATINGS].delete_many({"user_id": user_id}).deleted_count,
        "recent_reviews": db[mongo.RECENT_REVIEWS].delete_many({"user_id": user_id}).deleted_count,
        "review_pages": pages,
        "products": corrected,
        "search_postings": search_postings,
        "history": db[mongo.USER_HISTORY].delete_one({"_id": user_id}).deleted_count,
        "rated_products": len(rated),
        "recommendations": db[mongo.RECOMMENDATIONS].delete_one({"_id": user_id}).deleted_count
        + db[mongo.BATCH_RECOMMENDATIONS].delete_one({"_id": user_id}).deleted_count,
        "exclusions": len(exclusions(user_id, db=db)),
        "exclusion_docs": db[mongo.EXCLUSIONS].delete_one({"_id": user_id}).deleted_count,
    }
    trending.mark_changed([user_id], db=db)  # the history is gone: their trending votes go with it
    return counts


LOAD_STAMP = "load_stamp"  # which load wrote a product document and its review pages (spark_jobs/mongo_load.py)
ERASING = "erasing"  # a product document's tokens of the pending erasures subtracted from it (_erase_reviews)
_PRODUCT_FIELDS = {"n_reviews": 1, "avg_rating": 1, "rating_hist": 1, "sample_summary": 1, "title_generated": 1,
                   "categories": 1, "category": 1, "brand": 1, LOAD_STAMP: 1, ERASING: 1}
_TRIES = 5  # conditional writes a load's writes may miss in a row before a deletion gives up


class LoadContention(RuntimeError):
    """A load rewrote what a deletion read ``_TRIES`` times in a row: a temporary failure (the
    deletion is resumable: running it again finishes it), which the site answers with a 503."""


def _erase_reviews(product_id: str, user_id: str, db: Database,
                   indexed: Iterable[str] = ()) -> tuple[int, int, set[str], str | None]:
    """Take ``user_id``'s reviews off one product: its review pages, then what the load derived
    from them in the product's document (:func:`_without_reviews`). Returns the pages rewritten, 1
    if the product document lost the reviews (else 0), the search words only the removed summaries
    (and ``indexed``, their summaries as the load indexed them) gave the product, and the token of
    its pending erasure (None: none was needed), which :func:`delete_user_data` deletes once those
    words are unlisted.

    Resumable, each review subtracted once. The pages and the document are two writes (FerretDB v1
    has no multi-document transactions), and a run may stop between any two (``LeaseLost``,
    ``LoadContention``, a killed process); a retry finds no review of the account left on the
    pages. So before the first page write the reviews taken off are recorded in
    ``mongo.PENDING_ERASURES`` (one document per account and product, with the account's id: it
    goes with the erasure), with the document's ``LOAD_STAMP`` and an opaque random token. The
    document's update carries the token (``ERASING``, nothing of the account), then the record is
    marked done and the token taken off again (:func:`_forget_token`). A retry continues the
    record: the reviews its pages still hold replace what the record says of those pages (a write
    that did not happen), and the whole is subtracted unless the token is on the document
    (subtracted already) or the document's stamp changed (a load rewrote it: its counts are the
    load's, without the account if it began after the deletion was recorded, else its eraser
    erases it again and recounts the product) or the load's eraser has recounted it since
    (:func:`_subtract_reviews`). Done, the record keeps its words until
    :func:`delete_user_data` has unlisted them. A review beyond the 500 the pages keep stays
    counted until the next load.

    Under the product's fenced lock (core.locking): two deletions never rewrite its pages from one
    read, and a holder stalled past the lease raises ``LeaseLost`` instead of writing.

    A load does not take the lock, so the collections are bound once (a full load may switch the
    generation ``db[...]`` follows between a read and a write) and each write is conditional on the
    ``LOAD_STAMP`` read with it: a load's write of a page in between makes it miss, and it is read
    again. On MongoDB that closes the window; FerretDB v1 runs a filtered update as a read then a
    write, so there it only narrows it. A deletion that read pages older than the document lists
    the product in ``mongo.RECOUNTS`` (:func:`_pages_older`): the load's eraser recounts it
    (spark_jobs/mongo_load.py).
    """
    products, review_pages = db[mongo.PRODUCTS], db[mongo.PRODUCT_REVIEWS]  # bound once, see above
    pending, key = db[mongo.PENDING_ERASURES], _pending_id(user_id, product_id)
    with locking.fenced_lock(f"product:{product_id}", db=db) as fence:
        read = _read_pages(review_pages, product_id)
        record = pending.find_one({"_id": key})
        if record and record["done"]:
            _forget_token(products, product_id, record["token"], fence)  # (its run may have stopped first)
        written = 0
        for _try in range(_TRIES):
            mine = {d["_id"]: [r for r in d["items"] if r.get("user_id") == user_id] for d in read}
            mine = {page: reviews for page, reviews in mine.items() if reviews}  # {page id: the account's reviews}
            others = [r for d in read for r in d["items"] if r.get("user_id") != user_id]
            if mine:
                record = _pending(record, key, product_id, user_id, read, mine, others, indexed, products)
                fence()
                if _pages_older(_stamps(record, read), record["stamp"]):  # listed first (needless: harmless)
                    db[mongo.RECOUNTS].update_one({"_id": product_id}, {"$set": {"stamp": record["stamp"]}},
                                                  upsert=True)
                pending.replace_one({"_id": key}, record, upsert=True)
            missed = False
            for doc in read:
                if doc["_id"] in mine:
                    fence()
                    kept = [r for r in doc["items"] if r.get("user_id") != user_id]
                    if review_pages.update_one({"_id": doc["_id"], LOAD_STAMP: doc.get(LOAD_STAMP)},
                                               {"$set": {"items": kept}}).matched_count:
                        written += 1
                    else:
                        missed = True
            if not missed:
                break
            read = _read_pages(review_pages, product_id)  # a load wrote a page since: again
        else:
            raise LoadContention(f"review pages of {product_id}: rewritten by a load {_TRIES} times while a "
                                 "deletion read them; the deletion is resumable: run it again")
        if record is None:  # none of the account's reviews here, now or before
            return written, 0, _words_gone([], others, indexed), None
        if not record["done"]:
            taken = [r for page in record["pages"] for r in page["reviews"]]
            record["subtracted"] = _subtract_reviews(product_id, taken, others, _stamps(record, read), record["stamp"],
                                                     record["token"], products, db[mongo.RECOUNTS], fence)
            fence()
            pending.update_one({"_id": key}, {"$set": {"done": True, "subtracted": record["subtracted"]}})
            _forget_token(products, product_id, record["token"], fence)
    return written, int(record["subtracted"]), set(record["words"]) | _words_gone([], others, indexed), record["token"]


def _pending_id(user_id: str, product_id: str) -> str:
    """The ``_id`` of the pending erasure of ``user_id``'s reviews of ``product_id``."""
    return json.dumps([user_id, product_id])


def _pending(record: dict[str, Any] | None, key: str, product_id: str, user_id: str, read: list[dict[str, Any]],
             mine: dict[str, list[dict[str, Any]]], others: list[dict[str, Any]], indexed: Iterable[str],
             products: Collection) -> dict[str, Any]:
    """The pending erasure to record before the pages ``read`` lose ``mine`` ({page id: the
    account's reviews on it}; ``others``: every other review read): ``record`` when it is still to
    be finished, with these pages' reviews in place of what it held for them; else a new one, of
    the product document's stamp now and a new token (the words of a finished ``record`` kept).
    Of each review only its rating and summary: what the document and the search index derive."""
    if record and not record["done"]:
        pages = {page["id"]: page for page in record["pages"]}
    else:
        doc = products.find_one({"_id": product_id}, {LOAD_STAMP: 1}) or {}
        record = {"_id": key, "user": user_id, "product": product_id, "token": uuid.uuid4().hex,
                  "stamp": doc.get(LOAD_STAMP), "done": False, "subtracted": bool(record and record["subtracted"]),
                  "words": (record or {}).get("words", [])}
        pages = {}
    for doc in read:
        if doc["_id"] in mine:
            pages[doc["_id"]] = {"id": doc["_id"], "stamp": doc.get(LOAD_STAMP), "reviews": [
                {"rating": _rating(r), "summary": str(r.get("summary") or "")} for r in mine[doc["_id"]]]}
    taken = [r for page in pages.values() for r in page["reviews"]]
    return {**record, "pages": list(pages.values()),
            "words": sorted(set(record["words"]) | _words_gone(taken, others, indexed))}


def _stamps(record: dict[str, Any], read: list[dict[str, Any]]) -> set[Any]:
    """The ``LOAD_STAMP`` of the pages ``record``'s reviews came off and of the pages ``read``."""
    return {page["stamp"] for page in record["pages"]} | {d.get(LOAD_STAMP) for d in read}


def _words_gone(taken: list[dict[str, Any]], others: list[dict[str, Any]], indexed: Iterable[str]) -> set[str]:
    """The search words of the summaries ``taken`` and ``indexed`` that no review of ``others`` says."""
    still_said = {w for r in others for w in search.words(r.get("summary") or "")}
    theirs = [str(r.get("summary") or "") for r in taken] + list(indexed)
    return {w for text in theirs for w in search.words(text)} - still_said


def _read_pages(review_pages: Collection, product_id: str) -> list[dict[str, Any]]:
    """The product's review pages, in order (each says how many there are)."""
    read: list[dict[str, Any]] = []
    page, n_pages = 1, 1
    while page <= n_pages:
        doc = review_pages.find_one({"_id": f"{product_id}:{page}"})
        if not doc:
            break
        n_pages = int(doc.get("pages") or 1)
        read.append({**doc, "items": doc.get("items") or []})
        page += 1
    return read


def _forget_token(products: Collection, product_id: str, token: str, fence: Callable[[], None]) -> None:
    """Take ``token`` off the product document, once its pending erasure is marked done (the
    document keeps nothing of an erasure). Only deletions, under the product's lock, write
    ``ERASING``, and a load's upsert sets only its own fields: read, then written by ``_id``."""
    tokens = (products.find_one({"_id": product_id}, {ERASING: 1}) or {}).get(ERASING) or []
    if token in tokens:
        rest = [t for t in tokens if t != token]
        fence()
        products.update_one({"_id": product_id}, {"$set": {ERASING: rest}} if rest else {"$unset": {ERASING: ""}})


def write_recount(product_id: str, fields: dict[str, Any], stamp: int, db: Database | None = None) -> bool:
    """Write a load's recount of one product's review-derived ``fields`` and drop its listing in
    ``mongo.RECOUNTS`` (spark_jobs.mongo_load.erase_accounts_deleted_since), under the product's fenced lock (no
    deletion between its pages and its counts), only while the document is of load ``stamp``."""
    db = db if db is not None else mongo.get_db()
    with locking.fenced_lock(f"product:{product_id}", db=db) as fence:
        fence()
        written = db[mongo.PRODUCTS].update_one({"_id": product_id, LOAD_STAMP: stamp},
                                                {"$set": fields}).matched_count
        db[mongo.RECOUNTS].delete_one({"_id": product_id, "stamp": stamp})
        return bool(written)


def _subtract_reviews(product_id: str, mine: list[dict[str, Any]], others: list[dict[str, Any]],
                      stamps: set[Any], stamp: Any, token: str, products: Collection, recounts: Collection,
                      fence: Callable[[], None]) -> bool:
    """Write the product's document without the reviews ``mine`` of the pending erasure ``token``
    (``stamps``: of the pages they came off and those read), once: only while the document is of
    ``stamp`` (its stamp when the erasure began) and does not carry ``token`` yet, which the update
    adds. True when the document has them subtracted (now or by an earlier run); False when there
    is no document, a load rewrote it since, or nothing in it changed.

    Pages older than the document (:func:`_pages_older`): the erasure listed the product in
    ``recounts`` before it took the reviews off them, and the load's eraser drops the listing
    when it has recounted the product (under its lock): with the listing gone, the counts are the
    recount's, and nothing is subtracted from them.

    Conditional on its ``LOAD_STAMP`` as read; a miss is read again (a load's write since: moot).
    """
    for _try in range(_TRIES):
        doc = products.find_one({"_id": product_id}, _PRODUCT_FIELDS)
        if doc and token in (doc.get(ERASING) or []):
            return True
        if not doc or doc.get(LOAD_STAMP) != stamp:
            return False
        update = _without_reviews(doc, mine, others)
        if not update:
            return False
        if _pages_older(stamps, stamp) and not recounts.find_one({"_id": product_id, "stamp": stamp}):
            return False  # recounted since
        update["$set"][ERASING] = [*(doc.get(ERASING) or []), token]
        fence()
        if products.update_one({"_id": product_id, LOAD_STAMP: stamp}, update).matched_count:
            return True
    raise LoadContention(f"product {product_id}: rewritten by a load {_TRIES} times while a deletion read it; "
                       "the deletion is resumable: run it again")


def _without_reviews(doc: dict[str, Any], mine: list[dict[str, Any]],
                     others: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The update of product document ``doc`` that takes the reviews ``mine`` off it: count,
    histogram and average (rounded as Spark rounds), and, when its quoted summary was one of
    them, the next most helpful one of ``others`` and the generated title made from it
    (core.catalog: the load's own rule). None: nothing to change. Nothing of the account in it.
    """
    if not mine:
        return None
    fields: dict[str, Any] = _counts_less(doc, [_rating(r) for r in mine])
    quoted = str(doc.get("sample_summary") or "")
    if quoted.strip() and any(str(r.get("summary") or "") == quoted for r in mine):
        fields["sample_summary"] = catalog.most_helpful_summary(others)
        if doc.get("title_generated"):
            fields["title"] = catalog.fallback_title(doc.get("categories"), doc.get("category"), doc.get("brand"),
                                                     fields["sample_summary"])
    return {"$set": fields}


def _pages_older(stamps: set[Any], stamp: Any) -> bool:
    """Whether a review page read (of ``stamps``) is older than the product document (of
    ``stamp``): a load is between its products and its pages, so the document may not count what
    those pages hold (or count it differently), and the load's eraser writes its counts anew."""
    return any(_older(s, stamp) for s in stamps)


def _older(page_stamp: Any, stamp: Any) -> bool:
    """Whether a review page of ``page_stamp`` is older than the product document of ``stamp``
    (``LOAD_STAMP``): another load's. A page without a stamp was written before pages carried one:
    older than a document that carries a load's (an int), of the same write as one without it or
    with an earlier load's (a hex string, when only documents carried one)."""
    if page_stamp is None:
        return isinstance(stamp, int)
    return page_stamp != stamp


def _counts_less(doc: dict[str, Any], subtract: list[float]) -> dict[str, Any]:
    """``doc``'s count, histogram and average without the ratings ``subtract`` (a star the
    histogram has none of stays as it is)."""
    n = int(doc.get("n_reviews") or 0)
    hist = {str(s): int((doc.get("rating_hist") or {}).get(str(s)) or 0) for s in range(1, 6)}
    # The ratings' sum: exact from the histogram when it holds every rating (whole stars), else
    # from the stored average, which is rounded to 3 decimals.
    total = (sum(s * hist[str(s)] for s in range(1, 6)) if sum(hist.values()) == n
             else float(doc.get("avg_rating") or 0) * n) - sum(subtract)
    for rating in subtract:
        star = _star(rating)
        if star is not None and hist.get(star, 0) > 0:
            hist[star] -= 1
    left = max(0, n - len(subtract))
    return {"n_reviews": left, "rating_hist": hist, "avg_rating": _round3(total / left) if left else 0.0}


def _star(rating: float) -> str | None:
    return str(int(rating)) if rating.is_integer() else None


def _rating(review: dict[str, Any]) -> float:
    return float(review.get("rating") or 0)


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
