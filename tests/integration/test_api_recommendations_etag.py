"""``GET /api/recommendations/``'s ETag for a user without a list of their own (the popular fallback).

The fallback's tag was a fixed ``"none"``, so a client polling with it got 304 for ever, even after
the popular list changed; and only exact strong tags matched If-None-Match (RFC 9110 compares
weakly and allows lists and ``*``). Real site (Django test client), MongoDB and Redis, on the
synthetic catalog of realtime_support (its own database, so its popular list is this module's).
"""
from __future__ import annotations

import pytest

from core import list_state, stored_lists
from realtime_support import rt_catalog  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _popular(products: list[str]) -> None:
    """Celery's refresh: the overall popular list rewritten, and its new version announced."""
    stored_lists.write_popular("all", "popular", [{"product_id": p, "score": float(100 - i)}
                                                  for i, p in enumerate(products)])
    list_state.announce_popular()


@pytest.fixture
def fresh_shopper(rt_catalog, site_cache, make_user, client):
    """A signed-in shopper who has rated nothing (no list of their own) and the catalog's products."""
    client.force_login(make_user())
    return client, rt_catalog.products


def test_the_fallback_lists_etag_changes_with_the_popular_list(fresh_shopper):
    client, products = fresh_shopper
    _popular(products[:10])
    first = client.get("/api/recommendations/")
    assert first.status_code == 200 and first.json()["source"] == "popular"
    assert [i["product_id"] for i in first.json()["items"]][:3] == products[:3]
    old = first["ETag"]
    assert client.get("/api/recommendations/", HTTP_IF_NONE_MATCH=old).status_code == 304

    _popular(products[20:30])  # the popular list changed: the poll must see it
    changed = client.get("/api/recommendations/", HTTP_IF_NONE_MATCH=old)
    assert changed.status_code == 200, "a client polling the fallback list never saw the new one"
    assert changed["ETag"] != old
    assert [i["product_id"] for i in changed.json()["items"]][:3] == products[20:23]
    assert client.get("/api/recommendations/", HTTP_IF_NONE_MATCH=changed["ETag"]).status_code == 304


def test_if_none_match_compares_weakly_and_takes_lists_and_any(fresh_shopper):
    client, products = fresh_shopper
    _popular(products[:10])
    etag = client.get("/api/recommendations/")["ETag"]
    for header in (f"W/{etag}", f'"something-else", {etag}', f'W/"other", W/{etag}', "*"):
        answer = client.get("/api/recommendations/", HTTP_IF_NONE_MATCH=header)
        assert answer.status_code == 304, header
        assert answer["ETag"] == etag and answer["Cache-Control"] == "private, no-cache"
    assert client.get("/api/recommendations/", HTTP_IF_NONE_MATCH='W/"other"').status_code == 200
