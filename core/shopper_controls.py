"""What a shopper decides about their own data: "not interested" (a product never recommended
to them again) and erasing everything MongoDB keeps about their account.

Taking back a rating is a history change (``core.rating_history.remove_from_history``).
"""
from __future__ import annotations

import hashlib
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


LOAD_STAMP = "load_stamp"  # which load wrote a product document and its review pages (spark_jobs/mongo_load.py)
# A product document's [{a: account (_account), r: [ratings], h: [those of them taken off its histogram]}]:
# what a deletion took off it by review pages older than it, until its load's pages (_without_reviews)
ERASED = "erased"
_PRODUCT_FIELDS = {"n_reviews": 1, "avg_rating": 1, "rating_hist": 1, "sample_summary": 1, "title_generated": 1,
                   "categories": 1, "category": 1, "brand": 1, LOAD_STAMP: 1, ERASED: 1}
_TRIES = 5  # conditional writes a load's writes may miss in a row before a deletion gives up


def _erase_reviews(product_id: str, user_id: str, db: Database,
                   indexed: Iterable[str] = ()) -> tuple[int, int, set[str]]:
    """Take ``user_id``'s reviews off one product: its review pages, then what the load derived
    from them in the product's document. Returns the pages rewritten, 1 if the product document
    changed (else 0), and the search words only the removed summaries (and ``indexed``, their
    summaries as the load indexed them) gave the product.

    Under the product's lock (core.locking): two deletions of reviewers of one product would each
    rewrite its pages from the same read, and one reviewer's review would come back. Only the
    reviews found on the pages are subtracted, in the same hold, so a repeated deletion (the
    worker's ``delete_account`` after the site's) never subtracts them twice (:func:`_subtract_reviews`
    says how a load's products and pages written at different moments are told apart); the pages
    are written first, so a deletion interrupted in between leaves the counts as they were until
    the reload. The pages hold a product's 500 most helpful reviews: a review beyond them (a product
    with more) stays counted until the reload. Each write is fenced (core.locking.fenced_lock): a
    deletion stalled past the lock's lease while another took the lock over raises ``LeaseLost``
    instead of writing pages or counts from its old read (a review the other one removed came
    back); it is safe mid-way, as the erasure is idempotent and its callers run it again (the
    worker retries the ``delete_account`` event; the site answers an error, the account still there
    to delete).

    A load does not take the lock: it writes product documents and pages whenever it gets to them.
    So the collections are bound once (``db[...]`` follows the live generation, which a full load
    may switch between a read and a write: the write would land in the other generation), and
    each write is conditional on the ``LOAD_STAMP`` read with it: a load's write in between makes
    it miss, and it is computed again from a new read. On MongoDB that closes the window; FerretDB
    v1 runs a filtered update as a read, then a write, so there it only narrows it.
    """
    products, review_pages = db[mongo.PRODUCTS], db[mongo.PRODUCT_REVIEWS]  # bound once, see above
    with locking.fenced_lock(f"product:{product_id}", db=db) as fence:
        mine: list[tuple[dict[str, Any], Any]] = []  # (review, the stamp of the page it was on)
        others: list[dict[str, Any]] = []  # every other review on the pages, in page order
        stamps: set[Any] = set()  # of the pages read
        pages, page, n_pages = 0, 1, 1
        while page <= n_pages:
            doc, removed = _take_off_page(review_pages, f"{product_id}:{page}", user_id, fence)
            if not doc:
                break
            n_pages = int(doc.get("pages") or 1)
            stamps.add(doc.get(LOAD_STAMP))
            others.extend(doc["items"])
            mine.extend((r, doc.get(LOAD_STAMP)) for r in removed)
            pages += bool(removed)
            page += 1
        if not mine and not indexed:
            return pages, 0, set()
        changed = _subtract_reviews(product_id, user_id, mine, others, stamps, products, fence)
    still_said = {w for r in others for w in search.words(r.get("summary") or "")}
    theirs = [str(r.get("summary") or "") for r, _ in mine] + list(indexed)
    gone = {w for text in theirs for w in search.words(text)} - still_said
    return pages, int(changed), gone


