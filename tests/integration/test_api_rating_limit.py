"""``RATING_RATE`` over the API counts ratings, not requests.

It was a DRF throttle on the views, so every request was charged: 26 refused requests (400, 409,
415) and 4 accepted ratings used up a limit of 30, and a client resending its 29th rating with the
same Idempotency-Key after a timeout (as README tells it to) got 429 instead of the replayed 202,
so it could not confirm the rating. Real site (Django test client), real Kafka and Redis (the
synthetic catalog of realtime_support): the ratings go to the session's topic, read back by the probe.
"""
from __future__ import annotations

import pytest
from django.test.utils import override_settings

from realtime_support import rt_catalog  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
LIMIT = 30


def _post(client, body, key: str | None = None, **extra):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post("/api/ratings/", body, content_type="application/json", **headers, **extra)


def _refused_requests(client, products: list[str], used_key: str) -> list[int]:
    """Thirty requests that publish nothing, of every kind a client can get wrong, and outages."""
    from core import kafka_io

    codes = []
    for i in range(5):
        codes.append(_post(client, {"product_id": products[i], "rating": 9}).status_code)  # out of range
        codes.append(_post(client, {"product_id": "no-such-product-1", "rating": 4}).status_code)  # unknown
        codes.append(_post(client, {"product_id": products[i], "rating": 1}, key=used_key).status_code)  # 409
        codes.append(client.post("/api/ratings/", f"product_id={products[i]}&rating=4",
                                 content_type="application/x-www-form-urlencoded").status_code)  # 415
        codes.append(_post(client, [products[i], 4]).status_code)  # not a JSON object
    breaker_cooldown = kafka_io.BREAKER.cooldown_s
    kafka_io.BREAKER.cooldown_s = 3600.0  # Kafka failed moments ago: the site answers 503 at once
    kafka_io.BREAKER.failure()
    try:
        codes += [_post(client, {"product_id": products[i], "rating": 4}).status_code for i in range(5)]
    finally:
        kafka_io.BREAKER.cooldown_s = breaker_cooldown
        kafka_io.BREAKER.success()
    return codes


@pytest.fixture
def shopper(rt_catalog, site_cache, make_user, client):
    """A signed-in shopper whose ratings are limited to ``LIMIT`` a minute, and products to rate."""
    client.force_login(make_user())
    with override_settings(RATING_RATE=f"{LIMIT}/min"):
        yield client, rt_catalog.products[:LIMIT + 1]


def test_refused_requests_do_not_use_up_the_limit(shopper, ratings_probe):
    client, products = shopper
    mark = ratings_probe.mark()
    first = _post(client, {"product_id": products[0], "rating": 5}, key="limit-key-00")
    assert first.status_code == 202, first.content[:300]

    codes = _refused_requests(client, products, used_key="limit-key-00")
    assert len(codes) == LIMIT and set(codes) == {400, 409, 415, 503}, codes
    assert ratings_probe.count_since(mark) == 1  # they published nothing

    accepted = [_post(client, {"product_id": p, "rating": 4}).status_code for p in products[1:LIMIT]]
    assert accepted == [202] * (LIMIT - 1), accepted  # with the first: the limit's 30 ratings
    assert ratings_probe.count_since(mark) == LIMIT


def test_a_replay_is_answered_at_the_limit_and_a_new_rating_is_not(shopper, ratings_probe):
    client, products = shopper
    mark = ratings_probe.mark()
    accepted = [_post(client, {"product_id": p, "rating": 4}, key=f"limit-key-{i:02d}").status_code
                for i, p in enumerate(products[:LIMIT])]
    assert accepted == [202] * LIMIT, accepted

    # the 30th again, same key and body (its answer was lost): replayed, not refused
    replay = _post(client, {"product_id": products[LIMIT - 1], "rating": 4}, key=f"limit-key-{LIMIT - 1:02d}")
    assert replay.status_code == 202, replay.content[:300]
    assert replay.json()["event_id"] == client.get(f"/api/ratings/limit-key-{LIMIT - 1:02d}/").json()["event_id"]
    assert ratings_probe.count_since(mark) == LIMIT  # published once

    over = _post(client, {"product_id": products[LIMIT], "rating": 4}, key="limit-key-new")  # a 31st rating
    assert over.status_code == 429 and int(over["Retry-After"]) >= 1, over.content[:300]
    control = client.post("/api/not-interested/", {"product_id": products[LIMIT]},
                          content_type="application/json")  # one counter for ratings and controls
    assert control.status_code == 429, control.content[:300]
    assert ratings_probe.count_since(mark) == LIMIT


def test_the_pages_count_ratings_not_refused_posts(shopper, ratings_probe):
    """The product page's rating form and controls: an invalid form, an unknown product and a
    503 publish nothing and must not use up the limit, as for the API."""
    from core import kafka_io

    client, products = shopper
    codes = []
    for i in range(10):
        codes.append(client.post(f"/p/{products[i]}/rate/", {"rating": "9"}).status_code)  # out of range
        codes.append(client.post("/p/no-such-product-1/rate/", {"rating": "4"}).status_code)  # unknown
    breaker_cooldown = kafka_io.BREAKER.cooldown_s
    kafka_io.BREAKER.cooldown_s = 3600.0
    kafka_io.BREAKER.failure()
    try:
        codes += [client.post(f"/p/{products[i]}/rate/", {"rating": "4"}).status_code for i in range(10)]
    finally:
        kafka_io.BREAKER.cooldown_s = breaker_cooldown
        kafka_io.BREAKER.success()
    assert 429 not in codes and set(codes) <= {400, 404, 503}, codes
    mark = ratings_probe.mark()
    accepted = [client.post(f"/p/{products[i]}/rate/", {"rating": "5"}).status_code for i in range(LIMIT)]
    assert accepted == [302] * LIMIT, accepted
    assert client.post(f"/p/{products[LIMIT]}/rate/", {"rating": "5"}).status_code == 429
    assert ratings_probe.count_since(mark) == LIMIT


def test_a_double_click_on_the_page_is_answered_at_the_limit(shopper, ratings_probe):
    """The product page's form resent with its ``submission_id`` (a double click, a resubmitted
    page) is the same rating: at the limit it is answered as it was, not refused, and not counted
    again (it was, when the page charged before it knew the rating was a replay)."""
    client, products = shopper
    mark = ratings_probe.mark()
    rate = lambda i, key: client.post(f"/p/{products[i]}/rate/", {"rating": "4", "submission_id": key})  # noqa: E731
    accepted = [rate(i, f"page-key-{i:02d}").status_code for i in range(LIMIT)]
    assert accepted == [302] * LIMIT, accepted
    again = rate(LIMIT - 1, f"page-key-{LIMIT - 1:02d}")
    assert again.status_code == 302, again.content[:300]
    assert ratings_probe.count_since(mark) == LIMIT  # published once
    assert rate(LIMIT, "page-key-new").status_code == 429  # a 31st rating is still refused
    assert ratings_probe.count_since(mark) == LIMIT
