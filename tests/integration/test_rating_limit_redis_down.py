"""The per-user rating limit (``RATING_RATE``) holds while Redis is down (issue 11, item 3's
leftover for ratings).

It counted in the Django cache, which ignores Redis errors, so with Redis down nothing was counted
and the limit was gone: one account could flood ratings (each a Kafka event, a fold-in and four
MongoDB writes) exactly when the site is degraded. Like the credential checks
(``accounts.throttle``), it must not fail open: it falls back to a bounded count in the process.
Real site (Django test client), real Kafka and FerretDB; Redis is "down" by pointing every cache
at a port where nothing listens (the shared Redis is never stopped).
"""
from __future__ import annotations

import json
import socket
import time

import pytest
from django.test.utils import override_settings

from realtime_support import rt_catalog  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _dead_redis() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    return f"redis://127.0.0.1:{port}/0"


def test_the_rating_limit_holds_with_redis_down(rt_catalog, site_cache, make_user, client):
    from django.conf import settings

    from shop.models import RatingSubmission

    user = make_user()
    client.force_login(user)
    products = rt_catalog.products
    dead = _dead_redis()
    caches = {name: {**conf, "LOCATION": dead} for name, conf in settings.CACHES.items()}
    codes, took = [], []
    with override_settings(CACHES=caches, RATING_RATE="4/min"):
        for i in range(4):
            start = time.monotonic()
            codes.append(client.post(f"/p/{products[i]}/rate/", {"rating": "5"}).status_code)
            codes.append(client.post("/api/ratings/", json.dumps({"product_id": products[i], "rating": 4}),
                                     content_type="application/json").status_code)
            took.append(time.monotonic() - start)
    assert codes[:4] == [302, 202] * 2, codes
    assert codes[4:] == [429] * 4, f"the rating limit failed open with Redis down: {codes}"
    assert RatingSubmission.objects.filter(user=user).count() == 4
    # liveness, not speed: a dead Redis must not cost each rating a connection timeout
    assert max(took) < 5, [round(t, 2) for t in took]

    # Redis back: ratings count there again (another account is not limited by this one)
    other = make_user()
    client.force_login(other)
    with override_settings(RATING_RATE="4/min"):
        assert client.post("/api/ratings/", json.dumps({"product_id": products[5], "rating": 3}),
                           content_type="application/json").status_code == 202
