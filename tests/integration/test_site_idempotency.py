"""A rating's idempotency key is the submission's identity: a retry of the same submission (a
double click, a browser resubmitting, an API client whose response was lost while the broker did
get the event) carries the same key, hence the same event id (derived from the user and the key),
so the worker stores and counts it once. A key is one user's: another account's same key is
another submission.

The form gets its key when the page is rendered; an API client sends ``Idempotency-Key`` (or the
``idempotency_key`` field). Real site (Django test client), real Kafka, a real worker process.
"""
from __future__ import annotations

import re

import pytest

from core import mongo, rating_history
from realtime_support import wait_until
from realtime_support import rt, rt_catalog  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _stored(db, user_id: str) -> list[dict]:
    return list(db[mongo.RATINGS].find({"user_id": user_id}))


def test_a_retried_submission_is_stored_once(rt, site_cache, make_user, client):
    from shop.models import RatingSubmission
    from shop.ratings import keyed_event_id

    user = make_user()
    client.force_login(user)
    uid = user.profile.recommender_id
    product, other = rt.catalog.in_model[0], rt.catalog.in_model[1]
    rt.start_worker()

    # The API: the client's response was lost, so it sends the same request again.
    key = "client-key-0001"
    answers = [client.post("/api/ratings/", {"product_id": product, "rating": 4}, content_type="application/json",
                           HTTP_IDEMPOTENCY_KEY=key) for _ in range(2)]
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json()["event_id"] == answers[1].json()["event_id"] == keyed_event_id(user.pk, key)
    # The same key for a different rating is a client bug, not a retry.
    clash = client.post("/api/ratings/", {"product_id": product, "rating": 1}, content_type="application/json",
                        HTTP_IDEMPOTENCY_KEY=key)
    assert clash.status_code == 409, clash.content

    # The form: its key is rendered into the page; the browser submits the page twice.
    page = client.get(f"/p/{other}/").content.decode()
    form_key = re.search(r'name="submission_id" value="([A-Za-z0-9_-]+)"', page).group(1)
    assert form_key not in client.get(f"/p/{other}/").content.decode(), "each rendering gets its own key"
    for _ in range(2):
        answer = client.post(f"/p/{other}/rate/", {"rating": "5", "submission_id": form_key})
        assert answer.status_code == 302 and answer["Location"] == "/recommendations/", answer.content[:300]
    wait_until(lambda: len(_stored(rt.db, uid)) >= 2 and all(d["state"] == "processed" for d in _stored(rt.db, uid)),
               90, "the worker to process the ratings")
    # Back to the page (the browser shows it again, key included) and another choice: a new rating,
    # not a plain-text 409 that lost it. The page is not kept for Back.
    assert "no-store" in client.get(f"/p/{other}/")["Cache-Control"]
    changed = client.post(f"/p/{other}/rate/", {"rating": "3", "submission_id": form_key})
    assert changed.status_code == 302 and changed["Location"] == "/recommendations/", changed.content[:300]

    wait_until(lambda: len(_stored(rt.db, uid)) >= 3 and all(d["state"] == "processed" for d in _stored(rt.db, uid)),
               90, "the worker to process the ratings")
    stored = _stored(rt.db, uid)
    assert len(stored) == 3 and {keyed_event_id(user.pk, k) for k in (key, form_key)} < {d["_id"] for d in stored}, \
        "each submission stored once"
    assert RatingSubmission.objects.filter(user=user).count() == 3
    assert rating_history.user_ratings(uid, db=rt.db) == {product: 4.0, other: 3.0}


def test_only_a_client_key_is_checked_for_earlier_attempts(rt, site_cache, make_user, client, monkeypatch):
    """An id the request made itself cannot be an earlier or concurrent attempt's: a POST without
    a key reads no earlier submission and takes no attempt lock. With a key both checks stay,
    since a retry or a double click must find the attempt before it."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from core import locking
    from shop.models import RatingSubmission
    from shop.ratings import keyed_event_id

    locks = []
    real_lock = locking.named_lock
    monkeypatch.setattr(locking, "named_lock", lambda key, **kw: locks.append(key) or real_lock(key, **kw))
    user = make_user()
    client.force_login(user)
    table = RatingSubmission._meta.db_table

    def post(**headers) -> list[str]:
        """The request's SQL reads of the submissions."""
        with CaptureQueriesContext(connection) as queries:
            answer = client.post("/api/ratings/", {"product_id": rt.catalog.in_model[0], "rating": 4},
                                 content_type="application/json", **headers)
        assert answer.status_code == 202, answer.content
        return [q["sql"] for q in queries if q["sql"].lstrip().startswith("SELECT") and table in q["sql"]]

    assert post() == [] and locks == []
    assert len(post(HTTP_IDEMPOTENCY_KEY="client-key-0002")) == 2
    assert locks == [f"rating-submission:{keyed_event_id(user.pk, 'client-key-0002')}"]


def test_a_retry_that_fails_fast_cancels_the_first_attempt_again(rt_catalog, site_cache, make_user, client,
                                                                   monkeypatch):
    """Attempt 1's ack timed out: it was answered 503 and its event id cancelled, but a stalled
    broker may still write its record. The retry (same key) takes the cancellation back before it
    publishes; when that publish fails fast (the breaker is open: surely not sent), the retry must
    cancel again, or attempt 1's late record is stored although both answers were 503."""
    from core import cancellation, kafka_io
    from shop.models import RatingSubmission
    from shop.ratings import keyed_event_id

    user = make_user()
    client.force_login(user)
    product, key = rt_catalog.in_model[0], "client-key-fast-retry"
    event_id = keyed_event_id(user.pk, key)
    # What attempt 1 left: its submission, not published, and the cancellation of its id.
    RatingSubmission.objects.create(user=user, recommender_id=user.profile.recommender_id, product_id=product,
                                    rating=4, event_id=event_id, idempotency_key=key,
                                    publish_error="the ack timed out")
    assert cancellation.cancel(event_id) is True

    monkeypatch.setattr(kafka_io.BREAKER, "cooldown_s", 3600.0)  # open for the whole test
    kafka_io.BREAKER.failure()
    try:
        retry = client.post("/api/ratings/", {"product_id": product, "rating": 4}, content_type="application/json",
                            HTTP_IDEMPOTENCY_KEY=key)
    finally:
        kafka_io.BREAKER.success()
    assert retry.status_code == 503, retry.content[:300]
    assert cancellation.state(event_id) == "cancelled"
    assert cancellation.claim_batch([event_id])[0] == {event_id}, "a worker would store attempt 1's late record: a ghost rating"
