"""Batch reloads under live traffic, on the real servers (issue 11, item 12).

A reload of a collection the site and the workers read must never show them a missing
collection (a valid rating was dead-lettered as "unknown product" during a product reload), and
must never forget a live rating stored while the load ran (the ``user_history`` swap erased them).
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from core import catalog, mongo, rating_history
from realtime_support import (expected_history, make_events, processed_ids, publish_all, read_topic,
                              wait_until)
from realtime_support import rt, rt_catalog  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


def test_readers_never_see_a_missing_collection_while_it_is_reloaded(rt_catalog, monkeypatch):
    """A reader polling a product by id while ``products`` is reloaded again and again (with the
    retired generations dropped as they expire) finds it every time."""
    monkeypatch.setattr(mongo, "POINTER_TTL_S", 0.2, raising=False)
    monkeypatch.setattr(mongo, "RETIRE_GRACE_S", 0.6, raising=False)
    db = rt_catalog.db
    docs = list(db[mongo.PRODUCTS].find({}))
    wanted = rt_catalog.products[0]
    stop, reads, misses, errors = threading.Event(), [0], [], []

    def reader() -> None:
        while not stop.is_set():
            try:
                if not catalog.product_exists(wanted):
                    misses.append(time.time())
            except Exception as exc:  # a reader error is as bad as a miss
                errors.append(repr(exc))
            reads[0] += 1

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for _ in range(15):
            staging = mongo.replace_collection_start(mongo.PRODUCTS)
            mongo.insert_docs(staging, docs)
            mongo.replace_collection_finish(mongo.PRODUCTS)
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert reads[0] > 100, f"the reader only managed {reads[0]} reads"
    assert not errors, errors[:3]
    assert not misses, f"{len(misses)} of {reads[0]} reads found no product {wanted} during the reloads"
    assert db[mongo.PRODUCTS].count_documents({}) == len(docs)


def test_the_replay_after_a_reload_applies_removals_and_skips_not_interested(mongo_db):
    """The live events a reload's replay finds (stored while the load ran) change the new history as
    the worker changed the old one: a removal removes, "not interested" adds no rating."""
    from core.events import NOT_INTERESTED, RATE, UNRATE

    since = time.time()
    user, other = f"REPLAY-{uuid.uuid4().hex[:8]}", f"REPLAY-{uuid.uuid4().hex[:8]}"
    # the new generation's history, as the load built it: P1 from a batch review
    mongo_db[mongo.USER_HISTORY].insert_one(rating_history.history_doc(user, {"P1": (4.0, 1000.0)}, {}))
    live = [(user, "P1", UNRATE, 0, 2000.5), (user, "P2", NOT_INTERESTED, 0, 2001.0), (user, "P3", RATE, 5, 2002.0),
            (other, "P4", RATE, 3, 2003.0), (other, "P4", UNRATE, 0, 2004.0), (other, "P5", RATE, 2, 2005.0)]
    mongo_db[mongo.RATINGS].insert_many([rating_history.rating_doc(
        {"event_id": uuid.uuid4().hex, "user_id": u, "product_id": p, "action": a, "rating": r, "ts": ts},
        state="processed") for u, p, a, r, ts in live])
    rating_history.reapply_live_ratings(since, db=mongo_db)
    assert rating_history.user_ratings(user, db=mongo_db) == {"P3": 5.0}
    assert rating_history.user_ratings(other, db=mongo_db) == {"P5": 2.0}


def _write_clean(spark, out, products: list[str], n_batch_users: int) -> int:
    """A small clean dataset (what clean.py writes) over the catalog's products; returns reviews."""
    reviews = []
    for u in range(n_batch_users):
        for k in range(4):
            pid = products[(u * 7 + k * 13) % len(products)]
            reviews.append((f"BATCH{u:05d}", pid, float(1 + (u + k) % 5), 1_400_000_000 + u * 10 + k,
                            "fine text", "fine", 0, 0, True, "someone", "Guitars", "2014", "fine text", "fine",
                            2014))
    spark.createDataFrame(reviews, "user_id string, product_id string, rating double, ts long, review_text string, "
                          "summary string, helpful_votes long, total_votes long, verified boolean, "
                          "reviewer_name string, category string, source_format string, text_clean string, "
                          "summary_clean string, year int").write.mode("overwrite").parquet(f"{out}/reviews")
    spark.createDataFrame([(p, f"Product {p}", "RT", 9.5, "Guitars", ["Guitars"], "", "", []) for p in products],
                          "product_id string, title string, brand string, price double, category string, "
                          "categories array<string>, description string, image string, also_buy array<string>"
                          ).write.mode("overwrite").parquet(f"{out}/products")
    return len(reviews)


