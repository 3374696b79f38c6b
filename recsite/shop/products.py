"""Catalog reads for the pages, cached in the shared cache (Redis).

FerretDB v1 answers only ``_id`` lookups quickly, one round trip each (1-2 ms idle, several ms
while Spark jobs share the CPU). A recommendations list names up to 40 products (each item and the
product it is recommended "because" of), and a product page 10 more, so without a cache every
page paid for dozens of round trips. The catalog changes only when the batch pipeline reloads it
and similar items when a model is published, so entries live ``CATALOG_CACHE_SECONDS`` (default
five minutes) and the product page key carries the published model version (``CURRENT``), so a
new model's similar items show at once. Lists of summaries come back in one ``get_many``.
A product page's key (and its rendered fragment's) also carries the product's reviews revision,
which a deleted account bumps, so a deleted reviewer's reviews are gone from the next view.
Everything else that shows a product's title or counts (summaries, catalog and search pages, a
user's list, a page's similar items), and the categories the catalog pages list, is keyed by
:func:`catalog_generation`, which also changes when a deletion rewrote product documents (their
counts, a title quoting the deleted reviewer), whoever ran the erasure: the site, the worker or
Celery's sweep (``core.catalog_revision``).
"""
from __future__ import annotations

import math
import uuid
from typing import Any, Iterable

from django.core.cache import cache

from core import catalog, list_state, stored_lists
from core import catalog_revision as catalog_revision_store
from core.env import env_int

TTL_S = env_int("CATALOG_CACHE_SECONDS", 300)
SIMILAR_SHOWN = 8
MAX_ALSO_BOUGHT_READ = 40  # also_buy lists run to 100 ids; read at most this many by _id


def cache_generation() -> str:
    """The published model version: keys built with it are never read again after a new model
    (core.list_state.generation, the same generation the workers announce lists under)."""
    return list_state.generation()


def published_version() -> str | None:
    """The published model version as every cached page knows it (:func:`cache_generation`, which
    reads ``CURRENT`` at most once a second per process), None while there is none."""
    generation = cache_generation()
    return None if generation == list_state.NO_MODEL else generation


# Outlives every page cached before a bump (TTL_S), so a lapsed revision never revives one: as the
# catalog's revision, from the same CATALOG_CACHE_SECONDS.
REVIEWS_REVISION_KEEP_S = catalog_revision_store.KEEP_S


def catalog_revision() -> str:
    """The catalog's revision (:mod:`core.catalog_revision`): changed by an account's erasure that
    rewrote product documents, and at the end of every load."""
    return catalog_revision_store.current()


def catalog_generation() -> str:
    """What keys of cached product titles and counts carry: the published model version
    (:func:`cache_generation`) and the catalog's revision (:func:`catalog_revision`)."""
    return f"{cache_generation()}.{catalog_revision()}"


def categories() -> list[dict[str, Any]]:
    """The catalog's categories (:func:`core.catalog.categories`), kept per :func:`catalog_generation`
    as the catalog pages are: the home page and every category page list them, and a page served
    from the cache must read no MongoDB. A load changes the catalog's revision when it ends
    (spark_jobs.mongo_load.erase_accounts_deleted_since), so its categories show at once, whether
    or not its model is published."""
    key = f"catalog:categories:{catalog_generation()}"
    found = cache.get(key)
    if found is None:
        found = catalog.categories()
        cache.set(key, found, TTL_S)
    return found


