"""What a shopper decides about their own data: "not interested" (a product never recommended
to them again) and erasing everything MongoDB keeps about their account.

Taking back a rating is a history change (``core.rating_history.remove_from_history``).
"""
from __future__ import annotations

from typing import Any

from pymongo.database import Database

from core import mongo, rating_history


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
    """
    db = db if db is not None else mongo.get_db()
    items = exclusion_entries(db[mongo.EXCLUSIONS].find_one({"_id": user_id}))
    if product_id not in items:
        items[product_id] = float(ts)
        doc = {"_id": user_id, "items": exclusion_items(items)}
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


def delete_user_data(user_id: str, db: Database | None = None) -> dict[str, int]:
    """Remove everything MongoDB keeps about one recommender id; returns what was removed, by kind.

    Idempotent (a second call removes nothing more). Live ratings and a linked reviewer's recent
    reviews are found by ``user_id`` (indexed on MongoDB, a scan on FerretDB: this runs once per
    deleted account, not per request); the review pages a reviewer appears on are the products of
    the user's history (which holds every batch review and live rating), rewritten without them.
    """
    db = db if db is not None else mongo.get_db()
    rated, removed = rating_history.history_entries(db[mongo.USER_HISTORY].find_one({"_id": user_id}))
    products = set(rated) | set(removed)  # reviewed_products(), without reading the history twice
    pages = 0
    for pid in sorted(products):
        page, n_pages = 1, 1
        while page <= n_pages:
            doc = db[mongo.PRODUCT_REVIEWS].find_one({"_id": f"{pid}:{page}"})
            if not doc:
                break
            n_pages = int(doc.get("pages") or 1)
            kept = [r for r in doc.get("items") or [] if r.get("user_id") != user_id]
            if len(kept) != len(doc.get("items") or []):
                db[mongo.PRODUCT_REVIEWS].update_one({"_id": doc["_id"]}, {"$set": {"items": kept}})
                pages += 1
            page += 1
    top = db[mongo.CATALOG_INDEX].find_one({"_id": "top_users"})  # the most active reviewers, by id
    top_users = 0
    if top and any(d.get("user_id") == user_id for d in top.get("items") or []):
        db[mongo.CATALOG_INDEX].update_one({"_id": "top_users"}, {"$set": {
            "items": [d for d in top["items"] if d.get("user_id") != user_id]}})
        top_users = 1
    return {
        "top_users": top_users,
        "ratings": db[mongo.RATINGS].delete_many({"user_id": user_id}).deleted_count,
        "recent_reviews": db[mongo.RECENT_REVIEWS].delete_many({"user_id": user_id}).deleted_count,
        "review_pages": pages,
        "history": db[mongo.USER_HISTORY].delete_one({"_id": user_id}).deleted_count,
        "rated_products": len(rated),
        "recommendations": db[mongo.RECOMMENDATIONS].delete_one({"_id": user_id}).deleted_count
        + db[mongo.BATCH_RECOMMENDATIONS].delete_one({"_id": user_id}).deleted_count,
        "exclusions": len(exclusions(user_id, db=db)),
        "exclusion_docs": db[mongo.EXCLUSIONS].delete_one({"_id": user_id}).deleted_count,
    }
