"""Catalog reads for the pages, cached in the shared cache (Redis).

FerretDB v1 answers only ``_id`` lookups quickly, one round trip each (1-2 ms idle, several ms
while Spark jobs share the CPU). A recommendations list names up to 40 products (each item and the
product it is recommended "because" of), and a product page 10 more, so without a cache every
page paid for dozens of round trips. The catalog changes only when the batch pipeline reloads it
and similar items when a model is published, so entries live ``CATALOG_CACHE_SECONDS`` (default
five minutes) and the product page key carries the cache generation that Celery bumps after a new
model. Lists of summaries come back in one ``get_many``.
"""
from __future__ import annotations

import os
import time
from typing import Any

import redis
from django.core.cache import cache

from core import list_state, mongo

TTL_S = int(os.environ.get("CATALOG_CACHE_SECONDS", "300"))
SIMILAR_SHOWN = 8


_generation = {"value": 0, "read_at": -1e9}
GENERATION_CHECK_S = 5.0


def cache_generation() -> int:
    """Celery bumps this after a new model; keys built with it are then simply never read again.

    Read from Redis at most every few seconds per process: it changes once per published model,
    not worth a round trip on every page.
    """
    now = time.monotonic()
    if now - _generation["read_at"] >= GENERATION_CHECK_S:
        try:  # the Redis Celery writes it to (REDIS_URL), which may not be the cache's
            _generation["value"] = list_state.generation()
        except redis.RedisError:  # no Redis: the cache is off anyway (IGNORE_EXCEPTIONS)
            _generation["value"] = 0
        _generation["read_at"] = now
    return _generation["value"]


def summaries(product_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Title, category, rating and review count of each known product, by id (unknown ids are left out)."""
    ids = list(dict.fromkeys(str(p) for p in product_ids if p))
    keys = {f"product:summary:{pid}": pid for pid in ids}
    out = {keys[k]: v for k, v in cache.get_many(list(keys)).items()}
    missing = [pid for pid in ids if pid not in out]
    if missing:
        found = mongo.get_products(missing)
        cache.set_many({f"product:summary:{pid}": doc for pid, doc in found.items()}, TTL_S)
        out.update(found)
    return out


def title(products: dict[str, dict], product_id: str | None) -> str | None:
    """A product's title, or its id when the data has no title (the 2014 review files have none)."""
    if not product_id:
        return None
    return products.get(product_id, {}).get("title") or product_id


def product_page(product_id: str, page: int) -> dict[str, Any] | None:
    """Everything a product page shows that is the same for every visitor, or None if unknown."""
    key = f"product:page:{cache_generation()}:{product_id}:{page}"
    data = cache.get(key)
    if data is not None:
        return data
    doc = mongo.get_product(product_id)
    if not doc:
        return None
    reviews, pages = mongo.product_reviews(product_id, page)
    similar = mongo.get_similar_items(product_id)[:SIMILAR_SHOWN]
    names = summaries([s["product_id"] for s in similar])
    data = {
        "product": doc, "reviews": reviews, "pages": pages,
        "similar": [{**s, "title": title(names, s["product_id"])} for s in similar],
    }
    cache.set(key, data, TTL_S)
    return data
