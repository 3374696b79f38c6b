"""A rating the site answered 503 is never stored: no "ghost" ratings (issue 11, the soak's 12).

The site waits ``KAFKA_DELIVERY_TIMEOUT_MS`` for the broker's ack; a broker that is stalled (here
a private one frozen with SIGSTOP; in the soak a restarting one) may still write the record after
the site gave up and told the shopper "not saved". Real servers: a private FerretDB and Kafka
(``bin/services`` with ``SERVICES_STATE_DIR``), the Django site (test client) and a real worker
process. The shared servers are never touched.

1. The ack times out, the site answers 503; the broker, resumed, writes the record anyway (the
   test checks the ghost really is in the log); a worker reads it and must not store it. The
   shopper's retry with the same key is then stored exactly once.
2. A worker stored the event before the site's deadline ran out (the ack was lost, not the
   record): the site must answer 202, not 503.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from types import SimpleNamespace

import pytest

from core import kafka_io, locking, mongo, rating_history
from core.events import RatingEvent, parse_event
from core.settings import get_settings
from realtime_support import private_services, process_env, read_topic, seed_catalog, start_worker, wait_until  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture(scope="module")
def ghost_site(private_services):
    db = mongo.get_db()
    mongo.ensure_indexes(db)
    products = seed_catalog(30, db=db)
    kafka_io.ensure_topics()
    return SimpleNamespace(db=db, products=products, services=private_services)


@pytest.fixture
def frozen_broker(ghost_site):
    """``freeze()`` stops the private broker with SIGSTOP (connections stay open, nothing is
    answered), ``thaw()`` resumes it; it is always resumed at the end."""
    # `bin/services status kafka`: "kafka  running  <pid>  <address>" (supervisord's child: the broker's JVM)
    pid = int(ghost_site.services.services("status", "kafka").split()[2])
    frozen = []

    def freeze() -> None:
        os.kill(pid, signal.SIGSTOP)
        frozen.append(True)

    def thaw() -> None:
        os.kill(pid, signal.SIGCONT)
        frozen.clear()
        kafka_io.BREAKER.success()  # the breaker would refuse ratings for its cooldown

    yield SimpleNamespace(freeze=freeze, thaw=thaw)
    if frozen:
        os.kill(pid, signal.SIGCONT)
    kafka_io.BREAKER.success()


def _rate(client, product: str, key: str, rating: int = 4):
    return client.post("/api/ratings/", {"product_id": product, "rating": rating}, content_type="application/json",
                       HTTP_IDEMPOTENCY_KEY=key)


def _ids_in_log() -> set[str]:
    return {parse_event(r.value).event_id for r in read_topic(get_settings().ratings_topic, 10_000, timeout_s=8)}


def _processed(db, event_id: str) -> bool:
    return (db[mongo.RATINGS].find_one({"_id": event_id}) or {}).get("state") == "processed"


def test_a_rating_answered_503_is_never_stored_and_its_retry_is_stored_once(ghost_site, frozen_broker, site_cache,
                                                                             make_user, client, tmp_path):
    from shop.ratings import keyed_event_id

    db, products = ghost_site.db, ghost_site.products
    user = make_user()
    client.force_login(user)
    uid = user.profile.recommender_id
    assert _rate(client, products[0], f"warm-{uuid.uuid4().hex[:8]}").status_code == 202  # connection and metadata

    ghost_key = f"ghost-{uuid.uuid4().hex[:10]}"
    ghost = keyed_event_id(user.pk, ghost_key)  # the event id of the user's key
    frozen_broker.freeze()
    try:
        answer = _rate(client, products[1], ghost_key)
        assert answer.status_code == 503, answer.content[:300]
        time.sleep(1.0)
    finally:
        frozen_broker.thaw()
    # The broker, resumed, handles the request it had already received: the record is in the log.
    assert wait_until(lambda: ghost in _ids_in_log(), 60, "the ghost record in the log"), \
        "the frozen broker did not write the timed-out record: this test proves nothing"

    group = f"ghost-{uuid.uuid4().hex[:8]}"
    worker = start_worker(process_env(KAFKA_WORKER_GROUP=group), tmp_path / "worker.log")
    try:
        # A later rating of the same user (same key, same partition) is processed after the ghost.
        marked = _rate(client, products[2], f"marker-{uuid.uuid4().hex[:8]}")
        assert marked.status_code == 202
        marker = marked.json()["event_id"]
        wait_until(lambda: _processed(db, marker), 120, "the worker to reach the marker behind the ghost")
        assert db[mongo.RATINGS].find_one({"_id": ghost}) is None, "a rating answered 503 was stored (a ghost)"
        assert products[1] not in rating_history.user_ratings(uid, db=db)

        # The shopper tries again with the same key: accepted, stored exactly once.
        again = _rate(client, products[1], ghost_key)
        assert again.status_code == 202 and again.json()["event_id"] == ghost, again.content[:300]
        wait_until(lambda: _processed(db, ghost), 120, "the retried rating processed")
        assert [d["_id"] for d in db[mongo.RATINGS].find({"user_id": uid})].count(ghost) == 1
        assert rating_history.user_ratings(uid, db=db)[products[1]] == 4.0
        assert sorted(_ids_in_log() & {ghost}) == [ghost]
        log = worker.log()
        assert "cancelled" in log, log[-2000:]
    finally:
        worker.stop()
        print(worker.log()[-3000:])


def test_a_rating_stored_before_the_deadline_is_answered_202(ghost_site, frozen_broker, site_cache, make_user,
                                                             client):
    """The broker wrote the record and a worker stored it, but the ack did not come back in time:
    the rating counts, so the shopper must hear "accepted", not "try again"."""
    from kafka_workers.model_holder import ModelHolder
    from kafka_workers.retry import process_with_retry
    from shop.ratings import keyed_event_id

    db, products = ghost_site.db, ghost_site.products
    user = make_user()
    client.force_login(user)
    uid = user.profile.recommender_id
    assert _rate(client, products[3], f"warm-{uuid.uuid4().hex[:8]}").status_code == 202

    key = f"early-{uuid.uuid4().hex[:10]}"
    # What the worker reads of this submission (same id, user, product and rating), processed
    # through the worker's own path; then the site's wait for the (frozen) broker's ack runs out.
    event = RatingEvent(user_id=uid, product_id=products[4], rating=5, event_id=keyed_event_id(user.pk, key))
    record = SimpleNamespace(value=json.dumps(event.to_dict()).encode(), key=event.key, topic="ratings", partition=0,
                             offset=0)
    stored = process_with_retry(record, ModelHolder(), threading.Event())
    assert stored is not None and stored.status == "processed"
    frozen_broker.freeze()
    try:
        answer = _rate(client, products[4], key, rating=5)
    finally:
        frozen_broker.thaw()
    assert answer.status_code == 202, answer.content[:300]
    assert answer.json()["event_id"] == event.event_id
    assert _processed(db, event.event_id)


def test_a_batch_claim_takes_writer_locks_in_the_same_insert(ghost_site):
    """``claim_batch`` with locks: the events are claimed whatever happens to the locks; when
    another writer holds one of them, none is kept (those the insert took are given back), and the
    other's lock is untouched."""
    from core import cancellation

    db = ghost_site.db
    e1, e2, e3 = (f"lk-{uuid.uuid4().hex[:10]}" for _ in range(3))
    l1, l2, l3 = (f"writer:lk-{uuid.uuid4().hex[:10]}" for _ in range(3))
    assert cancellation.cancel(e2) is True
    assert cancellation.claim_batch([e1, e2], locks=[l1, l2], token="t1") == ({e2}, set(), True)
    holders = {d["_id"]: d["token"] for d in db[mongo.EVENT_CLAIMS].find({"_id": {"$in": [l1, l2, l3]}})}
    assert holders == {l1: "t1", l2: "t1"}
    assert cancellation.claim_batch([e3, e1], locks=[l2, l3], token="t2") == (set(), {e1}, False)
    holders = {d["_id"]: d["token"] for d in db[mongo.EVENT_CLAIMS].find({"_id": {"$in": [l1, l2, l3]}})}
    assert holders == {l1: "t1", l2: "t1"}  # l3 given back, l2 still the first writer's
    assert cancellation.state(e3) == "stored" and cancellation.state(e2) == "cancelled"
    locking.release_locks([l1, l2], "t1")
    assert db[mongo.EVENT_CLAIMS].count_documents({"_id": {"$in": [l1, l2, l3]}}) == 0


