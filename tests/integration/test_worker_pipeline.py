"""The rating-event worker's normal path, as real processes against real Kafka, FerretDB and Redis.

A rating published the way the site publishes it (``core.kafka_io.publish_event``) becomes the
user's stored rating, history and new top-N; a new model version is picked up without a restart;
SIGTERM stops a worker with exactly its processed events committed; a redelivered event changes
nothing; the worker publishes its lag and latency.
"""
from __future__ import annotations

import signal
import time

import pytest

from core import artifacts, kafka_io, mongo, rating_history, recommend, stored_lists
from core.events import RatingEvent, parse_event
from realtime_support import (TOP_N, committed_and_end_offsets, count_processed, free_port, make_events,
                              processed_ids, publish_all, publish_model, read_topic, reset_core_caches,
                              wait_until, worker_stats)
from realtime_support import rt, rt_catalog  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


def _recs_from(db, user: str, event_id: str):
    doc = stored_lists.get_recommendations(user, db=db)
    return doc if doc and doc.get("source_event_id") == event_id else None


def test_rating_becomes_personal_recommendations_for_an_unseen_user(rt):
    products = rt.catalog.in_model
    worker = rt.start_worker()
    user = "rt-new-user"
    rated = {products[3]: 5, products[40]: 4, products[77]: 1}
    events = [RatingEvent(user_id=user, product_id=p, rating=r) for p, r in rated.items()]
    publish_all(events)
    doc = wait_until(lambda: _recs_from(rt.db, user, events[-1].event_id), 90, "the user's new list")

    items = doc["items"]
    ids = [i["product_id"] for i in items]
    assert doc["model_version"] == rt.version
    assert len(ids) == TOP_N and len(set(ids)) == TOP_N
    assert not set(ids) & set(rated), "rated items must not be recommended"
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    assert {i["because"] for i in items} <= set(rated)
    # Exactly what folding the whole history into the published model gives, not a stale list.
    model = artifacts.load_model(rt.version)
    assert ids == [r["product_id"] for r in recommend.recommend(model, {p: float(r) for p, r in rated.items()}, TOP_N)]
    assert rating_history.user_ratings(user, db=rt.db) == {p: float(r) for p, r in rated.items()}
    for e in events:  # stored as processed right after the list is written
        stored = wait_until(lambda: (d := rating_history.get_rating(e.event_id, db=rt.db)) and d.get("state") == "processed"
                            and d, 30, "the rating stored as processed")
        assert stored["model_version"] == rt.version
        assert (stored["user_id"], stored["product_id"], stored["rating"]) == (e.user_id, e.product_id, e.rating)
    assert worker.alive()


def test_user_unknown_to_the_model_gets_popular_items_they_have_not_rated(rt):
    rt.start_worker()
    events = [RatingEvent(user_id="rt-cold", product_id=rt.catalog.not_in_model[0], rating=5)]
    publish_all(events)
    doc = wait_until(lambda: _recs_from(rt.db, "rt-cold", events[-1].event_id), 90, "the fallback list")
    assert doc["model_version"] == "popular"
    # The catalog's most-reviewed order, minus what the user rated.
    assert [i["product_id"] for i in doc["items"]] == rt.catalog.products[:TOP_N]
    assert all(i["because"] is None for i in doc["items"])


def test_new_model_version_is_loaded_without_restart(rt):
    worker = rt.start_worker()
    user, products = "rt-reload", rt.catalog.in_model
    first = RatingEvent(user_id=user, product_id=products[10], rating=5)
    publish_all([first])
    doc = wait_until(lambda: _recs_from(rt.db, user, first.event_id), 90, "the first list")
    assert doc["model_version"] == rt.version

    v2 = publish_model(products, seed=42)
    wait_until(lambda: f"model {v2} loaded" in worker.log(), 60, "the worker to load the new version")
    second = RatingEvent(user_id=user, product_id=products[20], rating=4)
    publish_all([second])
    doc = wait_until(lambda: _recs_from(rt.db, user, second.event_id), 90, "the list after the reload")
    assert doc["model_version"] == v2
    # the rating is stored after its list (kafka_workers.batch.Tail): up to TAIL_MAX_S later
    stored = wait_until(lambda: rating_history.get_rating(second.event_id, db=rt.db), 30, "the rating stored")
    assert stored["model_version"] == v2
    model = artifacts.load_model(v2)
    history = {products[10]: 5.0, products[20]: 4.0}
    assert [i["product_id"] for i in doc["items"]] == [r["product_id"] for r in recommend.recommend(model, history, TOP_N)]
    assert worker.alive(), "a reload must not restart the worker"


