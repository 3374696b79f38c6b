"""Anonymous requests cannot fill the site's cache with pages that do not exist, and a page
served from the cache reads nothing from MongoDB.

Every review page number up to 1,000 of every product, every catalog page up to 100,000 and every
made-up category name was rendered and cached (five minutes each) as if it were a page: keys
anyone could make by the thousand in the Redis that also holds Celery's broker and the trending
state, which must never evict. They are 404s now, and nothing of them is cached.

Real site (Django's test client), the synthetic catalog of realtime_support in FerretDB (300
products, 100 in each of three categories), the real Redis under this session's cache prefix.
"""
from __future__ import annotations

import pytest

from realtime_support import CATEGORIES, publish_model, reset_core_caches, rt_catalog  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _cache_keys(prefix: str) -> set[bytes]:
    from django_redis import get_redis_connection

    pattern = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix) + ":*"
    return set(get_redis_connection("default").scan_iter(match=pattern, count=1000))


def test_pages_that_do_not_exist_are_404_and_not_cached(rt_catalog, site_cache, client):
    from core import mongo

    with_reviews, without = rt_catalog.products[0], rt_catalog.products[5]
    review = {"rating": 5.0, "summary": "Fine", "review_text": "Works.", "reviewer_name": "A", "verified": True}
    mongo.bulk_upsert(mongo.PRODUCT_REVIEWS, [{"_id": f"{with_reviews}:{n}", "items": [review], "pages": 2}
                                              for n in (1, 2)], db=rt_catalog.db)
    real = [f"/p/{with_reviews}/", f"/p/{with_reviews}/?page=2", f"/p/{without}/", "/", "/?page=13",
            "/?category=Drums", "/?category=Drums&page=5"]
    for url in real:  # what exists answers (and is cached, as before)
        assert client.get(url).status_code == 200, url
    assert "No reviews yet." in client.get(f"/p/{without}/").content.decode()

    before = _cache_keys(site_cache)
    made_up = [f"/p/{with_reviews}/?page=3", f"/p/{with_reviews}/?page=1000", f"/p/{without}/?page=2",
               "/?page=14", "/?page=100000", "/?category=Drums&page=6", "/?category=Made-up",
               "/?category=Made-up&page=2", "/?q=synthetic&category=Made-up"]
    for url in made_up:
        assert client.get(url).status_code == 404, url
    assert _cache_keys(site_cache) - before == set()


def test_a_last_page_emptied_by_an_account_deletion_still_answers(rt_catalog, site_cache, client):
    """A deletion rewrites a product's review pages without reflowing them: a last page that held
    only the deleted shopper's review stays, empty, and the page before still links to it. It
    answered 404 (a page past the last was told by its having no reviews, not by ``pages``)."""
    from core import mongo

    product = rt_catalog.products[7]
    review = {"rating": 4.0, "summary": "Good", "review_text": "Works.", "reviewer_name": "B", "verified": True}
    mongo.bulk_upsert(mongo.PRODUCT_REVIEWS, [{"_id": f"{product}:1", "items": [review], "pages": 2},
                                              {"_id": f"{product}:2", "items": [], "pages": 2}], db=rt_catalog.db)
    assert client.get(f"/p/{product}/?page=2").status_code == 200
    assert client.get(f"/p/{product}/?page=3").status_code == 404


@pytest.fixture
def own_models(rt_catalog, tmp_path):
    """This test's own artifacts folder, for the models it publishes (the session's stays as it was)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    reset_core_caches()
    try:
        yield
    finally:
        mp.undo()
        reset_core_caches()


def _publish(rt_catalog, seed: int) -> str:
    version = publish_model(rt_catalog.in_model, seed=seed)
    reset_core_caches()  # the site sees the new CURRENT now, not within the second it may take
    return version


def test_a_cached_home_or_category_page_reads_no_mongodb_and_a_new_load_shows(rt_catalog, site_cache, client,
                                                                              mongo_commands, own_models):
    """The categories every catalog page lists (its filter) were read from MongoDB on every hit,
    the page itself cached or not. They are kept under the catalog's generation now, as the page."""
    from core import mongo

    _publish(rt_catalog, seed=1)
    for url in ("/", "/?category=Drums", "/?category=Drums&page=2"):
        assert client.get(url).status_code == 200, url  # the first hit reads and keeps
        warm = []
        assert mongo_commands.watch(lambda: warm.append(client.get(url))) == [], url
        assert warm[0].status_code == 200 and 'value="Drums"' in warm[0].content.decode(), url

    # a new load writes its categories and publishes its model: every page lists them at once
    items = [{"name": c, "n_products": 100} for c in CATEGORIES] + [{"name": "Cellos", "n_products": 0}]
    mongo.bulk_upsert(mongo.CATALOG_INDEX, [{"_id": "categories", "items": items}], db=rt_catalog.db)
    _publish(rt_catalog, seed=2)
    for url in ("/", "/?category=Drums"):
        assert 'value="Cellos"' in client.get(url).content.decode(), url
    assert client.get("/?category=Cellos").status_code == 200
