"""A product the shopper marked "not interested" is not offered to them on the pages that pick
products for them: the onboarding picker, the home page's popular and trending strips (the same
for every visitor otherwise) and a product page's "Frequently bought together"
(its similar items and the lists were already filtered; test_shopper_controls.py); taken back
("interested again"), it is offered on them again.

Real site (Django's test client), the synthetic catalog of realtime_support in FerretDB, Redis; the
exclusion is stored the way the worker stores a "not interested" event (core.shopper_controls).
"""
from __future__ import annotations

import re
import time

import pytest

from realtime_support import rt_catalog  # noqa: F401  (fixture)
from tests.site_catalog import ids_in

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _offered(client) -> set[str]:
    page = client.get("/welcome/")
    assert page.status_code == 200
    return set(re.findall(r'data-product="([^"]+)"', page.content.decode()))


def test_a_hidden_product_is_not_offered_to_its_shopper(rt_catalog, site_cache, client, make_user):
    from accounts.models import recommender_id
    from core import catalog_revision, mongo, popular, shopper_controls

    products = rt_catalog.products
    # products[1] is the most reviewed in its category: the picker offers it to everyone else
    shown, hidden, kept = products[0], products[1], products[4]
    rt_catalog.db[mongo.PRODUCTS].update_one({"_id": shown}, {"$set": {"also_buy": [hidden, kept]}})
    catalog_revision.bump()  # nothing cached of these products before the change is read
    popular.refresh_popular()

    # Another shopper first: what they see is cached, and must not be served to the one who hid it.
    client.force_login(make_user())
    assert ids_in(client.get(f"/p/{shown}/").content.decode(), "fbt") == [hidden, kept]
    assert {hidden, kept} <= _offered(client)
    assert hidden in ids_in(client.get("/").content.decode(), "home-popular")

    user = make_user()
    shopper_controls.change_exclusion(recommender_id(user), hidden, hide=True, ts=time.time())
    client.force_login(user)
    assert ids_in(client.get(f"/p/{shown}/").content.decode(), "fbt") == [kept]
    offered = _offered(client)
    assert hidden not in offered and kept in offered
    home = ids_in(client.get("/").content.decode(), "home-popular")
    assert hidden not in home and kept in home, home

    # Taken back ("interested again", stored as the worker stores it): offered everywhere again.
    shopper_controls.change_exclusion(recommender_id(user), hidden, hide=False, ts=time.time())
    assert ids_in(client.get(f"/p/{shown}/").content.decode(), "fbt") == [hidden, kept]
    assert hidden in _offered(client)
    assert hidden in ids_in(client.get("/").content.decode(), "home-popular")


def test_a_product_just_shown_again_is_not_shown_hidden_before_the_worker_applies_it(rt_catalog, site_cache, client,
                                                                                      make_user):
    """Right after "Show it to me again", the page it returns to read the exclusions before the
    worker applied the undo: the product still hidden there, with its button, under the message
    that it would be recommended again, and a second click sent another event."""
    from accounts.models import recommender_id
    from core import shopper_controls

    user, pid = make_user(), rt_catalog.products[2]
    client.force_login(user)
    uid = recommender_id(user)
    shopper_controls.change_exclusion(uid, pid, hide=True, ts=time.time() - 5, db=rt_catalog.db)
    assert f'data-product="{pid}"' in client.get("/hidden/").content.decode()
    assert 'id="hidden-notice"' in client.get(f"/p/{pid}/").content.decode()

    undone = client.post(f"/p/{pid}/interested-again/", {"next": "hidden"})
    assert undone.status_code == 302 and undone["Location"] == "/hidden/"
    assert pid in shopper_controls.exclusions(uid, db=rt_catalog.db)  # no worker here: still stored hidden
    assert f'data-product="{pid}"' not in client.get("/hidden/").content.decode()
    assert 'id="hidden-notice"' not in client.get(f"/p/{pid}/").content.decode()

    # hidden again (a newer "not interested"): shown hidden again at once
    assert client.post(f"/p/{pid}/not-interested/", {"next": "product"}).status_code == 302
    shopper_controls.change_exclusion(uid, pid, hide=True, ts=time.time(), db=rt_catalog.db)
    assert f'data-product="{pid}"' in client.get("/hidden/").content.decode()