@pytest.mark.slow
def test_sigterm_mid_stream_commits_exactly_what_was_processed(rt):
    users = [f"rt-term-{i}" for i in range(60)]
    events = make_events(users, rt.catalog.in_model, per_user=25, seed=1)
    publish_all(events)
    by_id = {e.event_id: e for e in events}

    # small batches, so that the signal lands between two of them (one batch of 500 takes ~1 s)
    worker = rt.start_worker(WORKER_BATCH_MAX="20")
    wait_until(lambda: count_processed(rt.db, "rt-term-") >= 30, 120, "some events processed", every_s=0.02)
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.log()[-3000:]
    assert "stopped" in worker.log()

    done = processed_ids(by_id, rt.db)
    assert 0 < len(done) < len(events), "SIGTERM should have landed mid-stream"
    committed, _ = committed_and_end_offsets(rt.group, rt.topic)
    records = read_topic(rt.topic, len(events))
    assert len(records) == len(events)
    below_ids = {parse_event(r.value).event_id for r in records if r.offset < committed.get(r.partition, 0)}
    # Committed offsets cover exactly the processed events: nothing unprocessed is skipped, and
    # nothing processed is left for a redelivery.
    assert below_ids == done

    second = rt.start_worker()
    wait_until(lambda: count_processed(rt.db, "rt-term-") == len(events), 180, "the rest processed by a new worker")
    assert processed_ids(by_id, rt.db) == set(by_id)
    stats = wait_until(lambda: (s := worker_stats(second.pid)) and s["processed"] + s["duplicate"] == len(events) - len(done)
                       and s["lag"] == 0 and s, 60, "the new worker's stats")
    assert stats["duplicate"] == 0, "a clean stop leaves nothing to redeliver"
    assert stats["dead-letter"] == 0
    committed, ends = committed_and_end_offsets(rt.group, rt.topic)
    assert committed == ends, "the backlog is drained and committed"


def test_a_busy_worker_commits_later_and_an_idle_one_at_once(rt):
    """While events keep coming (one every 50 ms, each poll returns within its 200 ms), the offsets
    of handled batches wait ``WORKER_COMMIT_EVERY_MS`` for their commit; once the stream stops, the
    next empty poll commits them. (Committing after every batch made the worker busier.)"""
    users = [f"rt-commit-{i}" for i in range(8)]
    events = make_events(users, rt.catalog.in_model, per_user=10, seed=3)
    rt.start_worker(WORKER_COMMIT_EVERY_MS="600000")
    publish_all(events[:1])
    wait_until(lambda: count_processed(rt.db, "rt-commit-") == 1, 90, "the first event processed")
    wait_until(lambda: sum(committed_and_end_offsets(rt.group, rt.topic)[0].values()) == 1, 30,
               "the first event committed by the idle worker")
    for e in events[1:40]:
        publish_all([e])
        time.sleep(0.05)
    committed = sum(committed_and_end_offsets(rt.group, rt.topic)[0].values())  # (read first: the worker is
    processed = count_processed(rt.db, "rt-commit-")  # idle ~200 ms after the last event, and commits then)
    assert processed >= 20 and committed == 1, (processed, committed)  # busy: handled, not yet committed
    publish_all(events[40:60])
    wait_until(lambda: (c := committed_and_end_offsets(rt.group, rt.topic))
               and all(c[0].get(p, 0) == end for p, end in c[1].items()), 30, "the idle worker's commit")
    assert count_processed(rt.db, "rt-commit-") == 60


