"""What the "recommended for you" page and API show, and its validator for conditional requests."""
from __future__ import annotations

import hashlib
from typing import Any

from django.core.cache import cache

from core import mongo
from core.settings import get_settings
from shop.products import TTL_S, summaries, title

NO_LIST_ETAG = '"none"'


def etag(doc: dict | None) -> str:
    """Changes exactly when the worker writes a new list (model version + write time).

    A polling page sends it back in ``If-None-Match`` and gets ``304 Not Modified`` for the price
    of one ``_id`` read, until the worker has written something new.
    """
    if doc and doc.get("items"):
        return f'"{doc.get("model_version")}-{doc.get("updated_at")}"'
    return NO_LIST_ETAG


def for_user(recommender_id: str, doc: dict | None = None) -> dict[str, Any]:
    """The user's personal list with titles and reasons, or popular products as a fallback.

    ``doc`` is the user's stored list when the caller already read it (to compute the ETag).
    """
    if doc is None:
        doc = mongo.get_recommendations(recommender_id)
    tag = etag(doc)
    if tag != NO_LIST_ETAG:
        # A personal list changes only together with its ETag (the worker stores the rating in the
        # history, then writes the list), so what is shown for one ETag can be kept: a page load or
        # an unconditional fetch of an unchanged list then costs one MongoDB read, not two plus titles.
        key = "recs:view:" + hashlib.sha256(f"{recommender_id}|{tag}".encode()).hexdigest()[:40]
        shown = cache.get(key)
        if shown is None:
            shown = _personal(recommender_id, doc)
            cache.set(key, shown, TTL_S)
        return shown
    return _popular(recommender_id)


def _personal(recommender_id: str, doc: dict) -> dict[str, Any]:
    items = doc["items"][: get_settings().top_n]
    names = summaries([i["product_id"] for i in items] + [i.get("because") for i in items])
    out = [{
        "product_id": i["product_id"],
        "title": title(names, i["product_id"]),
        "score": round(float(i.get("score", 0.0)), 4),
        "because": i.get("because"),
        "because_title": title(names, i.get("because")),
    } for i in items]
    source = "popular" if doc.get("model_version") == "popular" else "personal"
    return {"user_id": recommender_id, "source": source, "model_version": doc.get("model_version"),
            "updated_at": doc.get("updated_at"), "source_event_id": doc.get("source_event_id"),
            "n_rated": len(mongo.user_ratings(recommender_id)), "items": out, "etag": etag(doc)}


def _popular(recommender_id: str) -> dict[str, Any]:
    """Not cached: it depends on the user's history and on lists Celery refreshes."""
    history = mongo.user_ratings(recommender_id)
    top_n = get_settings().top_n
    popular = [p for p in mongo.get_popular("all", "popular") if p["product_id"] not in history][:top_n]
    names = summaries([p["product_id"] for p in popular])
    out = [{"product_id": p["product_id"], "title": title(names, p["product_id"]),
            "score": round(float(p.get("score", 0.0)), 4), "because": None, "because_title": None}
           for p in popular]
    return {"user_id": recommender_id, "source": "popular", "model_version": None, "updated_at": None,
            "source_event_id": None, "n_rated": len(history), "items": out, "etag": NO_LIST_ETAG}


def fallback_lists(limit: int = 8) -> list[dict[str, Any]]:
    """Popular and trending products per category, for new users and the onboarding step."""
    lists = []
    for cat in [{"name": mongo.ALL}] + mongo.categories()[:6]:
        for kind in ("trending", "popular"):
            items = mongo.get_popular(cat["name"], kind)[:limit]
            if items:
                names = summaries([i["product_id"] for i in items])
                lists.append({"category": cat["name"], "kind": kind, "items": [
                    {**i, "title": title(names, i["product_id"])} for i in items]})
    return lists