@pytest.mark.slow
def test_mongo_load_under_live_ratings_loses_nothing(spark, rt, tmp_path, monkeypatch):
    """mongo_load runs while a real worker processes a steady stream of ratings: no rating is
    dead-lettered, and every live rating (also those stored while the load ran) is in the
    user's history afterwards."""
    products = rt.catalog.products
    clean = tmp_path / "clean"
    n_reviews = _write_clean(spark, clean, products, n_batch_users=3000)
    rt.start_worker()
    warm = make_events(["WARM"], rt.catalog.in_model, per_user=1, seed=1)
    publish_all(warm)
    wait_until(lambda: processed_ids([e.event_id for e in warm], rt.db), 120, "the worker's first event")

    users = [f"LIVE{i:02d}" for i in range(12)]
    events = make_events(users, rt.catalog.in_model, per_user=200, seed=2)  # more than the load needs
    stop = threading.Event()
    sent: list = []

    def send() -> None:
        for e in events:  # a steady stream until the load has finished
            if stop.is_set():
                break
            publish_all([e])
            sent.append(e)
            time.sleep(0.05)

    # When the load reads the live ratings for the new history and when that history goes live:
    # ratings processed in between are the ones a swap can lose, so the test makes sure there are.
    import spark_jobs.mongo_load as job

    window: dict[str, float] = {}
    real_live_ratings = job.live_ratings

    def timed_live_ratings(*args, **kwargs):
        window["read"] = time.time()
        return real_live_ratings(*args, **kwargs)

    real_reload = job.reload_collection

    def timed_reload(df, collection, *args, **kwargs):
        out = real_reload(df, collection, *args, **kwargs)
        if collection == mongo.USER_HISTORY:
            window["swapped"] = time.time()
        return out

    monkeypatch.setattr(job, "live_ratings", timed_live_ratings)
    monkeypatch.setattr(job, "reload_collection", timed_reload)
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    started = time.time()
    try:
        record = job.mongo_load(spark, str(clean), "it-reload-live")
    finally:
        ended = time.time()
        stop.set()
        sender.join(timeout=120)
    assert record["counts_in"]["reviews"] == n_reviews
    ids = [e.event_id for e in sent]
    done = wait_until(lambda: (lambda got: got if len(got) == len(ids) else None)(processed_ids(ids, rt.db)),
                      180, f"all {len(ids)} live ratings processed (dead letters: "
                      f"{[r.value[:200] for r in read_topic(rt.dead_letter_topic, 1, timeout_s=3)]})")
    assert len(done) == len(ids)
    dead = read_topic(rt.dead_letter_topic, 1, timeout_s=3)
    assert not dead, f"{len(dead)} valid ratings dead-lettered during the load: {dead[0].value[:300]}"
    during = [d for d in rt.db[mongo.RATINGS].find({"user_id": {"$in": users}}, {"processed_at": 1})
              if started <= d["processed_at"] <= ended]
    in_window = [d for d in rt.db[mongo.RATINGS].find({"user_id": {"$in": users}}, {"processed_at": 1})
                 if window["read"] <= d["processed_at"] <= window["swapped"]]
    print(f"load {ended - started:.1f} s; history read->swap {window['swapped'] - window['read']:.1f} s; "
          f"{len(ids)} live ratings, {len(during)} processed during the load, {len(in_window)} in that window")
    assert len(during) >= 20, f"only {len(during)} ratings were processed while the load ran; the test proves nothing"
    assert len(in_window) >= 5, f"only {len(in_window)} ratings processed between the history read and its swap"
    want = expected_history(sent)
    lost = {u: sorted(set(h) - set(rating_history.user_ratings(u))) for u, h in want.items()}
    lost = {u: p for u, p in lost.items() if p}
    if lost:
        when = {(d["user_id"], d["product_id"]): (round(d["stored_at"] - started, 2), round(d["processed_at"] - started, 2))
                for d in rt.db[mongo.RATINGS].find({"user_id": {"$in": list(lost)}})}
        print("window", {k: round(v - started, 2) for k, v in window.items()}, "ended", round(ended - started, 2))
        print("lost (stored, processed) s after the load began:",
              sorted(when[(u, p)] for u, ps in lost.items() for p in ps))
        print("collections", sorted(rt.db.list_collection_names()), record["collections"][mongo.USER_HISTORY])
    assert not lost, (f"the reload erased live ratings of {len(lost)} users "
                      f"({sum(map(len, lost.values()))} ratings), e.g. {next(iter(lost.items()))}")
    for u, h in want.items():
        assert rating_history.user_ratings(u) == h, u
    assert rating_history.user_ratings("BATCH00000"), "the batch history was not loaded"


