"""An ``Idempotency-Key`` (the page form's ``submission_id``) is one user's, not the whole site's.

The client's key was the Kafka event id itself, unique across all users: another account sending
a key someone had used got 409 ``idempotency_conflict`` (telling it that the key exists, and
refusing its rating), and two clients making their keys the same way (a counter) collided. A
submission is now found by (user, key) and its event id derived from both
(``shop.ratings.keyed_event_id``). The 202 of a replayed key says so (``Idempotent-Replayed: true``),
and ``GET /api/ratings/<id>/`` finds a rating by its event id or by its key, among the asker's
own. Real site (Django test client), real Kafka, MongoDB and Redis; a real worker process where
the ratings must be stored.
"""
from __future__ import annotations

import pytest

from core import rating_history
from realtime_support import wait_until
from realtime_support import rt, rt_catalog  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
WAIT_S = 90  # liveness bound for the worker on a loaded 2-core machine, not a speed check
KEY = "counter-00000001"  # what two clients that count their requests both send first
REPLAYED = "Idempotent-Replayed"


def _signed_in(make_user):
    """A client of its own, signed in as a new user: (client, user)."""
    from django.test import Client

    user = make_user()
    client = Client()
    client.force_login(user)
    return client, user


def _rate(client, product: str, rating: int, key: str | None = KEY):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post("/api/ratings/", {"product_id": product, "rating": rating}, content_type="application/json",
                       **headers)


def test_two_users_sending_the_same_key_both_rate(rt, site_cache, make_user):
    rt.start_worker()
    product = rt.catalog.in_model[0]
    (alices, alice), (bobs, bob) = _signed_in(make_user), _signed_in(make_user)

    first, second = _rate(alices, product, 5), _rate(bobs, product, 2)
    assert first.status_code == 202, first.content[:300]
    assert second.status_code == 202, second.content[:300]  # was 409: "already used for another request"
    assert first.json()["event_id"] != second.json()["event_id"]
    assert REPLAYED not in second, "Bob's rating is a new submission, not Alice's replayed"
    for user, stars in ((alice, 5.0), (bob, 2.0)):
        uid = user.profile.recommender_id
        wait_until(lambda: rating_history.user_ratings(uid, db=rt.db) == {product: stars}, WAIT_S,
                   f"the worker to store {user.username}'s rating")

    # Each user's key still guards that user's own retries: the same request is replayed, another is refused.
    again = _rate(alices, product, 5)
    assert again.status_code == 202 and again.json()["event_id"] == first.json()["event_id"], again.content[:300]
    clash = _rate(bobs, product, 4)
    assert clash.status_code == 409 and clash.json()["code"] == "idempotency_conflict", clash.content[:300]
    assert f"a rating of {product}" in clash.json()["detail"]  # Bob's own request, named


def test_a_replay_is_marked_and_a_first_acceptance_is_not(rt_catalog, site_cache, make_user, ratings_probe):
    from core import kafka_io

    client, _ = _signed_in(make_user)
    p = rt_catalog.products
    mark = ratings_probe.mark()

    first, replay = _rate(client, p[0], 4), _rate(client, p[0], 4)
    assert first.status_code == replay.status_code == 202, (first.content[:300], replay.content[:300])
    assert REPLAYED not in first and replay[REPLAYED] == "true"
    assert replay.json() == first.json()
    unkeyed = _rate(client, p[0], 4, key=None)
    assert unkeyed.status_code == 202 and REPLAYED not in unkeyed
    controls = [client.post("/api/not-interested/", {"product_id": p[1]}, content_type="application/json",
                            HTTP_IDEMPOTENCY_KEY="control-key-0001") for _ in range(2)]
    assert [c.status_code for c in controls] == [202, 202], controls[1].content[:300]
    assert REPLAYED not in controls[0] and controls[1][REPLAYED] == "true"

    # A retry of a rating answered 503 publishes it for the first time: not a replay.
    cooldown = kafka_io.BREAKER.cooldown_s
    kafka_io.BREAKER.cooldown_s = 3600.0  # Kafka failed moments ago: the site answers 503 at once
    kafka_io.BREAKER.failure()
    try:
        refused = _rate(client, p[2], 3, key="after-503-key-0001")
    finally:
        kafka_io.BREAKER.cooldown_s = cooldown
        kafka_io.BREAKER.success()
    assert refused.status_code == 503, refused.content[:300]
    retried = _rate(client, p[2], 3, key="after-503-key-0001")
    assert retried.status_code == 202 and REPLAYED not in retried, retried.content[:300]

    # the rating, the unkeyed one, the control and the retry: no replay was sent again
    assert ratings_probe.count_since(mark) == 4