def test_cancel_and_claim_are_decided_once_by_event_id(ghost_site):
    """The arbiter itself: the first of cancel / claim wins, for one event and a batch; un-cancelling
    lets the next claim win. (``claim_batch`` returns (cancelled, claimed before, locked).)"""
    from core import cancellation

    db = ghost_site.db
    a, b, c, d = (f"arb-{uuid.uuid4().hex[:10]}" for _ in range(4))
    assert cancellation.cancel(a) is True
    assert cancellation.claim_batch([a])[0] == {a}, "a worker must skip a cancelled event"
    assert cancellation.cancel(a) is True  # cancelling twice changes nothing
    assert cancellation.claim_batch([b])[:2] == (set(), set())
    assert cancellation.claim_batch([b])[:2] == (set(), {b})  # a redelivery goes on, known as one
    assert cancellation.cancel(b) is False, "the site must hear that a worker stored it"
    assert cancellation.cancel(c) is True
    assert cancellation.claim_batch([a, b, c, d, d])[0] == {a, c}
    cancellation.uncancel(a)
    assert cancellation.claim_batch([a])[0] == set() and cancellation.cancel(a) is False
    cancellation.uncancel(b)  # removes only a cancellation, never a worker's claim
    assert cancellation.state(b) == "stored"
    assert db[mongo.EVENT_CLAIMS].count_documents({"_id": {"$in": [a, b, c, d]}}) == 4


