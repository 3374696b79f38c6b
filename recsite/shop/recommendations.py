"""What the "recommended for you" page and API show, and its validator for conditional requests."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

from django.core.cache import cache
from django.core.paginator import Paginator

from core import list_state, mongo, rating_history, shopper_controls, stored_lists
from core.settings import get_settings
from core.recommend import without_excluded
from shop.products import TTL_S, cache_generation, card, cards, catalog_revision, summaries, title
from shop.products import categories as catalog_categories

NO_LIST_ETAG = list_state.NO_LIST
etag = list_state.version_of


def current_etag(recommender_id: str) -> str:
    """The ETag of the user's current list: from Redis when a writer announced it, else MongoDB.

    A polling page sends it back in ``If-None-Match`` and gets ``304 Not Modified`` for the price
    of one Redis read, until the worker has written something new.
    """
    generation = cache_generation()
    tag = list_state.current(recommender_id, generation)
    if tag is None:
        tag = etag(stored_lists.get_recommendations(recommender_id))
        list_state.remember(recommender_id, tag, generation)
    return tag


def shown_etag(recommender_id: str) -> tuple[str, dict[str, Any] | None]:
    """(the ETag of what the user is shown now, its body when the tag needed it, else None).

    A personal list's tag is its version (:func:`current_etag`, one Redis read). The fallback
    (popular) list has no version of its own: it changes with the popular lists Celery rewrites
    and with the user's history and exclusions that filter it, so its tag is its content's
    (:func:`_content_etag`), and the body is computed to know it. A fixed ``"none"`` answered 304
    for ever to a client polling it while the popular list changed.
    """
    tag = current_etag(recommender_id)
    if tag != NO_LIST_ETAG:
        return tag, None
    shown = dict(for_user(recommender_id, tag=tag))
    return shown.pop("etag"), shown


def _content_etag(shown: dict[str, Any]) -> str:
    """A strong ETag of a computed list (everything its body says), for a list without a version."""
    body = json.dumps({k: v for k, v in shown.items() if k != "etag"}, sort_keys=True, default=str)
    return f'"popular-{hashlib.sha256(body.encode()).hexdigest()[:24]}"'


def _view_key(kind: str, recommender_id: str, tag: str) -> str:
    """A list's view (its products' titles and counts), history or exclusions, kept per list ETag
    and catalog revision (an account deletion can change the titles and counts the view shows)."""
    named = f"{recommender_id}|{tag}|{catalog_revision()}"
    return f"recs:{kind}:" + hashlib.sha256(named.encode()).hexdigest()[:40]


def for_user(recommender_id: str, tag: str | None = None) -> dict[str, Any]:
    """The user's personal list with titles and reasons, or popular products as a fallback.

    A personal list changes only together with its ETag (the worker stores the rating in the
    history, then writes the list, then announces the new ETag), so what is shown for one ETag is
    kept: for a known ETag (``tag``, or Redis) this costs no MongoDB read at all. When nothing is
    kept, the list is read from MongoDB, which also checks the ETag Redis gave.
    """
    generation = cache_generation()
    if tag is None:
        tag = list_state.current(recommender_id, generation)
    if tag is not None and tag != NO_LIST_ETAG:
        shown = cache.get(_view_key("view", recommender_id, tag))
        if shown is not None:
            return shown
    doc = stored_lists.get_recommendations(recommender_id)
    truth = etag(doc)
    if tag is None:
        list_state.remember(recommender_id, truth, generation)
    elif tag != truth:  # Redis was behind MongoDB (a lost announcement)
        list_state.forget(recommender_id, generation)
    if truth == NO_LIST_ETAG:
        return _popular(recommender_id)
    shown = _personal(recommender_id, doc)
    cache.set(_view_key("view", recommender_id, truth), shown, TTL_S)
    return shown


def _per_list(recommender_id: str, reads: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
    """``{kind: read(recommender_id)}``, each kept per list ETag: the worker changes the user's
    history and exclusions, then writes the list, then announces its new ETag, so one ETag means
    one answer. One read of the ETag and one of the cache for all the kinds asked."""
    tag = list_state.current(recommender_id, cache_generation())
    if tag is None or tag == NO_LIST_ETAG:
        return {kind: read(recommender_id) for kind, read in reads.items()}
    keys = {kind: _view_key(kind, recommender_id, tag) for kind in reads}
    found = cache.get_many(list(keys.values()))
    out, missing = {}, {}
    for kind, read in reads.items():
        if keys[kind] in found:
            out[kind] = found[keys[kind]]
        else:
            out[kind] = missing[keys[kind]] = read(recommender_id)
    if missing:
        cache.set_many(missing, TTL_S)
    return out


def history(recommender_id: str) -> dict[str, float]:
    """What the user has rated (cached per list ETag)."""
    return _per_list(recommender_id, {"history": rating_history.user_ratings})["history"]


def excluded(recommender_id: str) -> set[str]:
    """Products the user marked "not interested" (cached per list ETag)."""
    return _per_list(recommender_id, {"excluded": shopper_controls.exclusions})["excluded"]


HIDDEN_PER_PAGE = 24


def hidden_latest_first(recommender_id: str, shown_again: dict[str, float] | None = None) -> Paginator:
    """Pages of ``(product, when hidden)`` the user marked "not interested", the latest first (then
    by id, so pages never overlap): the "Hidden products" page and ``GET /api/hidden/`` list them.

    Read from MongoDB, not the per-list cache: the dates are not cached, and the list is seldom
    asked for. ``shown_again`` ({product: when}) are undos the caller knows were sent but the
    worker may not have applied yet: a product hidden before its undo is left out.
    """
    undone = shown_again or {}
    since = shopper_controls.hidden_since(recommender_id)
    kept = [(p, t) for p, t in since.items() if not t < undone.get(p, 0.0)]
    return Paginator(sorted(kept, key=lambda e: (-e[1], e[0])), HIDDEN_PER_PAGE)


def rated_and_excluded(recommender_id: str) -> tuple[dict[str, float], set[str]]:
    """:func:`history` and :func:`excluded` in one read: the pages that show neither what the
    user rated nor what they are not interested in (onboarding, a product page) need both."""
    both = _per_list(recommender_id, {"history": rating_history.user_ratings,
                                      "excluded": shopper_controls.exclusions})
    return both["history"], both["excluded"]


def forget(recommender_id: str) -> None:
    """The account is being deleted: drop what is kept of its current list (older views expire)."""
    tag = list_state.current(recommender_id, cache_generation())
    tags = {tag, etag(stored_lists.get_recommendations(recommender_id))} - {None, NO_LIST_ETAG}
    cache.delete_many([_view_key(kind, recommender_id, t) for t in tags for kind in ("view", "history", "excluded")])
    list_state.drop(recommender_id)


def _personal(recommender_id: str, doc: dict) -> dict[str, Any]:
    # a list written before a "not interested" (by the batch job, say) never shows the product
    items = without_excluded(doc["items"], shopper_controls.exclusions(recommender_id), get_settings().top_n)
    names = summaries([i["product_id"] for i in items] + [i.get("because") for i in items])
    out = [{
        **card(i["product_id"], names.get(i["product_id"])),
        "score": round(float(i.get("score", 0.0)), 4),
        "because": i.get("because"),
        "because_title": title(names, i.get("because")),
    } for i in items]
    source = "popular" if doc.get("model_version") == "popular" else "personal"
    return {"user_id": recommender_id, "source": source, "model_version": doc.get("model_version"),
            "updated_at": doc.get("updated_at"), "source_event_id": doc.get("source_event_id"),
            "n_rated": len(rating_history.user_ratings(recommender_id)), "items": out, "etag": etag(doc)}


def _popular(recommender_id: str) -> dict[str, Any]:
    """Not kept as a whole: it depends on the user's history and exclusions, which have no version
    while the user has no list (two ``_id`` reads), and on the popular list (kept per version)."""
    history = rating_history.user_ratings(recommender_id)
    top_n = get_settings().top_n
    unrated = [p for p in popular_list("all", "popular") if p["product_id"] not in history]
    popular = without_excluded(unrated, shopper_controls.exclusions(recommender_id), top_n)
    names = summaries([p["product_id"] for p in popular])
    out = [{**card(p["product_id"], names.get(p["product_id"])),
            "score": round(float(p.get("score", 0.0)), 4), "because": None, "because_title": None}
           for p in popular]
    shown = {"user_id": recommender_id, "source": "popular", "model_version": None, "updated_at": None,
             "source_event_id": None, "n_rated": len(history), "items": out}
    return {**shown, "etag": _content_etag(shown)}


def popular_list(category: str, kind: str, version: str | None = None) -> list[dict[str, Any]]:
    """One popular or trending list ({product_id, score}), kept per announced version of the
    lists (core.popular bumps it after each rewrite): every anonymous home page shows several."""
    version = version or list_state.popular_version()  # counted per database, so named with it
    named = f"{get_settings().mongo_db}|{version}|{kind}|{category}"
    key = "popular:" + hashlib.sha256(named.encode()).hexdigest()[:32]
    items = cache.get(key)
    if items is None:
        items = stored_lists.get_popular(category, kind)
        cache.set(key, items, TTL_S)
    return items


def fallback_lists(limit: int = 8, categories: int = 6, exclude: set[str] | frozenset = frozenset(),
                   kinds: tuple[str, ...] = ("trending", "popular")) -> list[dict[str, Any]]:
    """Popular and trending products overall and per category as product cards, for anonymous
    visitors (home page), new users and the onboarding step; ``exclude`` leaves out what the
    user already rated. Empty lists (nothing trending yet) are left out."""
    lists, version = [], list_state.popular_version()
    for cat in [{"name": mongo.ALL}] + (catalog_categories()[:categories] if categories else []):
        for kind in kinds:
            ids = [i["product_id"] for i in popular_list(cat["name"], kind, version)
                   if i["product_id"] not in exclude]
            items = cards(ids[: limit * 2])[:limit]
            if items:
                lists.append({"category": cat["name"], "kind": kind, "items": items})
    return lists


def onboarding_lists(per_category: int = 6, categories: int = 6,
                     exclude: set[str] | frozenset = frozenset()) -> list[dict[str, Any]]:
    """Popular products per category for a new user to rate (overall when there are no
    categories), leaving out what they already rated."""
    lists = fallback_lists(limit=per_category, categories=categories, exclude=exclude, kinds=("popular",))
    per_cat = [l for l in lists if l["category"] != mongo.ALL]
    return per_cat or lists
