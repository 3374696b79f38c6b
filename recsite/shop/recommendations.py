"""What the "recommended for you" page and API show, and its validator for conditional requests."""
from __future__ import annotations

from typing import Any

from core import mongo
from core.settings import get_settings


def _titles(ids: list[str]) -> dict[str, dict]:
    return mongo.get_products(ids)


def for_user(recommender_id: str) -> dict[str, Any]:
    """The user's personal list with titles and reasons, or popular/trending lists as a fallback.

    ``etag`` changes exactly when the worker writes a new list (model version + write time), so a
    polling page gets ``304 Not Modified`` until then.
    """
    doc = mongo.get_recommendations(recommender_id)
    history = mongo.user_ratings(recommender_id)
    if doc and doc.get("items"):
        items = doc["items"][: get_settings().top_n]
        products = _titles([i["product_id"] for i in items] + [i.get("because") for i in items if i.get("because")])
        out = [{
            "product_id": i["product_id"],
            "title": products.get(i["product_id"], {}).get("title") or i["product_id"],
            "score": round(float(i.get("score", 0.0)), 4),
            "because": i.get("because"),
            "because_title": (products.get(i.get("because") or "", {}).get("title") or i.get("because"))
            if i.get("because") else None,
        } for i in items]
        source = "popular" if doc.get("model_version") == "popular" else "personal"
        return {"user_id": recommender_id, "source": source, "model_version": doc.get("model_version"),
                "updated_at": doc.get("updated_at"), "source_event_id": doc.get("source_event_id"),
                "n_rated": len(history), "items": out,
                "etag": f'"{doc.get("model_version")}-{doc.get("updated_at")}"'}
    popular = [p for p in mongo.get_popular("all", "popular") if p["product_id"] not in history][:get_settings().top_n]
    products = _titles([p["product_id"] for p in popular])
    out = [{"product_id": p["product_id"], "title": products.get(p["product_id"], {}).get("title") or p["product_id"],
            "score": round(float(p.get("score", 0.0)), 4), "because": None, "because_title": None} for p in popular]
    return {"user_id": recommender_id, "source": "popular", "model_version": None, "updated_at": None,
            "source_event_id": None, "n_rated": len(history), "items": out, "etag": '"none"'}


def fallback_lists(limit: int = 8) -> list[dict[str, Any]]:
    """Popular and trending products per category, for new users and the onboarding step."""
    lists = []
    for cat in [{"name": mongo.ALL}] + mongo.categories()[:6]:
        for kind in ("trending", "popular"):
            items = mongo.get_popular(cat["name"], kind)[:limit]
            if items:
                products = _titles([i["product_id"] for i in items])
                lists.append({"category": cat["name"], "kind": kind, "items": [
                    {**i, "title": products.get(i["product_id"], {}).get("title") or i["product_id"]} for i in items]})
    return lists
