"""Reliability of the rating pipeline under crashes and outages, on real servers.

These tests stop and restart a Kafka broker and a FerretDB, so they run their OWN private pair,
started through ``bin/services`` (the script users run) with ``SERVICES_STATE_DIR`` and free ports;
the shared services on 9092/27017 are never touched. Redis (stats only) is the shared one.

1. 10,000 events, two worker processes, one killed with SIGKILL mid-stream and restarted: every
   rating is stored exactly once and every user's list comes from their last event.
2. The broker stopped and restarted mid-stream, then MongoDB stopped for 30 s: the same workers
   (no restart) lose nothing, duplicate nothing and drain the backlog; a dead letter that cannot
   be published while the broker is down is retried, not dropped.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from types import SimpleNamespace

import pytest

from core import mongo
from core.settings import get_settings
from realtime_support import (N_IN_MODEL, N_PRODUCTS, TOP_N, check_users_current, committed_and_end_offsets,
                              make_events, publish_all, read_topic, seed_catalog, wait_until)
from realtime_support import private_services, rt  # noqa: F401  (fixtures; rt_catalog is overridden below)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def rt_catalog(private_services):
    """The catalog in the private database (overrides the shared-server one of realtime_support)."""
    db = mongo.get_db()
    mongo.ensure_indexes(db)
    products = seed_catalog(N_PRODUCTS, db=db)
    return SimpleNamespace(db=db, products=products, in_model=products[:N_IN_MODEL],
                           not_in_model=products[N_IN_MODEL:])


def _count_processed(db) -> int:
    return db[mongo.RATINGS].count_documents({"state": "processed"})


def _send_fast(events: list) -> None:
    """Publish many events with acks=all, waiting for every acknowledgement (pipelined sends).

    A bulk loader of its own: the site's producer gives each send only the site's short delivery
    timeout, which 10,000 queued sends would outlast in its buffer.
    """
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=get_settings().kafka_bootstrap_servers, acks="all",
                             enable_idempotence=True, linger_ms=5, delivery_timeout_ms=120_000)
    topic = get_settings().ratings_topic
    try:
        futures = [producer.send(topic, key=e.key, value=e.to_bytes()) for e in events]
        producer.flush(timeout=120)
        for f in futures:
            f.get(timeout=60)
    finally:
        producer.close(timeout=10)


def _check_stored_exactly_once(db, events: list) -> None:
    ids = [d["_id"] for d in db[mongo.RATINGS].find({}, {"_id": 1})]
    assert len(ids) == len(events), f"{len(ids)} ratings stored for {len(events)} events"
    assert set(ids) == {e.event_id for e in events}
    assert db[mongo.RATINGS].count_documents({"state": "processed"}) == len(events)


def test_kill_9_mid_stream_then_restart_stores_every_rating_once(rt):
    db = rt.db
    db[mongo.RATINGS].delete_many({})
    users = [f"rt-k9-{i:03d}" for i in range(500)]
    events = make_events(users, rt.catalog.in_model, per_user=20, seed=9)
    assert len(events) == 10_000
    _send_fast(events)

    victim, survivor = rt.start_worker(), rt.start_worker()
    at_kill = wait_until(lambda: (n := _count_processed(db)) >= 2500 and n, 600, "a quarter of the events processed",
                         every_s=0.5)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    assert at_kill < len(events), "the kill must land mid-stream"
    restarted = rt.start_worker()

    wait_until(lambda: _count_processed(db) == len(events), 900, "all 10,000 events processed", every_s=1)
    _check_stored_exactly_once(db, events)
    check_users_current(events, db, rt.version, TOP_N)
    wait_until(lambda: (c := committed_and_end_offsets(rt.group, rt.topic)) and c[0] == c[1], 60,
               "the group's committed offsets to reach the end of the log")
    assert survivor.alive() and restarted.alive()


def test_broker_restart_and_30s_mongo_outage_lose_and_duplicate_nothing(rt, private_services):
    from kafka_workers.model_holder import ModelHolder
    from kafka_workers.retry import process_with_retry

    db = rt.db
    db[mongo.RATINGS].delete_many({})
    users = [f"rt-out-{i:03d}" for i in range(200)]
    events = make_events(users, rt.catalog.in_model, per_user=15, seed=3)
    first, second = events[:1500], events[1500:]
    workers = [rt.start_worker(), rt.start_worker()]
    refused: list[int] = []
    go_second, mongo_down = threading.Event(), threading.Event()

    def produce() -> None:
        """The site's path (publish_event, acks=all), paced; a refused send is retried. The last
        third of the second part waits for the MongoDB outage, so it starts mid-stream however
        fast or slow (a loaded machine) the workers are."""
        for part in (first, second):
            for start in range(0, len(part), 50):
                if part is second and start == 1000:
                    mongo_down.wait(600)
                refused.append(publish_all(part[start:start + 50], retry_until_s=180))
                time.sleep(0.3)
            go_second.wait(600)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    wait_until(lambda: _count_processed(db) >= 300, 300, "the stream under way", every_s=0.5)

    # --- the broker goes away mid-stream ---
    private_services.services("stop", "kafka")
    poison = SimpleNamespace(value=b'{"not": "an event"', key=b"rt-out-poison", topic=rt.topic, partition=0,
                             offset=987654)
    outcome: list = []
    dead_letterer = threading.Thread(
        target=lambda: outcome.append(process_with_retry(poison, ModelHolder(), threading.Event())), daemon=True)
    dead_letterer.start()
    time.sleep(8)  # the dead letter cannot be published now: it must be retried, not dropped
    assert dead_letterer.is_alive() and not outcome, "a dead letter was given up while the broker was down"
    assert all(w.alive() for w in workers)
    private_services.services("start", "kafka")
    dead_letterer.join(120)
    assert outcome and outcome[0].status == "dead-letter"
    wait_until(lambda: _count_processed(db) == len(first), 600, "the first part drained after the broker restart",
               every_s=1)
    assert sum(refused) > 0, "the producer should have been refused while the broker was down"

    # --- MongoDB goes away for 30 s while events keep coming ---
    go_second.set()
    wait_until(lambda: _count_processed(db) >= len(first) + 200, 300, "the second part under way", every_s=0.5)
    private_services.services("stop", "mongo")
    assert producer.is_alive(), "the outage should start mid-stream"
    mongo_down.set()
    time.sleep(30)
    assert all(w.alive() for w in workers), "a worker died while MongoDB was down"
    private_services.services("start", "mongo")

    producer.join(300)
    assert not producer.is_alive()
    wait_until(lambda: _count_processed(db) == len(events), 600, "the backlog drained", every_s=1)
    _check_stored_exactly_once(db, events)
    check_users_current(events, db, rt.version, TOP_N)
    wait_until(lambda: (c := committed_and_end_offsets(rt.group, rt.topic)) and c[0] == c[1], 60,
               "the group's committed offsets to reach the end of the log")
    assert all(w.alive() for w in workers), "the same workers carried on: no restart was needed"
    letters = [r for r in read_topic(rt.dead_letter_topic, 1) if r.key == b"rt-out-poison"]
    assert len(letters) == 1


def test_readyz_says_not_ready_while_the_broker_is_down(rt, private_services):
    """With Kafka down the worker's loop turns (poll() returns nothing) and /healthz stayed 200:
    /readyz turns 503 once the broker is silent for WORKER_READY_BROKER_S, and 200 once it is back."""
    import urllib.error
    import urllib.request

    from realtime_support import free_port

    port = free_port()
    worker = rt.start_worker(WORKER_METRICS_PORT=str(port), WORKER_READY_BROKER_S="5")

    def status(path: str) -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    wait_until(lambda: status("/readyz") == 200, 180, "the worker ready", every_s=0.5)
    private_services.services("stop", "kafka")
    try:
        wait_until(lambda: status("/readyz") == 503, 180, "/readyz to say the broker is gone", every_s=0.5)
        assert status("/healthz") == 200 and worker.alive()  # alive: a restart would not bring Kafka back
    finally:
        private_services.services("start", "kafka")
    wait_until(lambda: status("/readyz") == 200, 300, "the worker ready again", every_s=0.5)
