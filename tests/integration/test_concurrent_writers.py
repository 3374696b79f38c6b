"""Concurrent writers of one user's state, on the real MongoDB-protocol server.

Two workers can hold one partition for a while (a batch outlived ``max_poll_interval_ms`` and the
group rebalanced), and Celery re-scores users while workers write their lists. Neither may lose a
rating from the history or replace a list with one computed from an older history.
"""
from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

import pytest

from core import erasure, mongo, rating_history, recommend, redis_client, stored_lists
from core.events import RatingEvent
from realtime_support import forget_users, publish_model
from realtime_support import rt_catalog, worker_env  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


def _run_together(*calls: Callable[[], object]) -> list[BaseException]:
    """Run each call in a thread of its own, all at once; returns the exceptions they raised."""
    errors: list[BaseException] = []

    def run(call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def test_concurrent_history_writes_lose_no_rating(rt_catalog):
    db = rt_catalog.db
    user = "rt-cw-history"
    db[mongo.USER_HISTORY].delete_one({"_id": user})
    products = rt_catalog.products[:60] + ["RT:colon@x"]  # ("." in a key: FerretDB v1 refuses it)
    chunks = [products[i::4] for i in range(4)]

    def writer(chunk: list[str]) -> None:
        for k, pid in enumerate(chunk):
            rating_history.add_to_history(user, pid, 1 + k % 5, time.time(), db=db)

    errors = _run_together(*(functools.partial(writer, c) for c in chunks))
    assert not errors, errors
    stored = rating_history.user_ratings(user, db=db)
    assert set(stored) == set(products), f"{len(set(products) - set(stored))} of {len(products)} ratings lost"

    # The newest rating of one product wins, whatever order concurrent writers finish in.
    pid, base = products[0], time.time()
    ts = [base + i for i in range(12)]
    threads = [threading.Thread(target=rating_history.add_to_history, args=(user, pid, 1 + i % 5, t), kwargs={"db": db})
               for i, t in reversed(list(enumerate(ts)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert rating_history.user_ratings(user, db=db)[pid] == float(1 + 11 % 5)
    assert set(rating_history.user_ratings(user, db=db)) == set(products)


def test_rescore_does_not_overwrite_a_newer_list_written_by_a_worker(rt_catalog, worker_env, monkeypatch):
    """Celery reads a user's history, a worker then processes a new rating for that user and writes
    its list, and only then does Celery write: Celery's list is older and must not replace it."""
    from kafka_workers import tasks
    from kafka_workers.process import handle

    db, p = rt_catalog.db, rt_catalog.in_model
    user = "rt-cw-rescore"
    forget_users(db, [user])
    first = RatingEvent(user_id=user, product_id=p[0], rating=5, ts=time.time() - 60)
    v1 = publish_model(p, seed=21)
    from core import artifacts

    assert handle(first.to_bytes(), artifacts.load_model(v1)).status == "processed"
    v2 = publish_model(p, seed=22)
    model2 = artifacts.load_model(v2)
    newer = RatingEvent(user_id=user, product_id=p[1], rating=4)
    original, fired = recommend.recommend, []

    def recommend_with_a_worker_in_between(model, rated, n=20, **kwargs):
        if not fired:  # Celery's first call; the worker step below calls through
            fired.append(True)
            assert p[1] not in rated, "Celery read the history before the worker's event"
            assert handle(newer.to_bytes(), model2).status == "processed"  # the real worker step
        return original(model, rated, n, **kwargs)

    monkeypatch.setattr(recommend, "recommend", recommend_with_a_worker_in_between)
    tasks.rescore_active_users(v2)
    assert fired, "the interleaving did not happen"
    doc = stored_lists.get_recommendations(user, db=db)
    assert doc["source_event_id"] == newer.event_id, "Celery replaced the worker's newer list"
    assert p[1] not in {i["product_id"] for i in doc["items"]}, "the list recommends what the user just rated"
    assert set(rating_history.user_ratings(user, db=db)) == {p[0], p[1]}


@pytest.mark.parametrize("path", ["batch", "one event"])
def test_rescore_reading_the_history_under_a_worker_does_not_replace_the_workers_list(rt_catalog, worker_env,
                                                                                     monkeypatch, path):
    """The other order: a worker has started on the user's rating (a batch holds the user's locks)
    and not written the history yet when Celery starts re-scoring the user (its ``as_of`` is later
    than the worker's start) and reads the old history. Whichever list is written last, the
    worker's is from the newer history and must stay: its ``as_of`` is taken once the history is
    written. Both worker entries: the batch (``handle_batch``) and one message at a time (``handle``,
    a batch of one)."""
    from core import artifacts
    from kafka_workers import tasks
    from kafka_workers.batch import handle_batch
    from kafka_workers.process import handle

    db, p = rt_catalog.db, rt_catalog.in_model
    user = "rt-cw-rescore-under"
    forget_users(db, [user])
    v1 = publish_model(p, seed=23)
    first = RatingEvent(user_id=user, product_id=p[0], rating=5, ts=time.time() - 60)
    assert [o.status for o in handle_batch([first], artifacts.load_model(v1))] == ["processed"]
    v2 = publish_model(p, seed=24)
    newer = RatingEvent(user_id=user, product_id=p[1], rating=4)
    original_read, original_set = rating_history.user_ratings, mongo.bulk_upsert
    celery_read, errors = threading.Event(), []

    def celery_reads(user_id, *args, **kwargs):
        rated = original_read(user_id, *args, **kwargs)
        if threading.current_thread().name == "celery" and user_id == user:
            assert p[1] not in rated, "Celery read the history after the worker wrote it"
            celery_read.set()
        return rated

    def celery() -> None:
        try:
            tasks.rescore_active_users(v2)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def celery_reads_first() -> None:
        if not celery_read.is_set():
            threading.Thread(target=celery, name="celery").start()
            assert celery_read.wait(30), f"Celery did not read the history: {errors}"

    def history_write(collection, docs, *args, **kwargs):
        docs = list(docs)
        if collection.split("__g")[0] == mongo.USER_HISTORY and docs:  # the batch writes the generation it read
            celery_reads_first()
        return original_set(collection, docs, *args, **kwargs)

    monkeypatch.setattr(rating_history, "user_ratings", celery_reads)
    monkeypatch.setattr(mongo, "bulk_upsert", history_write)
    model2 = artifacts.load_model(v2)
    if path == "batch":
        assert [o.status for o in handle_batch([newer], model2)] == ["processed"]
    else:
        assert handle(newer.to_bytes(), model2).status == "processed"
    assert celery_read.is_set(), "the interleaving did not happen"
    deadline = time.time() + 60
    while redis_client.client().get(tasks.LAST_RESCORED_MODEL) != v2.encode() and not errors and time.time() < deadline:
        time.sleep(0.05)
    assert not errors, errors
    doc = stored_lists.get_recommendations(user, db=db)
    assert doc["source_event_id"] == newer.event_id, "Celery's list from the older history replaced the worker's"
    assert p[1] not in {i["product_id"] for i in doc["items"]}


def test_concurrent_not_interested_writes_lose_none(rt_catalog, worker_env):
    """Two writers of one user's "not interested" list (two members handling one partition during a
    rebalance): the one-event path's ``change_exclusion`` replaced the list without the user's lock,
    beside another one or a batch holding it, and one exclusion was lost: the hidden product was
    recommended again."""
    from core import shopper_controls
    from core.events import NOT_INTERESTED
    from kafka_workers.batch import handle_batch
    from kafka_workers.process import handle_event

    db, products = rt_catalog.db, rt_catalog.products[:40]
    user = "rt-cw-excl"
    forget_users(db, [user])

    def writer(chunk: list[str]) -> None:
        for pid in chunk:
            shopper_controls.change_exclusion(user, pid, hide=True, ts=time.time(), db=db)

    errors = _run_together(*(functools.partial(writer, products[i::4]) for i in range(4)))
    assert not errors, errors
    stored = shopper_controls.exclusions(user, db=db)
    assert stored == set(products), f"{len(set(products) - stored)} of {len(products)} exclusions lost"

    # one event on its own (a batch of one) beside a batch, as the two members would run them
    lost = []
    for k in range(10):
        user = f"rt-cw-excl-{k}"
        forget_users(db, [user])
        one, many = (RatingEvent(user_id=user, product_id=p, rating=0, action=NOT_INTERESTED) for p in products[:2])
        errors += _run_together(lambda: handle_event(one, None), lambda: handle_batch([many], None))
        if shopper_controls.exclusions(user, db=db) != set(products[:2]):
            lost.append(user)
    assert not lost and not errors, f"an exclusion lost for {lost}; {errors}"


def test_a_batch_never_replaces_exclusions_it_thinks_a_user_has_not(rt_catalog, worker_env):
    """A worker remembers which users have no exclusions (``kafka_workers.exclusions_cache``) and
    reads none for them; another worker handling the user meanwhile (a rebalance) stored one. The
    batch that adds a second one read nothing and replaced the list with its own."""
    from core import shopper_controls
    from core.events import NOT_INTERESTED
    from kafka_workers.batch import handle_batch
    from kafka_workers.exclusions_cache import users_without_exclusions

    db, p = rt_catalog.db, rt_catalog.products
    user = "rt-cw-excl-cached"
    forget_users(db, [user])
    users_without_exclusions(db).add(user)  # this worker saw the user with none
    shopper_controls.change_exclusion(user, p[0], hide=True, ts=time.time(), db=db)  # the other worker's
    event = RatingEvent(user_id=user, product_id=p[1], rating=0, action=NOT_INTERESTED)
    assert [o.status for o in handle_batch([event], None)] == ["processed"]
    assert shopper_controls.exclusions(user, db=db) == {p[0], p[1]}


def test_a_rescore_writes_no_list_for_an_account_deleted_while_it_ran(rt_catalog, worker_env, monkeypatch):
    """Celery reads a user's history, the shopper deletes the account (the site's steps, then the
    worker's ``delete_account``), and only then does Celery write: it stored a list computed from
    the deleted history, which nothing removed (the rated products named as "because")."""
    from core import artifacts
    from core.events import DELETE_ACCOUNT
    from kafka_workers import tasks
    from kafka_workers.batch import handle_batch
    from kafka_workers.batch import forget_user

    db, p = rt_catalog.db, rt_catalog.in_model
    user = "rt-cw-rescore-deleted"
    forget_users(db, [user])
    version = publish_model(p, seed=25)
    ratings = [RatingEvent(user_id=user, product_id=p[i], rating=5) for i in (1, 2, 3)]
    assert [o.status for o in handle_batch(ratings, artifacts.load_model(version))] == ["processed"] * 3
    original, deleted = rating_history.user_ratings, []

    def read_then_deleted(user_id, *args, **kwargs):
        rated = original(user_id, *args, **kwargs)
        if user_id == user and not deleted:
            deleted.append(True)
            erasure.record_deleted_user(user, db=db)
            erasure.delete_user_data(user, db=db)
            forget_user(RatingEvent(user_id=user, product_id="", rating=0, action=DELETE_ACCOUNT))
        return rated

    monkeypatch.setattr(rating_history, "user_ratings", read_then_deleted)
    tasks.rescore_active_users(version)
    assert deleted, "the interleaving did not happen"
    assert db[mongo.RECOMMENDATIONS].find_one({"_id": user}) is None, "a list was stored for the deleted account"


@pytest.mark.parametrize("path", ["batch", "one event"])
def test_a_late_event_of_a_deleted_account_whose_history_came_back_writes_nothing(rt_catalog, worker_env, path):
    """A reload may bring a deleted account's history back (it is built from reviews); the worker
    looked the account up in ``deleted_users`` only for users without a history, so a late event
    of it was processed, went into the history and a list was written. Both paths: the batch and
    one event at a time."""
    from kafka_workers.batch import handle_batch
    from kafka_workers.process import handle_event

    db, p = rt_catalog.db, rt_catalog.products
    user = f"rt-cw-deleted-history-{path[0]}"
    forget_users(db, [user])
    assert [o.status for o in handle_batch([RatingEvent(user_id=user, product_id=p[1], rating=4)], None)] \
        == ["processed"]
    erasure.record_deleted_user(user, db=db)
    db[mongo.RECOMMENDATIONS].delete_one({"_id": user})  # deleted; the history stays, as a reload wrote it
    late = RatingEvent(user_id=user, product_id=p[2], rating=5)
    outcomes = handle_batch([late], None) if path == "batch" else [handle_event(late, None)]
    assert [o.status for o in outcomes] == ["dropped"]
    assert db[mongo.RECOMMENDATIONS].find_one({"_id": user}) is None
    assert db[mongo.RATINGS].find_one({"_id": late.event_id}) is None
    assert p[2] not in rating_history.user_ratings(user, db=db), "the late rating went into the history"
