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
    shopper_controls.add_exclusion(recommender_id(user), hidden, time.time())
    client.force_login(user)
    assert ids_in(client.get(f"/p/{shown}/").content.decode(), "fbt") == [kept]
    offered = _offered(client)
    assert hidden not in offered and kept in offered
    home = ids_in(client.get("/").content.decode(), "home-popular")
    assert hidden not in home and kept in home, home

    # Taken back ("interested again", stored as the worker stores it): offered everywhere again.
    shopper_controls.remove_exclusion(recommender_id(user), hidden, time.time())
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
    shopper_controls.add_exclusion(uid, pid, time.time() - 5, db=rt_catalog.db)
    assert f'data-product="{pid}"' in client.get("/hidden/").content.decode()
    assert 'id="hidden-notice"' in client.get(f"/p/{pid}/").content.decode()

    undone = client.post(f"/p/{pid}/interested-again/", {"next": "hidden"})
    assert undone.status_code == 302 and undone["Location"] == "/hidden/"
    assert pid in shopper_controls.exclusions(uid, db=rt_catalog.db)  # no worker here: still stored hidden
    assert f'data-product="{pid}"' not in client.get("/hidden/").content.decode()
    assert 'id="hidden-notice"' not in client.get(f"/p/{pid}/").content.decode()

    # hidden again (a newer "not interested"): shown hidden again at once
    assert client.post(f"/p/{pid}/not-interested/", {"next": "product"}).status_code == 302
    shopper_controls.add_exclusion(uid, pid, time.time(), db=rt_catalog.db)
    assert f'data-product="{pid}"' in client.get("/hidden/").content.decode()
