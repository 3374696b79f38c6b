"""Erasing a deleted account: everything MongoDB keeps about its recommender id, and the marks
in ``deleted_users`` that say it was deleted and whether an erasure of it ran to its end.

A deletion marks the id first (:func:`record_deleted_user`): every writer reads the mark
(``core.rating_history.is_deleted_user``), so nothing arriving later brings the account's data
back. Then :func:`delete_user_data` erases it; the site (recsite/accounts/deletion.py), the
worker's ``delete_account`` event and Celery's sweep (:func:`finish_erasures`) run it, and a run
again ends what a stopped one left.
"""
from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable, Iterable, NamedTuple

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from core import catalog, catalog_revision, locking, mongo, rating_history, search, shopper_controls, trending


# --- the deleted marks ------------------------------------------------------------------------

def record_deleted_user(user_id: str, db: Database | None = None) -> bool:
    """Mark the id deleted before its data goes, so a worker drops whatever arrives for it later;
    whether this call made the mark (False: a deletion of the account was asked before).

    Only the pseudonymous recommender id and the times are kept (``deleted_at``; ``erased_at`` once
    its data went, :func:`record_erased`): the training job needs the id to leave a linked
    reviewer's batch reviews out, and a redelivered event must find it.
    """
    db = db if db is not None else mongo.get_db()
    try:
        done = db[mongo.DELETED_USERS].update_one({"_id": user_id}, {"$setOnInsert": {"deleted_at": time.time()}},
                                                  upsert=True)
    except DuplicateKeyError:  # another first call inserted it meanwhile (FerretDB v1: read, then insert)
        return False
    return done.upserted_id is not None


def erasure_token(user_id: str, db: Database | None = None) -> str:
    """The token an erasure of this account leaves on each product document it has already taken
    the account's reviews off (:func:`delete_user_data`): the same in every run of one deletion, so a
    deletion run again after a stop, or run by another process at once, knows those products.

    A hash of the id with its deleted mark's time, which is set once when the mark is made and never
    changes: nothing to write, so two first runs cannot pick two tokens. It does not hide the id
    from someone who knows it and roughly when it was deleted (the marks are short-lived and shown
    nowhere). An account without a mark is marked here (its data is going: nothing may come back
    for it)."""
    db = db if db is not None else mongo.get_db()
    mark = db[mongo.DELETED_USERS].find_one({"_id": user_id}, {"deleted_at": 1})
    if mark is None:
        record_deleted_user(user_id, db=db)
        mark = db[mongo.DELETED_USERS].find_one({"_id": user_id}, {"deleted_at": 1})
    return hashlib.sha256(f"{user_id}\0{mark.get('deleted_at')!r}".encode()).hexdigest()[:32]


def record_erased(user_id: str, db: Database | None = None) -> None:
    """Note on the deleted mark that an erasure of the account ran to its end (``erased_at``):
    :func:`unfinished_erasures` no longer finds it."""
    db = db if db is not None else mongo.get_db()
    db[mongo.DELETED_USERS].update_one({"_id": user_id}, {"$set": {"erased_at": time.time()}})


def note_unfinished_erasure(user_id: str, ref: str, db: Database | None = None) -> None:
    """Add ``ref``, a random value the site's staff record of a deletion keeps while its erasure is
    unfinished, to the account's deleted mark: how the record learns when a run again ended it
    (:func:`erasures_ended`) without holding the id. Added, not set: a deletion asked again after a
    failed request, or twice at once, finds the mark made and leaves a record per stopped run.
    An end noted by an earlier run of the deletion goes (``erased_at``): this run stopped with
    something of the account found again (a write in flight when that run ended), so the sweep
    runs it again and notes the end afresh, rather than the record showing the earlier one."""
    db = db if db is not None else mongo.get_db()
    db[mongo.DELETED_USERS].update_one({"_id": user_id}, {"$addToSet": {"refs": ref}, "$unset": {"erased_at": ""}})


def erasures_ended(refs: Iterable[str], db: Database | None = None) -> dict[str, float]:
    """When the erasures noted under these refs (:func:`note_unfinished_erasure`) ran to their end
    (``erased_at``, by whichever run: the site's, the worker's, the sweep's); an unfinished one or
    an unknown ref is left out. One query, by the ``refs`` index."""
    wanted = set(refs)
    if not wanted:
        return {}
    db = db if db is not None else mongo.get_db()
    marks = db[mongo.DELETED_USERS].find({"refs": {"$in": sorted(wanted)}, "erased_at": {"$exists": True}},
                                         {"refs": 1, "erased_at": 1})
    return {ref: m["erased_at"] for m in marks for ref in m.get("refs", ()) if ref in wanted}