def _api_hidden(client, page: str | None = None) -> dict:
    response = client.get("/api/hidden/", {"page": page} if page is not None else {})
    assert response.status_code == 200, response.content
    return response.json()


def test_the_api_lists_the_hidden_products_like_the_page_latest_first_by_pages(rt_catalog, site_cache, client,
                                                                               make_user):
    """GET /api/hidden/: the "Hidden products" page's list for an app, to offer the undo: the same
    products in the same order, with the card's title and when each was hidden, 24 a page."""
    from datetime import datetime

    from accounts.models import recommender_id
    from core import shopper_controls

    user = make_user()
    client.force_login(user)
    assert _api_hidden(client) == {"total": 0, "page": 1, "next": None, "items": []}

    uid, start = recommender_id(user), float(int(time.time()) - 1000)
    products = rt_catalog.products[:26]
    for k, pid in enumerate(products):  # products[25] hidden last
        shopper_controls.change_exclusion(uid, pid, hide=True, ts=start + k, db=rt_catalog.db)
    latest_first = products[::-1]

    first = _api_hidden(client)
    assert (first["total"], first["page"], first["next"]) == (26, 1, 2)
    assert [i["product_id"] for i in first["items"]] == latest_first[:24]
    assert [i["product_id"] for i in first["items"]] == ids_in(client.get("/hidden/").content.decode(), "hidden")
    newest = first["items"][0]
    assert newest["product_id"] == products[25] and newest["title"] == "Synthetic product 25"  # the card's
    assert datetime.fromisoformat(newest["hidden_at"]).timestamp() == start + 25
    second = _api_hidden(client, "2")
    assert (second["total"], second["page"], second["next"]) == (26, 2, None)
    assert [i["product_id"] for i in second["items"]] == latest_first[24:]
    assert [i["product_id"] for i in second["items"]] == ids_in(client.get("/hidden/?page=2").content.decode(),
                                                                "hidden")
    assert _api_hidden(client, "3") == {"total": 26, "page": 3, "next": None, "items": []}  # past the last: empty
    for bad in ("0", "-1", "x", "100001"):  # refused as the page refuses them
        assert client.get("/api/hidden/", {"page": bad}).status_code == 400, bad
        assert client.get("/hidden/", {"page": bad}).status_code == 400, bad

    # Taken back (stored as the worker stores it): not listed any more.
    shopper_controls.change_exclusion(uid, products[25], hide=False, ts=time.time(), db=rt_catalog.db)
    assert [i["product_id"] for i in _api_hidden(client)["items"]] == latest_first[1:25]


def test_the_api_s_hidden_products_need_a_login(site_cache, client):
    assert client.get("/api/hidden/").status_code in (401, 403)  # like the other endpoints


def test_the_openapi_schema_describes_the_hidden_products_list(site_cache, client):
    import json

    from drf_spectacular.validation import validate_schema

    schema = json.loads(client.get("/api/schema/?format=json").content)
    validate_schema(schema)
    listed = schema["paths"]["/api/hidden/"]["get"]
    assert [p["name"] for p in listed["parameters"]] == ["page"]
    # 401: a sign-in is needed; 429, 500, 503: any endpoint (recsite.api_errors.ANY_ENDPOINT)
    assert set(listed["responses"]) == {"200", "400", "401", "429", "500", "503"}
    items = schema["components"]["schemas"]["HiddenOut"]["properties"]["items"]["items"]["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][items]["properties"]) == {"product_id", "title", "hidden_at"}
