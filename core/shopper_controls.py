"""A shopper's "not interested": a product never recommended to them again, until they take it
back ("interested again"). Written by the worker's events (:func:`change_exclusion`, and
:func:`apply_exclusion_change` for a batch); read by every writer of a list.

Taking back a rating is a history change (``core.rating_history.remove_from_history``); erasing
an account is ``core.erasure``.
"""
from __future__ import annotations

from typing import Any

from pymongo.database import Database

from core import locking, mongo


# --- "not interested" and taking it back ------------------------------------------------------

def exclusion_entries(doc: dict | None) -> dict[str, float]:
    """{product: when} of an ``exclusions`` document: an array of ``{p, t}`` (any product id fits,
    see :func:`core.rating_history.history_entries`), or the former map keyed by product id."""
    items = (doc or {}).get("items") or []
    if isinstance(items, dict):
        return {p: float(t) for p, t in items.items()}
    return _entries(items)


def _entries(items: list[dict[str, Any]]) -> dict[str, float]:
    """{product: when} of a stored array of ``{p, t}`` (:func:`exclusion_items` writes it)."""
    return {e["p"]: float(e["t"]) for e in items}


SHOWN = "shown"  # the field of an exclusions document that holds :func:`shown_again_entries`


def shown_again_entries(doc: dict | None) -> dict[str, float]:
    """{product: when} the shopper took a "not interested" back (``interested_again``): kept like a
    history's ``removed``, so a "not interested" older than that, delivered late, cannot hide it again."""
    return _entries((doc or {}).get(SHOWN) or [])


def exclusion_items(items: dict[str, float]) -> list[dict[str, Any]]:
    return [{"p": p, "t": float(t)} for p, t in items.items()]


def exclusion_fields(items: dict[str, float], shown: dict[str, float]) -> dict[str, Any]:
    """The stored fields of an exclusions document (read back by :func:`exclusion_entries` and
    :func:`shown_again_entries`)."""
    return {"items": exclusion_items(items), SHOWN: exclusion_items(shown)}


def _exclusion_key(hide: bool, ts: float) -> tuple[float, bool]:
    """Of two changes of one product's exclusion the later ``ts`` wins; at the same ``ts`` taking
    it back does: :func:`core.rating_history.change_key`'s rule, a removal winning a tie."""
    return (float(ts), not hide)


def apply_exclusion_change(items: dict[str, float], shown: dict[str, float], product_id: str, hide: bool,
                           ts: float) -> bool:
    """Hide (``not_interested``) or show again (``interested_again``) one product in exclusions held
    in memory, unless the change there for that product wins over it (:func:`_exclusion_key`);
    True if they changed. The one rule every exclusions writer applies (the worker's batches and
    :func:`change_exclusion`), as
    :func:`core.rating_history.apply_history_change` is for ratings: an older change does not
    overwrite a newer one, a redelivered one changes nothing, and changes of the same time end
    the same whatever order they come in."""
    kept = [_exclusion_key(True, items[product_id])] if product_id in items else []
    if product_id in shown:
        kept.append(_exclusion_key(False, shown[product_id]))
    if kept and max(kept) >= _exclusion_key(hide, ts):
        return False
    if hide:
        items[product_id] = float(ts)
        shown.pop(product_id, None)
    else:
        items.pop(product_id, None)
        shown[product_id] = float(ts)  # even with nothing to take back: keeps out an older one late
    return True


def exclusions(user_id: str, db: Database | None = None) -> set[str]:
    """Products the user said they are not interested in (one ``_id`` read)."""
    return set(hidden_since(user_id, db=db))


def hidden_since(user_id: str, db: Database | None = None) -> dict[str, float]:
    """{product: when it was hidden} of the user's exclusions (one ``_id`` read): the page that
    lists them shows the latest first."""
    db = db if db is not None else mongo.get_db()  # not the products shown again: they are only for writes
    return exclusion_entries(db[mongo.EXCLUSIONS].find_one({"_id": user_id}, {"items": 1}))


def change_exclusion(user_id: str, product_id: str, hide: bool, ts: float, db: Database | None = None) -> set[str]:
    """Hide or show again one product for the user, the newest change winning
    (:func:`apply_exclusion_change`: idempotent); returns all the user's exclusions.

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
        doc = db[mongo.EXCLUSIONS].find_one({"_id": user_id})
        items, shown = exclusion_entries(doc), shown_again_entries(doc)
        if apply_exclusion_change(items, shown, product_id, hide, ts):
            fence()  # (core.locking.fence)
            db[mongo.EXCLUSIONS].replace_one({"_id": user_id}, {"_id": user_id, **exclusion_fields(items, shown)},
                                             upsert=True)
    return set(items)


def all_exclusions(db: Database | None = None) -> dict[str, set[str]]:
    """Every user's exclusions, for the batch jobs that write many users' lists."""
    db = db if db is not None else mongo.get_db()
    return {d["_id"]: set(exclusion_entries(d)) for d in db[mongo.EXCLUSIONS].find({}, {"items": 1})}