def unfinished_erasures(older_than_s: float, limit: int, db: Database | None = None) -> list[str]:
    """At most ``limit`` accounts, the longest deleted first, marked deleted more than
    ``older_than_s`` seconds ago whose erasure never ran to its end (stopped and left to the sweep;
    or marked before marks noted it)."""
    db = db if db is not None else mongo.get_db()
    query = {"erased_at": {"$exists": False}, "deleted_at": {"$lt": time.time() - older_than_s}}
    found = db[mongo.DELETED_USERS].find(query, {"_id": 1}).sort([("deleted_at", 1), ("_id", 1)]).limit(limit)
    return [d["_id"] for d in found]


# --- erasing an account ----------------------------------------------------------------------

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
                     indexed: dict[str, list[str]] | None = None, bump: bool = True,
                     rerun: bool = False) -> dict[str, int]:
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

    Stopped anywhere (a lock lost: ``core.locking.LeaseLost``) and run again, it ends as if it
    had run once: each product document it took the account's reviews off carries a mark (see
    :func:`_erase_reviews`) until the search words are unlisted.

    Whoever runs it (the site, the worker's ``delete_account``, Celery's sweep), it changes the
    catalog's revision (``core.catalog_revision``) when it changed what a page shows, right after
    those writes and before the history goes, or when it stopped part-way, so no page the site
    cached before shows what it erased. Only the site could, and pages cached between the site's
    run and the worker's or the sweep's showed the erased reviews for ``CATALOG_CACHE_SECONDS``.
    Not otherwise: each change makes every cached page unread, and a shopper's own ratings are on
    no product document, so a sign-up, a rating and a deletion emptied the site's caches.
    ``rerun``: a run of this deletion came before (the worker's after the site's, a redelivered
    one) and may have been killed between those writes and its change: with the account's
    products still in its history, it changes the revision whatever this run finds left to do.
    ``bump=False``: the caller erases many accounts and changes it once after them (the sweep, the
    load's eraser).
    """
    db = db if db is not None else mongo.get_db()
    indexed = indexed or {}
    rated, removed = rating_history.history_entries(db[mongo.USER_HISTORY].find_one({"_id": user_id}))
    products = set(rated) | set(removed) | set(indexed)  # reviewed_products(), without reading the history twice
    at_end = bump and rerun and bool(products)  # changed once, at the end, whatever this run finds
    try:
        return _erase(user_id, products, len(rated), indexed, db, bump=bump and not at_end)
    except BaseException:  # stopped part-way: what it changed must not be shown from the site's caches
        if products and bump and not at_end:
            catalog_revision.bump()
        raise
    finally:
        if at_end:
            catalog_revision.bump()


def _erase(user_id: str, products: set[str], rated: int, indexed: dict[str, list[str]], db: Database,
           bump: bool) -> dict[str, int]:
    """:func:`delete_user_data`'s writes, product by product then collection by collection."""
    mark = ERASING + erasure_token(user_id, db=db)
    pages = corrected = 0
    unlist: dict[str, set[str]] = {}  # search key -> products no longer listed under it
    marked: list[str] = []  # products whose document carries the mark
    for pid in sorted(products):
        erased = _erase_reviews(pid, user_id, db, indexed.get(pid, ()), mark=mark)
        pages, corrected = pages + erased.pages, corrected + erased.changed
        for word in erased.words:
            unlist.setdefault(word, set()).add(pid)
        if erased.marked:
            marked.append(pid)
    search_postings = _unlist_words(unlist, db)
    for pid in marked:  # only now: until the words are unlisted, the marks keep them
        db[mongo.PRODUCTS].update_one({"_id": pid}, {"$unset": {mark: ""}})
    catalog_index = mongo.physical_name(db, mongo.CATALOG_INDEX)  # read and write one generation
    top = db[catalog_index].find_one({"_id": "top_users"})  # the most active reviewers, by id
    top_users = 0
    if top and any(d.get("user_id") == user_id for d in top.get("items") or []):
        db[catalog_index].update_one({"_id": "top_users"}, {"$set": {
            "items": [d for d in top["items"] if d.get("user_id") != user_id]}})
        top_users = 1
    if bump and (corrected or pages or search_postings or top_users):  # before the history: see the caller
        catalog_revision.bump()
    counts = {
        "top_users": top_users,
        "ratings": db[mongo.RATINGS].delete_many({"user_id": user_id}).deleted_count,
        "recent_reviews": db[mongo.RECENT_REVIEWS].delete_many({"user_id": user_id}).deleted_count,
        "review_pages": pages,
        "products": corrected,
        "search_postings": search_postings,
        "history": db[mongo.USER_HISTORY].delete_one({"_id": user_id}).deleted_count,
        "rated_products": rated,
        "recommendations": db[mongo.RECOMMENDATIONS].delete_one({"_id": user_id}).deleted_count
        + db[mongo.BATCH_RECOMMENDATIONS].delete_one({"_id": user_id}).deleted_count,
        "exclusions": len(shopper_controls.exclusions(user_id, db=db)),
        "exclusion_docs": db[mongo.EXCLUSIONS].delete_one({"_id": user_id}).deleted_count,
    }
    trending.mark_changed([user_id], db=db)  # the history is gone: their trending votes go with it
    record_erased(user_id, db=db)
    return counts


ERASURES_PER_SWEEP = 100  # accounts one sweep erases again, at most (finish_erasures)


def finish_erasures(older_than_s: float, db: Database | None = None,
                    limit: int = ERASURES_PER_SWEEP) -> dict[str, int]:
    """Run :func:`delete_user_data` again for each account whose erasure stopped more than
    ``older_than_s`` seconds ago and was never run again (the site deleted the Django account and
    left the rest to this sweep, ``accounts.deletion``): what the shopper asked for is finished,
    the marks left on product documents go. One that stops again (a lock lost, a load in the way)
    is left for the next sweep. At most ``limit`` a sweep, the longest deleted first: each erasure
    scans the ratings by user, and the first sweep after the deploy that began noting finished
    erasures finds every older deletion unfinished; the next sweeps take the rest.
    Returns how many accounts were finished and how many stopped again."""
    done = stopped = tried = 0
    try:
        for user_id in unfinished_erasures(older_than_s, limit, db=db):
            tried += 1
            try:
                delete_user_data(user_id, db=db, bump=False)
                done += 1
            except INTERRUPTIONS:
                stopped += 1
    finally:  # once, whatever stopped the sweep (delete_user_data's ``bump``)
        if tried:
            catalog_revision.bump()
    return {"finished": done, "stopped": stopped}


LOAD_STAMP = "load_stamp"  # which load wrote a product document and its review pages (spark_jobs/mongo_load.py)
_PRODUCT_FIELDS = {"n_reviews": 1, "avg_rating": 1, "rating_hist": 1, "sample_summary": 1, "title_generated": 1,
                   "categories": 1, "category": 1, "brand": 1, LOAD_STAMP: 1}
_TRIES = 5  # conditional writes a load's writes may miss in a row before a deletion gives up
# A product document's field ``erasing_<token>`` (:func:`erasure_token`): a deletion
# has taken the account's reviews off this document; ``s``: the document's LOAD_STAMP then, ``w``:
# the search words to unlist. Dropped once the words are unlisted.
ERASING = "erasing_"


class LoadContention(RuntimeError):
    """A load rewrote what a deletion read ``_TRIES`` times in a row: a temporary failure (the
    deletion is idempotent: running it again finishes it, as Celery's ``finish_erasures`` does)."""


# What stops an erasure before its next write and leaves it for a run again to finish: a lock lost
# or held past its wait, a load in the way. The site leaves the rest to the sweep, which retries.
INTERRUPTIONS = (locking.LeaseLost, locking.LockHeld, LoadContention)


@dataclass
class _Erased:
    """What :func:`_erase_reviews` did to one product."""

    pages: int  # review pages rewritten
    changed: int  # 1 if the product document changed (by this run, or an earlier one of the deletion), else 0
    words: set[str]  # search words only the account's summaries gave the product
    marked: bool  # the document carries the deletion's mark (written now or by an earlier run)


def _erase_reviews(product_id: str, user_id: str, db: Database, indexed: Iterable[str] = (), *,
                   mark: str) -> _Erased:
    """Take ``user_id``'s reviews off one product: what the load derived from them in the
    product's document (:func:`_without_reviews`), then its review pages. The search words only
    the removed summaries (and ``indexed``, their summaries as the load indexed them) gave the
    product are for the caller to unlist.

    The document first, and with it the mark ``mark`` (``ERASING`` and the account's erasure
    token; in it the document's stamp and those words): the pages are the
    record of what to subtract until they are rewritten, and the mark says it was subtracted.
    Stopped after the document, a second run finds the mark and subtracts nothing again (it still
    rewrites the pages); stopped after the pages, it finds no review of the account on them and
    takes the words from the mark. A load that rewrote the document since (another stamp) voids
    the mark: the pages say again what to subtract (pages older than the document list it for the
    load's recount, below). A review beyond the 500 the pages keep stays counted until the next load.

    Under the product's fenced lock (core.locking): two deletions never rewrite its pages from one
    read, and a holder stalled past the lease raises ``LeaseLost`` instead of writing.

    A load does not take the lock, so the collections are bound once (a full load may switch the
    generation ``db[...]`` follows between a read and a write) and each write is conditional on the
    ``LOAD_STAMP`` read with it: a load's write in between makes it miss, and it is read again. On
    MongoDB that closes the window; FerretDB v1 runs a filtered update as a read then a write, so
    there it only narrows it. A deletion that read pages older than the document lists the product
    in ``mongo.RECOUNTS`` (:func:`_pages_older`): the load's eraser recounts it
    (spark_jobs/mongo_load.py).
    """
    products, review_pages = db[mongo.PRODUCTS], db[mongo.PRODUCT_REVIEWS]  # bound once, see above
    with locking.fenced_lock(f"product:{product_id}", db=db) as fence:
        read = _read_pages(review_pages, product_id)
        items = [r for doc in read for r in doc.get("items") or []]
        mine = [r for r in items if r.get("user_id") == user_id]  # the account's reviews on the pages
        others = [r for r in items if r.get("user_id") != user_id]  # every other review, in page order
        still_said = {w for r in others for w in search.words(r.get("summary") or "")}
        theirs = [str(r.get("summary") or "") for r in mine] + list(indexed)
        gone = {w for text in theirs for w in search.words(text)} - still_said
        # another deleted account's review, still on a page, is never quoted (read only when a quote may change)
        quotable = _not_deleted(others, db) if mine else others
        changed, noted, marked = _subtract_reviews(product_id, mine, quotable, {d.get(LOAD_STAMP) for d in read},
                                                   products, db[mongo.RECOUNTS], fence, mark=mark, gone=gone)
        pages = sum(_take_off_page(review_pages, doc, user_id, fence) for doc in read)
    return _Erased(pages, int(changed), gone | (noted - still_said), marked)


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


def _not_deleted(reviews: list[dict[str, Any]], db: Database) -> list[dict[str, Any]]:
    """``reviews`` without those of accounts marked deleted: a deletion stopped before a page's
    rewrite leaves its review there until it runs again (their marks in ``deleted_users``, by ``_id``)."""
    deleted = mongo.find_by_ids(mongo.DELETED_USERS, {str(r.get("user_id")) for r in reviews}, {"_id": 1}, db=db)
    return [r for r in reviews if r.get("user_id") not in deleted]


def _read_pages(review_pages: Collection, product_id: str) -> list[dict[str, Any]]:
    """The product's review pages, in order (as many as its first page says there are)."""
    read: list[dict[str, Any]] = []
    page, n_pages = 1, 1
    while page <= n_pages:
        doc = review_pages.find_one({"_id": f"{product_id}:{page}"})
        if not doc:
            break
        n_pages = int(doc.get("pages") or 1)
        read.append(doc)
        page += 1
    return read


def _take_off_page(review_pages: Collection, doc: dict[str, Any], user_id: str, fence: Callable[[], None]) -> int:
    """Rewrite the review page ``doc`` (as read) without ``user_id``'s reviews, conditional on its
    ``LOAD_STAMP``: a load's write of the page since the read is read again. 1 if it was rewritten."""
    for _try in range(_TRIES):
        items = doc.get("items") or []
        kept = [r for r in items if r.get("user_id") != user_id]
        if len(kept) == len(items):
            return 0
        fence()
        if review_pages.update_one({"_id": doc["_id"], LOAD_STAMP: doc.get(LOAD_STAMP)},
                                   {"$set": {"items": kept}}).matched_count:
            return 1
        doc = review_pages.find_one({"_id": doc["_id"]}) or {}
    raise LoadContention(f"review page {doc.get('_id')}: rewritten by a load {_TRIES} times while a deletion read "
                         "it; the deletion is idempotent: run it again")


class _Subtracted(NamedTuple):
    """What :func:`_subtract_reviews` did to one product's document."""

    changed: bool  # by this run or an earlier one of the deletion (False: no document, nothing to change)
    words: set[str]  # the words of a mark an earlier run of this deletion left on the document
    marked: bool  # the document carries the mark (of any stamp)


def _subtract_reviews(product_id: str, mine: list[dict[str, Any]], others: list[dict[str, Any]], stamps: set[Any],
                      products: Collection, recounts: Collection, fence: Callable[[], None], *, mark: str,
                      gone: Iterable[str]) -> _Subtracted:
    """Write the product's document without the reviews ``mine`` (``stamps``: of the pages read)
    and with the mark ``mark`` (its stamp and the words ``gone``), conditional on its ``LOAD_STAMP``
    as read, read again when a load wrote it since. Returns whether it changed, by this run or an
    earlier one (not when there is no product document, or nothing in it changed), the words of a
    mark an earlier run of this deletion left on the document, and whether the document carries
    the mark (of any stamp: one a load made stale goes too, its words unlisted).

    A mark of the document's stamp says the counts were subtracted: they are not again. Its quoted
    summary may still be one of ``mine``, though: another account's deletion in between chose it
    from pages that still held this account's reviews; it is replaced again."""
    for _try in range(_TRIES):
        doc = products.find_one({"_id": product_id}, {**_PRODUCT_FIELDS, mark: 1})
        if not doc:
            return _Subtracted(False, set(), False)
        stamp, earlier = doc.get(LOAD_STAMP), doc.get(mark)
        done = isinstance(earlier, dict) and earlier.get("s") == stamp  # subtracted by an earlier run
        # its words whatever its stamp: a load that rewrote the document may not have rebuilt the
        # search index (it failed after its pages), and the caller keeps the ones others still say
        words = set(earlier.get("w") or ()) if isinstance(earlier, dict) else set()
        update = _without_reviews(doc, mine, others, counts=not done)
        if not update:
            return _Subtracted(done, words, earlier is not None)
        if not done:
            update["$set"][mark] = {"s": stamp, "w": sorted(set(gone) | words)}
        fence()
        if _pages_older(stamps, stamp):  # listed first: the eraser finds it (needless: harmless)
            recounts.update_one({"_id": product_id}, {"$set": {"stamp": stamp}}, upsert=True)
        if products.update_one({"_id": product_id, LOAD_STAMP: stamp}, update).matched_count:
            return _Subtracted(True, words, True)
    raise LoadContention(f"product {product_id}: rewritten by a load {_TRIES} times while a deletion read it; "
                         "the deletion is idempotent: run it again")


def _without_reviews(doc: dict[str, Any], mine: list[dict[str, Any]], others: list[dict[str, Any]],
                     counts: bool = True) -> dict[str, Any] | None:
    """The update of product document ``doc`` that takes the reviews ``mine`` off it: count,
    histogram and average (rounded as Spark rounds), and, when its quoted summary was one of
    them, the next most helpful one of ``others`` and the generated title made from it
    (core.catalog: the load's own rule); with ``counts`` False the quoted summary only (an earlier
    run subtracted the counts). None: nothing to change. Nothing of the account in it.
    """
    if not mine:
        return None
    fields: dict[str, Any] = _counts_less(doc, [_rating(r) for r in mine]) if counts else {}
    quoted = str(doc.get("sample_summary") or "")
    if quoted.strip() and any(str(r.get("summary") or "") == quoted for r in mine):
        fields["sample_summary"] = catalog.most_helpful_summary(others)
        if doc.get("title_generated"):
            fields["title"] = catalog.fallback_title(doc.get("categories"), doc.get("category"), doc.get("brand"),
                                                     fields["sample_summary"])
    return {"$set": fields} if fields else None


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
        index = mongo.physical_name(db, mongo.SEARCH_INDEX)  # read and write one generation (core.mongo)
        for key, doc in mongo.find_by_ids(index, list(unlist), db=db).items():
            new, n = search.without_review_postings(doc, unlist[key])
            removed += n
            if new is None:
                emptied.append(key)
            elif n:
                rewritten.append(new)
        if rewritten:
            fence()
            mongo.bulk_upsert(index, rewritten, db=db)
        if emptied:
            fence()
            db[index].delete_many({"_id": {"$in": emptied}})
    finally:
        locking.release_locks(names.values(), token, db=db)
    return removed