def test_stats_expose_lag_and_latency(rt):
    worker = rt.start_worker()
    events = [RatingEvent(user_id=f"rt-stats-{i % 5}", product_id=rt.catalog.in_model[i], rating=1 + i % 5)
              for i in range(25)]
    publish_all(events)
    snap = wait_until(lambda: (s := worker_stats(worker.pid)) and s["processed"] == len(events) and s["lag"] == 0
                      and s, 90, "the worker's /metrics: all processed, lag 0")
    assert snap["model_version"] == rt.version
    assert 0 < snap["latency_ms_p50"] <= snap["latency_ms_p99"]


def test_consumer_lag_counts_events_not_yet_handed_to_the_worker(rt):
    from kafka_workers.consumer import consumer_lag, make_consumer

    publish_all([RatingEvent(user_id=f"rt-lag-{i}", product_id=rt.catalog.in_model[i], rating=3) for i in range(120)])
    consumer = make_consumer()
    try:
        assert consumer_lag(consumer) == 0  # nothing assigned yet
        got: list = []
        seen: list[int] = []
        deadline = time.monotonic() + 120
        while len(got) < 120 and time.monotonic() < deadline:
            got.extend(r for rs in consumer.poll(timeout_ms=500, max_records=10).values() for r in rs)
            lag = consumer_lag(consumer)  # None until every partition has been fetched once
            if lag is not None:
                assert lag == 120 - len(got)
                seen.append(lag)
        assert len(got) == 120
        assert seen and max(seen) > 0 and seen[-1] == 0, seen
    finally:
        consumer.close(autocommit=False)


def test_redelivered_and_half_processed_events_are_applied_once(rt):
    user, products = "rt-redeliver", rt.catalog.in_model
    now = time.time()
    e1 = RatingEvent(user_id=user, product_id=products[1], rating=5, ts=now - 30)
    e2 = RatingEvent(user_id=user, product_id=products[2], rating=4, ts=now - 20)
    # A worker that died after storing e3 but before writing the list: the redelivery finishes it.
    e3 = RatingEvent(user_id=user, product_id=products[3], rating=3, ts=now - 10)
    assert rating_history.store_rating(e3.to_dict(), db=rt.db)
    # An older rating of the same product (a skewed clock) must not overwrite the newer one.
    e0 = RatingEvent(user_id=user, product_id=products[1], rating=1, ts=now - 60)
    publish_all([e1, e1, e2, e3, e0])  # e1 twice: the producer retried after a lost ack

    worker = rt.start_worker()
    doc = wait_until(lambda: _recs_from(rt.db, user, e0.event_id), 90, "the last event's list")
    # the list is written before its ratings are stored as processed (a few ms later)
    wait_until(lambda: all((rating_history.get_rating(e.event_id, db=rt.db) or {}).get("state") == "processed"
                           for e in (e0, e1, e2, e3)), 30, "every event stored as processed")
    assert rt.db[mongo.RATINGS].count_documents({"user_id": user}) == 4
    assert rating_history.user_ratings(user, db=rt.db) == {products[1]: 5.0, products[2]: 4.0, products[3]: 3.0}
    assert not {i["product_id"] for i in doc["items"]} & {products[1], products[2], products[3]}
    stats = wait_until(lambda: (s := worker_stats(worker.pid)) and s["processed"] + s["duplicate"] == 5 and s,
                       60, "the worker's stats")
    assert (stats["processed"], stats["duplicate"]) == (4, 1)


def test_publish_reports_failure_when_no_broker_acknowledges(rt, monkeypatch):
    """The site must be told, not shown a success: nothing listens on this port."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    reset_core_caches()
    try:
        with pytest.raises(kafka_io.PublishError, match="could not be delivered"):
            kafka_io.publish_event(RatingEvent(user_id="rt-nobroker", product_id=rt.catalog.in_model[0], rating=5))
    finally:
        monkeypatch.undo()
        reset_core_caches()