@pytest.fixture
def own_db(monkeypatch, settings, mongo_db):
    from realtime_support import own_database

    yield from own_database(monkeypatch, settings.mongo_db, "reloads")


def test_a_generation_a_stalled_writer_made_again_is_dropped_once_the_switch_is_past_its_grace(own_db, monkeypatch):
    """A write resolved to a generation before a reload and reaching the server after that
    generation was dropped creates it again, holding just that write: no pointer or retired record
    named it, so it stayed for good, one per stall. It is dropped by a ``drop_retired`` once the
    switch to the live generation is past the grace; nothing else is: not within the grace, not
    the live generation, a staging (even one named older than live), a retired generation waiting
    out its grace, a newer collection a start is still filling, nor a name without a pointer. The
    plain name a first reload retired, made again by a write resolved before that reload, too."""
    monkeypatch.setattr(mongo, "RETIRE_GRACE_S", 0.5)
    db = own_db
    raw = lambda name: mongo.raw_collection(db, name)  # noqa: E731
    ms = lambda name: int(name.rpartition("__g")[2])  # noqa: E731

    def reload(doc: dict) -> str:
        staging = mongo.replace_collection_start(mongo.USER_HISTORY, db=db)
        raw(staging).insert_one(doc)
        mongo.replace_collection_finish(mongo.USER_HISTORY, db=db, staging=staging)
        time.sleep(0.002)  # the next generation's name is a later millisecond
        return staging

    first, second = reload({"_id": "u1"}), reload({"_id": "u2"})
    stale = f"{mongo.USER_HISTORY}__g{ms(first) - 1}"  # made again by a stalled writer
    raw(stale).insert_one({"_id": "u0", "late": True})
    no_pointer = f"{mongo.PRODUCTS}__g{ms(first) - 1}"
    raw(no_pointer).insert_one({"_id": "p"})
    assert mongo.drop_retired(db=db) == []  # within the grace after the switch: first is retired, stale kept
    assert {first, stale} <= set(db.list_collection_names())

    time.sleep(0.55)
    assert sorted(mongo.drop_retired(db=db)) == sorted([first, stale, mongo.USER_HISTORY])  # (the plain one retired)
    raw(first).insert_one({"_id": "u1", "late": True})  # another stalled write, after first's drop
    raw(mongo.USER_HISTORY).insert_one({"_id": "u9", "late": True})  # one resolved before the first reload
    raw(mongo.PRODUCTS).insert_one({"_id": "p"})  # a plain name never reloaded: no pointer, kept
    older_staging = f"{mongo.USER_HISTORY}__g{ms(second) - 2}"  # a start's, named by a clock behind
    raw(older_staging).insert_one({"_id": "s"})
    mongo.raw_collection(db, mongo.POINTERS).update_one({"_id": mongo.USER_HISTORY},
                                                         {"$set": {"staging": older_staging}})
    filling = f"{mongo.USER_HISTORY}__g{time.time_ns() // 1_000_000 + 60_000}"  # created, not named staging yet
    raw(filling).insert_one({"_id": "x"})
    assert sorted(mongo.drop_retired(db=db)) == sorted([first, mongo.USER_HISTORY])
    names = set(db.list_collection_names())
    assert first not in names and mongo.USER_HISTORY not in names, names
    assert {second, older_staging, filling, no_pointer, mongo.PRODUCTS} <= names, names
    assert raw(second).find_one({"_id": "u2"}) is not None