def _take_off_page(review_pages: Collection, page_id: str, user_id: str,
                   fence: Callable[[], None]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The page ``page_id`` without ``user_id``'s reviews (None: no such page), and the reviews
    taken off it; written only when it held some, conditional on the page's ``LOAD_STAMP``: a
    load's write of the page since the read (its reviews as the load has them) is read again."""
    for _try in range(_TRIES):
        doc = review_pages.find_one({"_id": page_id})
        if not doc:
            return None, []
        items = doc.get("items") or []
        kept = [r for r in items if r.get("user_id") != user_id]
        removed = [r for r in items if r.get("user_id") == user_id]
        if not removed:
            return {**doc, "items": kept}, []
        fence()
        if review_pages.update_one({"_id": page_id, LOAD_STAMP: doc.get(LOAD_STAMP)},
                                   {"$set": {"items": kept}}).matched_count:
            return {**doc, "items": kept}, removed
    raise RuntimeError(f"review page {page_id}: rewritten by a load {_TRIES} times while a deletion read it; "
                       "the deletion is idempotent: run it again")


def _subtract_reviews(product_id: str, user_id: str, mine: list[tuple[dict[str, Any], Any]],
                      others: list[dict[str, Any]], stamps: set[Any], products: Collection,
                      fence: Callable[[], None]) -> bool:
    """Write the product's document without ``user_id``'s reviews ``mine`` (each with the
    ``LOAD_STAMP`` of the page it was on; ``stamps``: of every page read), conditional on the
    document's stamp as read (:func:`_erase_reviews`), read and computed again when a load wrote it
    since. False when there is no product document, or nothing in it changed."""
    for _try in range(_TRIES):
        doc = products.find_one({"_id": product_id}, _PRODUCT_FIELDS)
        if not doc:
            return False
        update = _without_reviews(doc, user_id, mine, others, stamps)
        if not update:
            return False
        fence()
        if products.update_one({"_id": product_id, LOAD_STAMP: doc.get(LOAD_STAMP)}, update).matched_count:
            return True
    raise RuntimeError(f"product {product_id}: rewritten by a load {_TRIES} times while a deletion read it; "
                       "the deletion is idempotent: run it again")


def _without_reviews(doc: dict[str, Any], user_id: str, mine: list[tuple[dict[str, Any], Any]],
                     others: list[dict[str, Any]], stamps: set[Any]) -> dict[str, Any] | None:
    """The update of product document ``doc`` that takes ``user_id``'s reviews ``mine`` off it, as
    the load would write it without them: count, histogram and average (rounded as Spark rounds),
    and, when its quoted summary was one of theirs, the next most helpful one of ``others`` and the
    generated title made from it (core.catalog: the load's own rule). None: nothing to change.

    A load writes the product documents, then the review pages, both with its ``LOAD_STAMP``, then
    erases again every account deleted meanwhile (spark_jobs/mongo_load.py). The pages a deletion
    read are normally of the document's own write (the same stamp, or no stamp on either: written
    before pages carried one): the document counts exactly the reviews they hold. Pages older than
    the document (:func:`_older`) were read while a load was between its products and its pages: the
    document counts the account's reviews as the load read them, and the load's pages will hold
    them again, maybe changed (clean keeps one review per account and product, its latest). So the
    reviews those pages held are subtracted and their ratings remembered in the document, under
    the account's :func:`_account` (``ERASED``: also which of them came off the histogram, not a
    star the document has none of), in the same update as the counts (a deletion interrupted after
    it leaves nothing half-done). A deletion that reads pages of the document's
    own write (the load's eraser, or a repeated deletion) subtracts what they hold, adds back what
    is remembered for the account (the load's pages have the values the document counts), and
    drops the entry; when they hold none of the account's reviews (one beyond the 500 most helpful
    the pages keep), the remembered ones stay subtracted, the closest known, and the entry goes too.
    So with no load running nothing is remembered, and a load's next write of the document drops
    the field (mongo_load writes it null). An entry stays only when no deletion reads the load's
    pages of the product afterwards: an account deleted before the load began but erased after
    its products went live (the load left its reviews out, so its pages never hold them; the
    eraser looks only at accounts deleted since the load began) keeps its entry, and its
    subtraction, until the next load.
    """
    stamp, account = doc.get(LOAD_STAMP), _account(user_id)
    entries = list(doc.get(ERASED) or [])
    entry = next((e for e in entries if e.get("a") == account), {})
    remembered, stars = [float(r) for r in entry.get("r") or []], [float(r) for r in entry.get("h") or []]
    rest = [e for e in entries if e.get("a") != account]
    older = [_older(s, stamp) for _, s in mine]  # each review's page older than the document
    fields: dict[str, Any] = {}
    if any(_older(s, stamp) for s in stamps):  # a load between its products and its pages
        counts, taken = _counts_less(doc, [_rating(r) for r, _ in mine], [], [])
        new = [_rating(r) for (r, _), old in zip(mine, older) if old]
        new_stars = [_rating(r) for (r, _), old, off in zip(mine, older, taken) if old and off]
        kept = rest + ([{"a": account, "r": remembered + new, "h": stars + new_stars}] if remembered or new else [])
    else:  # pages of the document's own write: re-based on them
        counts, _ = _counts_less(doc, [_rating(r) for r, _ in mine], *((remembered, stars) if mine else ([], [])))
        kept = rest
    if mine:
        fields.update(counts)
    quoted = str(doc.get("sample_summary") or "")
    if quoted.strip() and any(str(r.get("summary") or "") == quoted for r, _ in mine):
        fields["sample_summary"] = catalog.most_helpful_summary(others)
        if doc.get("title_generated"):
            fields["title"] = catalog.fallback_title(doc.get("categories"), doc.get("category"), doc.get("brand"),
                                                     fields["sample_summary"])
    if kept and kept != entries:
        fields[ERASED] = kept
    update: dict[str, Any] = {"$set": fields} if fields else {}
    if entries and not kept:
        update["$unset"] = {ERASED: ""}
    return update or None


def _older(page_stamp: Any, stamp: Any) -> bool:
    """Whether a review page of ``page_stamp`` is older than the product document of ``stamp``
    (``LOAD_STAMP``): another load's. A page without a stamp was written before pages carried one:
    older than a document that carries a load's (an int), of the same write as one without it or
    with an earlier load's (a hex string, when only documents carried one)."""
    if page_stamp is None:
        return isinstance(stamp, int)
    return page_stamp != stamp


def _counts_less(doc: dict[str, Any], subtract: list[float], add: list[float],
                 add_stars: list[float]) -> tuple[dict[str, Any], list[bool]]:
    """``doc``'s count, histogram and average without the ratings ``subtract``, with ``add``
    (``add_stars`` of them in the histogram too); and which of ``subtract`` came off the histogram
    (not a star it has none of: a review changed since the document's load counted it)."""
    n = int(doc.get("n_reviews") or 0)
    hist = {str(s): int((doc.get("rating_hist") or {}).get(str(s)) or 0) for s in range(1, 6)}
    # The ratings' sum: exact from the histogram when it holds every rating (whole stars), else
    # from the stored average, which is rounded to 3 decimals.
    total = (sum(s * hist[str(s)] for s in range(1, 6)) if sum(hist.values()) == n
             else float(doc.get("avg_rating") or 0) * n) + sum(add) - sum(subtract)
    for rating in add_stars:
        if _star(rating) in hist:
            hist[_star(rating)] += 1
    taken = []
    for rating in subtract:
        taken.append(hist.get(_star(rating), 0) > 0)
        if taken[-1]:
            hist[_star(rating)] -= 1
    left = max(0, n - len(subtract) + len(add))
    return {"n_reviews": left, "rating_hist": hist, "avg_rating": _round3(total / left) if left else 0.0}, taken


def _star(rating: float) -> str | None:
    return str(int(rating)) if rating.is_integer() else None


def _rating(review: dict[str, Any]) -> float:
    return float(review.get("rating") or 0)


def _account(user_id: str) -> str:
    """How ``ERASED`` names an account: a short hash of its id, not the id."""
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:16]


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