def summaries(product_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Title, category, rating and review count of each known product, by id (unknown ids are left out)."""
    ids = list(dict.fromkeys(str(p) for p in product_ids if p))
    revision = catalog_revision()
    keys = {f"product:summary:{revision}:{pid}": pid for pid in ids}
    out = {keys[k]: v for k, v in cache.get_many(list(keys)).items()}
    missing = [pid for pid in ids if pid not in out]
    if missing:
        found = catalog.get_products(missing)
        cache.set_many({f"product:summary:{revision}:{pid}": doc for pid, doc in found.items()}, TTL_S)
        out.update(found)
    return out


def headline(doc: dict[str, Any]) -> str:
    """What a shopper reads as the product's name: its title, else its category and what a review
    said about it. Never the bare id: "B0002E1G5C" tells a person nothing."""
    name = str(doc.get("title") or "").strip()
    if name:
        return name
    category = str(doc.get("category") or "").strip()
    summary = str(doc.get("sample_summary") or "").strip()
    if summary:
        return f"{category or 'Product'}: “{summary}”"
    return f"A {category} product" if category else "A product without a description"


def title(products: dict[str, dict], product_id: str | None) -> str | None:
    """The headline of ``product_id`` among ``products`` (summaries), None for no product."""
    if not product_id:
        return None
    return headline(products.get(product_id, {}))


def image_url(doc: dict[str, Any]) -> str | None:
    """The product's first http(s) image URL, or None (the page then shows the local placeholder).

    The load job keeps a metadata image list as space-separated text; a list is accepted too.
    Only http(s) URLs: anything else ("javascript:", data URLs) is not an image we show.
    """
    raw = doc.get("image")
    for url in raw if isinstance(raw, list) else str(raw or "").split():
        url = str(url).strip()
        if url.startswith(("https://", "http://")) and len(url) <= 2000:
            return url
    return None


def stars(avg: float | int | None) -> str:
    """Five stars, rounded to the nearest whole star (half up): "★★★★☆"."""
    full = max(0, min(5, math.floor(float(avg or 0) + 0.5)))
    return "★" * full + "☆" * (5 - full)


def card(product_id: str, doc: dict[str, Any] | None) -> dict[str, Any]:
    """Everything a product card shows (shop/_card.html), from a product summary."""
    doc = doc or {}
    price = doc.get("price")
    return {
        "pid": product_id, "product_id": product_id, "title": headline(doc),
        "brand": str(doc.get("brand") or "").strip(),
        "price": float(price) if isinstance(price, (int, float)) and price > 0 else None,
        "image": image_url(doc), "category": str(doc.get("category") or "").strip(),
        "avg_rating": round(float(doc.get("avg_rating") or 0.0), 2), "n_reviews": int(doc.get("n_reviews") or 0),
        "stars": stars(doc.get("avg_rating")),
    }


def category_path(doc: dict[str, Any]) -> list[str]:
    """The product's category path as the load stored it (``spark_jobs.load.category_path`` makes
    it one flat list without repeats or markup, from any of the three formats), else its file's
    category. Not cleaned again here: one place decides what a path is."""
    return [str(c) for c in doc.get("categories") or []] or ([doc["category"]] if doc.get("category") else [])


def cards(product_ids: list[str], known_only: bool = True) -> list[dict[str, Any]]:
    """Cards for products in the given order, read through the summary cache.

    ``known_only`` drops ids the catalog does not have (e.g. "also bought" items from the
    metadata that were never loaded), so no card leads to a 404.
    """
    found = summaries(product_ids)
    return [card(p, found.get(p)) for p in dict.fromkeys(product_ids) if p and (p in found or not known_only)]


def _reviews_revision_key(product_id: str) -> str:
    return f"product:reviews-rev:{product_id}"


def reviews_revision(product_id: str) -> str:
    """The product's reviews revision: part of the keys of its cached page data and rendered
    reviews, so changing it hides both at once ("0" until a deletion first changes it)."""
    return str(cache.get(_reviews_revision_key(product_id)) or "0")


def forget_reviews(product_ids: Iterable[str]) -> None:
    """Their reviews changed (an account was deleted): no page of these products cached so far is
    shown again. A new random revision each time (an increment would fail on a missing key), set
    after MongoDB changed, so a page cached under it is read from the changed reviews."""
    revisions = {_reviews_revision_key(str(p)): uuid.uuid4().hex[:12] for p in product_ids if p}
    if revisions:
        cache.set_many(revisions, REVIEWS_REVISION_KEEP_S)


def product_page(product_id: str, page: int) -> dict[str, Any] | None:
    """Everything a product page shows that is the same for every visitor, or None for a product
    the catalog does not have or a page past its last page of reviews.

    ``reviews_revision`` is the revision it was read under; the page's rendered reviews are cached
    under the same one (shop/product.html). Only pages that exist are cached: every page number
    (up to 1,000) of every product was, each a key anyone could make in the Redis that also holds
    Celery's broker and the trending state, which must never be evicted.
    """
    revision = reviews_revision(product_id)
    key = f"product:page:v4:{catalog_generation()}:{product_id}:{revision}:{page}"
    data = cache.get(key)
    if data is not None:
        return data
    doc = catalog.get_product(product_id)
    if not doc:
        return None
    reviews, pages = catalog.product_reviews(product_id, page)
    # a page past the last (no such page document: pages 0) is not stored; page 1 of no reviews is,
    # and so is a last page an account deletion emptied (its pages, not its reviews, tell)
    if page > max(1, pages):
        return None
    similar = stored_lists.get_similar_items(product_id)[:SIMILAR_SHOWN]
    scores = {s["product_id"]: s.get("score") for s in similar}
    also_bought = [str(p) for p in (doc.get("also_buy") or []) if p and str(p) != product_id][:MAX_ALSO_BOUGHT_READ]
    data = {
        "product": doc, "card": card(product_id, doc), "category_path": category_path(doc),
        "reviews": reviews, "pages": pages, "reviews_revision": revision,
        "similar": [{**c, "score": scores.get(c["pid"])} for c in cards(list(scores))],
        # from the metadata's also_buy, only what the catalog has (the rest would be dead links)
        "bought_together": cards(also_bought)[:SIMILAR_SHOWN],
    }
    cache.set(key, data, TTL_S)
    return data
