"""``GET /api/ratings/<event_id>/`` tells the truth about a rating that will never be processed.

It said ``{"published": false, "state": "pending"}`` for ever for a rating Kafka never had (503,
nothing sent) and for one the worker dead-lettered (which writes no ``ratings`` document), so a
client polling it waited for ever. Real site (Django test client), real Kafka, a real worker
process (the synthetic catalog and model of realtime_support).
"""
from __future__ import annotations

import json

import pytest

from realtime_support import free_port, read_topic, reset_core_caches, wait_until
from realtime_support import rt, rt_catalog  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
WAIT_S = 90  # liveness bound for the worker on a loaded 2-core machine, not a speed check


def _rate(client, product: str, key: str):
    return client.post("/api/ratings/", {"product_id": product, "rating": 4}, content_type="application/json",
                       HTTP_IDEMPOTENCY_KEY=key)


def _status(client, event_id: str) -> dict:
    answer = client.get(f"/api/ratings/{event_id}/")
    assert answer.status_code == 200, answer.content[:300]
    return answer.json()


def test_a_rating_kafka_never_had_is_not_sent_until_its_retry_is(rt, site_cache, make_user, client):
    from shop.ratings import keyed_event_id

    user = make_user()
    client.force_login(user)
    rt.start_worker()
    product, key = rt.catalog.in_model[0], "state-not-sent-0001"
    event_id = keyed_event_id(user.pk, key)  # the status is asked by the client's key, as clients do
    with pytest.MonkeyPatch.context() as mp:  # no broker listens there: the site's producer cannot start
        mp.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
        reset_core_caches()
        try:
            down = _rate(client, product, key)
        finally:
            mp.undo()
            reset_core_caches()
    assert down.status_code == 503, down.content[:300]
    # nothing was sent: no worker will ever process it, and the status says so instead of "pending"
    assert _status(client, key) == {"event_id": event_id, "published": False, "state": "not_sent",
                                    "model_version": None}

    retry = _rate(client, product, key)  # the outage is over: README's retry with the same key
    assert retry.status_code == 202, retry.content[:300]
    assert _status(client, key)["state"] in ("pending", "processed")
    done = wait_until(lambda: (s := _status(client, key))["state"] == "processed" and s, WAIT_S,
                      "the worker to process the retried rating")
    assert done == {"event_id": event_id, "published": True, "state": "processed", "model_version": rt.version}


def test_a_dead_lettered_rating_says_so_and_a_good_one_is_processed(rt, site_cache, make_user, client):
    from core import kafka_io
    from core.events import RatingEvent
    from shop.models import RatingSubmission

    user = make_user()
    client.force_login(user)
    uid = user.profile.recommender_id
    rt.start_worker()
    good = _rate(client, rt.catalog.in_model[1], "state-good-0001")
    assert good.status_code == 202, good.content[:300]
    # A rating of a product the catalog no longer has when the worker gets it (the site checked it
    # when it was posted): the worker dead-letters it ("unknown product").
    bad = RatingEvent(user_id=uid, product_id="RT-gone-99999", rating=4, event_id="state-dead-0001")
    RatingSubmission.objects.create(user=user, recommender_id=uid, product_id=bad.product_id, rating=4,
                                    event_id=bad.event_id, published=True)
    kafka_io.publish_event(bad)

    letters = [json.loads(r.value) for r in read_topic(rt.dead_letter_topic, 1, timeout_s=WAIT_S)]
    assert [letter["event_id"] for letter in letters] == [bad.event_id], letters
    assert "unknown product" in letters[0]["reason"]
    assert _status(client, bad.event_id) == {"event_id": bad.event_id, "published": True, "state": "dead_letter",
                                             "model_version": None}
    wait_until(lambda: _status(client, "state-good-0001")["state"] == "processed", WAIT_S,
               "the worker to process the good rating")
    assert _status(client, "state-good-0001")["model_version"] == rt.version
    assert _status(client, bad.event_id)["state"] == "dead_letter"  # still: nothing will process it