@pytest.mark.django_db(transaction=True)
def test_a_double_click_during_an_ack_timeout_is_never_lost(ghost_site, frozen_broker, site_cache, make_user,
                                                            tmp_path, monkeypatch):
    """Two requests with one key (a double click) while the broker stalls: the first one's ack
    times out, the second one is sent after the broker resumes. The first must not cancel what
    the second reported as accepted: whatever was answered 202 is stored, exactly once.

    The two requests run one at a time (the lock by the key's event id): the second waits for the first's
    503 and cancellation, then un-cancels and publishes. The breaker's cooldown is off here, as
    if the second click reached another site process (each has its own breaker and producer)."""
    from django.test import Client

    from shop.ratings import keyed_event_id

    monkeypatch.setattr(kafka_io.BREAKER, "cooldown_s", 0.0)

    db, products = ghost_site.db, ghost_site.products
    user = make_user()
    uid = user.profile.recommender_id
    clients = [Client(), Client()]
    for c in clients:
        c.force_login(user)
    assert _rate(clients[0], products[6], f"warm-{uuid.uuid4().hex[:8]}").status_code == 202

    key = f"double-{uuid.uuid4().hex[:10]}"
    answers: dict[int, int] = {}

    def click(i: int) -> None:
        answers[i] = _rate(clients[i], products[7], key, rating=2).status_code

    frozen_broker.freeze()
    try:
        first = threading.Thread(target=click, args=(0,))
        first.start()
        time.sleep(0.5)
        second = threading.Thread(target=click, args=(1,))
        second.start()
        time.sleep(1.5)  # the first one's deadline (KAFKA_DELIVERY_TIMEOUT_MS 1.5 s) has passed
    finally:
        frozen_broker.thaw()
    first.join(60)
    second.join(60)
    assert sorted(answers) == [0, 1], answers

    group = f"double-{uuid.uuid4().hex[:8]}"
    worker = start_worker(process_env(KAFKA_WORKER_GROUP=group), tmp_path / "worker.log")
    try:
        marked = _rate(clients[0], products[8], f"marker-{uuid.uuid4().hex[:8]}")
        assert marked.status_code == 202
        marker = marked.json()["event_id"]
        wait_until(lambda: _processed(db, marker), 120, "the worker to reach the marker behind the clicks")
        stored = db[mongo.RATINGS].find_one({"_id": keyed_event_id(user.pk, key)})
        assert answers == {0: 503, 1: 202}, answers
        assert stored is not None, "the second click was answered 202 but not stored: an accepted rating was lost"
        assert rating_history.user_ratings(uid, db=db)[products[7]] == 2.0
    finally:
        worker.stop()
        print(answers, worker.log()[-2000:])