def test_the_status_is_found_by_event_id_or_key_among_your_own(rt_catalog, site_cache, make_user):
    p = rt_catalog.products
    (alices, _), (bobs, _), (carols, _) = (_signed_in(make_user) for _ in range(3))
    mine = _rate(alices, p[0], 5).json()["event_id"]
    theirs = _rate(bobs, p[1], 3).json()["event_id"]  # the same key

    by_key, by_id = alices.get(f"/api/ratings/{KEY}/"), alices.get(f"/api/ratings/{mine}/")
    assert by_key.status_code == by_id.status_code == 200, (by_key.content[:300], by_id.content[:300])
    assert by_key.json() == by_id.json() and by_key.json()["event_id"] == mine
    assert by_key.json()["published"] is True
    assert bobs.get(f"/api/ratings/{KEY}/").json()["event_id"] == theirs

    for client, ident in ((alices, theirs), (carols, KEY), (carols, mine)):  # another user's: not found
        answer = client.get(f"/api/ratings/{ident}/")
        assert answer.status_code == 404 and answer.json()["code"] == "not_found", (ident, answer.content[:300])


@pytest.mark.django_db(transaction=True)
def test_a_retry_after_the_deploy_finds_its_row_from_before(rt_catalog, site_cache, make_user, ratings_probe):
    """A row written before keys were per user has the key as its event id; migration shop.0005
    copies it into ``idempotency_key``. A retry of an accepted one is then a replay with the same
    event id, and a retry of one answered 503 publishes its own event id again, not a new one (a
    worker may have it already: it must not count twice), and both are found by key."""
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    client, user = _signed_in(make_user)
    p = rt_catalog.products
    before = {"user_id": user.pk, "recommender_id": user.profile.recommender_id, "rating": 4}
    try:
        call_command("migrate", "shop", "0004", verbosity=0)
        state = MigrationLoader(connection).project_state(("shop", "0004_ratingsubmission_action_help"))
        old = state.apps.get_model("shop", "RatingSubmission")
        old.objects.create(product_id=p[0], event_id="before-deploy-sent", published=True, **before)
        old.objects.create(product_id=p[1], event_id="before-deploy-503", publish_error="ack timed out", **before)
    finally:  # the other tests' schema, whatever happened
        call_command("migrate", "shop", verbosity=0)
    mark = ratings_probe.mark()

    replay = _rate(client, p[0], 4, key="before-deploy-sent")
    assert replay.status_code == 202 and replay[REPLAYED] == "true", replay.content[:300]
    assert replay.json()["event_id"] == "before-deploy-sent"
    retry = _rate(client, p[1], 4, key="before-deploy-503")
    assert retry.status_code == 202 and REPLAYED not in retry, retry.content[:300]
    assert retry.json()["event_id"] == "before-deploy-503"
    assert [_event_id(r) for r in ratings_probe.read_since(mark)] == ["before-deploy-503"]
    assert client.get("/api/ratings/before-deploy-503/").json()["published"] is True


def _event_id(record) -> str:
    from core.events import parse_event

    return parse_event(record.value).event_id


def test_a_row_from_before_holding_a_derived_id_refuses_the_key_before_publishing(rt_catalog, site_cache,
                                                                                  make_user, ratings_probe):
    """Before keys were per user an account could send any key as its event id, also the id that
    (victim, key) now derives to (``keyed_event_id`` is public). The victim's rating with that key
    was published under the other account's event id, then its row refused: a 500, and every retry
    the same. It is now a 409 before anything is published (a new key works)."""
    from shop.models import RatingSubmission
    from shop.ratings import keyed_event_id

    client, victim = _signed_in(make_user)
    mallory = make_user()
    taken = keyed_event_id(victim.pk, KEY)
    RatingSubmission.objects.create(user=mallory, recommender_id=mallory.profile.recommender_id,
                                    product_id=rt_catalog.products[0], rating=1, event_id=taken,
                                    idempotency_key=taken, published=True)  # as migration shop.0005 left it
    mark = ratings_probe.mark()
    refused = _rate(client, rt_catalog.products[1], 5)
    assert refused.status_code == 409 and refused.json()["code"] == "idempotency_conflict", refused.content[:300]
    assert ratings_probe.count_since(mark) == 0
    assert _rate(client, rt_catalog.products[1], 5, key="counter-00000002").status_code == 202
