"""Celery tasks against real Redis and FerretDB, and a real ``celery -A`` worker with beat.

The module works in its own MongoDB database (realtime_support.rt_catalog) and its own Redis
database number, so neither the shared Celery service (Redis db 0) nor the site's cache keys
see anything of it.
"""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

import pytest
import redis

from core import artifacts, catalog, locking, mongo, rating_history, recommend, stored_lists
from core.cache_keys import LAST_RESCORED_MODEL
from core.events import RatingEvent
from realtime_support import (CATEGORIES, ROOT, SERVICES, TOP_N, Proc, process_env, publish_model, reset_core_caches,
                              wait_until)
from realtime_support import rt_catalog  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def celery_env(rt_catalog, settings, tmp_path_factory):
    """Own Redis db number (from the session's name) and artifacts directory for this module."""
    db_number = 1 + int(hashlib.sha1(settings.mongo_db.encode()).hexdigest(), 16) % 15
    url = urlparse(settings.redis_url)._replace(path=f"/{db_number}").geturl()
    mp = pytest.MonkeyPatch()
    mp.setenv("REDIS_URL", url)
    mp.setenv("ARTIFACTS_DIR", str(tmp_path_factory.mktemp("celery-artifacts")))
    reset_core_caches()
    r = redis.Redis.from_url(url)
    r.delete(LAST_RESCORED_MODEL)
    try:
        yield rt_catalog
    finally:
        # Also the queue and what acks_late put back at the worker's shutdown, so no later
        # session on this db number runs our leftover beat tasks.
        r.delete(LAST_RESCORED_MODEL, "celery", "rescore", "unacked", "unacked_index", "unacked_mutex")
        mp.undo()
        reset_core_caches()


def _redis() -> redis.Redis:
    from core.settings import get_settings

    return redis.Redis.from_url(get_settings().redis_url)


def _alive(proc: Proc) -> bool:
    assert proc.alive(), f"celery exited:\n{proc.log()[-3000:]}"
    return True


def _rate(db, user: str, product: str, rating: int, ts: float) -> None:
    e = RatingEvent(user_id=user, product_id=product, rating=rating, ts=ts).to_dict()
    assert rating_history.store_rating(e, db=db)
    rating_history.add_to_history(user, product, rating, ts, db=db)


def _forget_live_ratings(db) -> None:
    """No live rating in the window: trending reads the users' histories (the ratings applied to
    them) and keeps its scores in Redis, so the earlier tests' histories and state go too."""
    from core import trending

    db[mongo.RATINGS].delete_many({})
    db[mongo.USER_HISTORY].delete_many({})
    trending.drop_state(db.name)


def test_refresh_popular_writes_the_catalog_order_overall_and_per_category(celery_env):
    from kafka_workers.tasks import refresh_popular

    cat = celery_env
    assert refresh_popular(limit=5) == 1 + len(CATEGORIES)
    overall = stored_lists.get_popular("all", "popular", db=cat.db)
    assert [i["product_id"] for i in overall] == cat.products[:5]
    assert [i["score"] for i in overall] == [float(len(cat.products) - i) for i in range(5)]
    for c in CATEGORIES:
        items = stored_lists.get_popular(c, "popular", db=cat.db)
        want = [p for p in cat.products if catalog.get_product(p, db=cat.db)["category"] == c][:5]
        assert [i["product_id"] for i in items] == want


def test_refresh_trending_ranks_recent_positive_ratings_per_category(celery_env):
    from kafka_workers.tasks import refresh_trending

    db, p = celery_env.db, celery_env.products
    _forget_live_ratings(db)
    now = time.time()
    _rate(db, "rt-tr-1", p[0], 5, now - 60)            # Guitars, twice recent 5 -> ~2.0
    _rate(db, "rt-tr-2", p[0], 5, now - 120)
    _rate(db, "rt-tr-3", p[1], 5, now - 2 * 86400)     # Drums, two days old 5 -> ~0.25
    _rate(db, "rt-tr-4", p[2], 1, now - 60)            # Keyboards, recent 1 -> ~0.2
    _rate(db, "rt-tr-5", p[3], 5, now - 8 * 86400)     # Guitars, older than the week: ignored
    # (one shopper each: a shopper's vote is split over the products they rated in the week)
    refresh_trending(limit=10)
    overall = stored_lists.get_popular("all", "trending", db=db)
    assert [i["product_id"] for i in overall] == [p[0], p[1], p[2]]
    assert overall[0]["score"] == pytest.approx(2.0, abs=0.01)
    assert overall[1]["score"] == pytest.approx(0.25, abs=0.01)
    assert [i["product_id"] for i in stored_lists.get_popular("Guitars", "trending", db=db)] == [p[0]]
    assert [i["product_id"] for i in stored_lists.get_popular("Drums", "trending", db=db)] == [p[1]]
    assert [i["product_id"] for i in stored_lists.get_popular("Keyboards", "trending", db=db)] == [p[2]]


def test_rescore_active_users_uses_the_new_model_and_caches_drop_with_current(celery_env):
    from core import list_state, published
    from kafka_workers.tasks import rescore_active_users

    db, p = celery_env.db, celery_env.products
    db[mongo.RATINGS].delete_many({})
    v1 = publish_model(celery_env.in_model, seed=1)
    now = time.time()
    _rate(db, "rt-rs-active1", p[5], 5, now - 3600)
    _rate(db, "rt-rs-active1", p[6], 2, now - 3000)
    _rate(db, "rt-rs-active2", p[7], 4, now - 86400)
    _rate(db, "rt-rs-idle", p[8], 5, now - 40 * 86400)
    stored_lists.write_recommendations("rt-rs-idle", [{"product_id": p[9], "score": 1.0, "because": p[8]}], v1, db=db)
    published.forget()
    assert list_state.generation() == v1
    list_state.announce("rt-rs-active1", '"cached-under-v1"')

    v2 = publish_model(celery_env.in_model, seed=2)
    published.forget()  # (each process reads CURRENT again within published.CHECK_S)
    # The new CURRENT is the cache generation: what was kept under v1 is not read any more.
    assert list_state.generation() == v2
    assert list_state.current("rt-rs-active1", list_state.generation()) is None
    assert rescore_active_users(v2) == 2
    model = artifacts.load_model(v2)
    for user in ("rt-rs-active1", "rt-rs-active2"):
        doc = stored_lists.get_recommendations(user, db=db)
        assert doc["model_version"] == v2
        want = recommend.recommend(model, rating_history.user_ratings(user, db=db), TOP_N)
        assert [i["product_id"] for i in doc["items"]] == [w["product_id"] for w in want]
    assert stored_lists.get_recommendations("rt-rs-idle", db=db)["model_version"] == v1, "inactive users are left alone"
    assert list_state.current("rt-rs-active1", v2) == list_state.version_of(stored_lists.get_recommendations("rt-rs-active1", db=db))
    assert _redis().get(LAST_RESCORED_MODEL) == v2.encode()


def test_rescore_folds_users_in_with_one_blas_thread(celery_env, monkeypatch):
    """As in the rating workers: one user's 64 x 64 solve and scores gain nothing from OpenBLAS's
    second thread, whose wait for the next call spins a core (1.6x the CPU per user at 10k items,
    the same wall time, docs/benchmarks.md) beside the workers and the database."""
    import threadpoolctl

    from kafka_workers.tasks import rescore_active_users

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}

    db, p = celery_env.db, celery_env.products
    db[mongo.RATINGS].delete_many({})
    _rate(db, "rt-rs-blas", p[5], 5, time.time() - 60)
    version = publish_model(celery_env.in_model, seed=3)
    seen, real = [], recommend.recommend
    monkeypatch.setattr(recommend, "recommend", lambda *a, **kw: seen.append(blas_threads()) or real(*a, **kw))
    # OpenBLAS's default on two cores, whatever an in-process worker of an earlier test left set
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        assert blas_threads() == {2}
        assert rescore_active_users(version) == 1
        assert blas_threads() == {2}  # the limit ends with the task
    assert seen == [{1}]


@pytest.mark.slow
def test_celery_worker_with_beat_refreshes_lists_and_rescores_after_a_new_model(celery_env, tmp_path):
    db, p = celery_env.db, celery_env.products
    db[mongo.POPULAR].delete_many({})
    _forget_live_ratings(db)
    _redis().delete(LAST_RESCORED_MODEL)
    v1 = publish_model(celery_env.in_model, seed=11)
    _rate(db, "rt-cw-1", p[20], 5, time.time() - 60)
    env = process_env(POPULAR_REFRESH_S="1", TRENDING_REFRESH_S="1", MODEL_CHECK_S="1")
    celery = Proc([sys.executable, "-m", "celery", "-A", "kafka_workers.celery_app", "worker", "-B",
                   "-s", str(tmp_path / "beat-schedule"), "--concurrency", "1", "-l", "info"],
                  env, tmp_path / "celery.log")
    try:
        # refresh_popular writes "all" first, then each category: wait for the last one.
        wait_until(lambda: _alive(celery) and stored_lists.get_popular(CATEGORIES[-1], "popular", db=db), 120,
                   "beat + worker to write popular lists")
        assert [i["product_id"] for i in stored_lists.get_popular("all", "popular", db=db)][:3] == p[:3]
        assert [i["product_id"] for i in stored_lists.get_popular("Drums", "popular", db=db)][:3] == \
            [x for x in p if catalog.get_product(x, db=db)["category"] == "Drums"][:3]
        wait_until(lambda: [i["product_id"] for i in stored_lists.get_popular("all", "trending", db=db)] == [p[20]], 60,
                   "the trending list")
        # check_model sees the published version and re-scores the active user once.
        wait_until(lambda: _redis().get(LAST_RESCORED_MODEL) == v1.encode(), 60, "re-scoring with v1")
        assert stored_lists.get_recommendations("rt-cw-1", db=db)["model_version"] == v1

        _rate(db, "rt-cw-1", p[21], 4, time.time() - 30)
        v2 = publish_model(celery_env.in_model, seed=12)
        wait_until(lambda: _redis().get(LAST_RESCORED_MODEL) == v2.encode(), 60, "re-scoring after the new model")
        doc = stored_lists.get_recommendations("rt-cw-1", db=db)
        assert doc["model_version"] == v2
        assert not {i["product_id"] for i in doc["items"]} & {p[20], p[21]}
        wait_until(lambda: {i["product_id"] for i in stored_lists.get_popular("all", "trending", db=db)} == {p[20], p[21]},
                   60, "trending to pick up the new rating")
        assert celery.alive()
    finally:
        celery.signal(signal.SIGTERM)
        code = celery.wait(60)
        print(celery.log()[-4000:])
    assert code == 0, "warm shutdown on SIGTERM"
    assert "refresh_popular" in celery.log() and "rescore_active_users" in celery.log()


def _trending(db) -> set[str]:
    return {i["product_id"] for i in stored_lists.get_popular("all", "trending", db=db)}


@pytest.mark.slow
def test_trending_refreshes_while_a_rescore_runs_in_the_second_worker(celery_env, tmp_path):
    """The periodic refreshes are not held behind a re-scoring (which may run for hours).

    bin/services starts Celery as it does for the site (a private state dir, this module's Redis
    database): beat, the refreshes and check_model in one worker, the re-score in the other. The
    re-score is kept running by a real wait: another writer holds its first user's list lock (as a
    Kafka worker does while it writes that user's list). While it waits there, with its running mark
    set, a rating made after it started reaches the trending list: a refresh ran meanwhile. In the one
    worker of before, the refresh could only run after the re-score gave up on the lock (30 s).
    """
    from kafka_workers import tasks

    db, p = celery_env.db, celery_env.products
    r = _redis()
    db[mongo.POPULAR].delete_many({})
    _forget_live_ratings(db)  # the earlier tests' votes, in histories and in Redis
    r.delete(LAST_RESCORED_MODEL, "celery", "rescore")
    held_user = "rt-q-held"
    _rate(db, held_user, p[50], 5, time.time() - 60)
    # Its "at" lies ahead, so the re-score does not take it for a dead writer's lock (LOCK_STALE_S)
    # while the test holds it; it waits up to named_lock's 30 s, then fails.
    lock = locking.writer_lock_name(held_user)
    db[mongo.EVENT_CLAIMS].delete_one({"_id": lock})
    db[mongo.EVENT_CLAIMS].insert_one(locking.lock_doc(lock, "test-holder", time.time() + 3600))
    state = tmp_path / "state"
    env = process_env(SERVICES_STATE_DIR=str(state), TRENDING_REFRESH_S="1", MODEL_CHECK_S="1",
                      POPULAR_REFRESH_S="3600")

    def services(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SERVICES), *args], env=env, capture_output=True, text=True, timeout=300)

    def log(name: str) -> str:
        path = state / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    started = services("start", "celery")
    try:
        assert started.returncode == 0, f"{started.stdout}\n{started.stderr}"
        wait_until(lambda: _trending(db) == {p[50]}, 120, "beat + worker to write the trending list")
        version = publish_model(celery_env.in_model, seed=41)
        wait_until(lambda: r.exists(tasks._running_key(version)), 120, "check_model to queue the re-score and it to start")

        _rate(db, "rt-q-other", p[51], 5, time.time() - 30)  # after the re-score started
        # 20 s: well within the re-score's 30 s wait for the lock, after which it would fail and free
        # a single worker (the refresh itself runs every second)
        wait_until(lambda: _trending(db) == {p[50], p[51]}, 20, "a trending refresh while the re-score runs")
        assert r.exists(tasks._running_key(version)), "the re-score ended before the refresh"
        assert r.get(LAST_RESCORED_MODEL) != version.encode()
        assert stored_lists.get_recommendations(held_user, db=db) is None  # the re-score is still at its lock

        db[mongo.EVENT_CLAIMS].delete_one({"_id": lock, "token": "test-holder"})  # the other writer is done
        wait_until(lambda: r.get(LAST_RESCORED_MODEL) == version.encode(), 60, "the re-score to finish")
        assert stored_lists.get_recommendations(held_user, db=db)["model_version"] == version
        assert not r.exists(tasks._running_key(version))

        # bin/services ran the two as programs of their own, each with its log: "celery" started both
        status = services("status", "celery")
        assert status.returncode == 0, status.stdout
        assert [line.split()[:2] for line in status.stdout.splitlines()] == [["celery", "running"],
                                                                              ["celery-rescore", "running"]]
        default_log, rescore_log = log("celery"), log("celery-rescore")
        ran = lambda task, text: f"tasks.{task}[" in text  # "Task kafka_workers.tasks.<name>[<id>] received"
        assert ran("rescore_active_users", rescore_log) and not ran("rescore_active_users", default_log)
        assert ran("refresh_trending", default_log) and not ran("refresh_trending", rescore_log)
        assert "beat: Starting" in default_log and "beat: Starting" not in rescore_log
    finally:
        db[mongo.EVENT_CLAIMS].delete_one({"_id": lock, "token": "test-holder"})
        stopped = services("stop", "celery")
        print(stopped.stdout, stopped.stderr, log("celery")[-3000:], log("celery-rescore")[-3000:], sep="\n")
    assert "celery-rescore: stopped" in stopped.stdout and "celery: stopped" in stopped.stdout
    assert services("status", "celery").returncode == 3


def test_check_model_queues_one_rescore_per_model_version(celery_env):
    """Beat runs check_model every 15 s; until the first rescore finishes it must not queue more.

    check_model runs in a child process (it queues through the app's broker, which is bound to
    REDIS_URL when the app is made), so the queue is this module's own Redis database; nothing
    consumes it, and the re-score queue's length is the number of rescores queued.
    """
    r = _redis()
    r.delete("celery", "rescore", LAST_RESCORED_MODEL)
    version = publish_model(celery_env.in_model, seed=31)
    code = ("from kafka_workers.tasks import check_model\n"
            "print([check_model() for _ in range(3)])\n")
    out = subprocess.run([sys.executable, "-c", code], env=process_env(), cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    queued = [json.loads(m)["headers"] for m in r.lrange("rescore", 0, -1)]
    rescores = [h for h in queued if h["task"] == "kafka_workers.tasks.rescore_active_users"]
    assert len(rescores) == 1, f"{len(rescores)} rescores queued for one model version: {out.stdout}"
    assert version in rescores[0]["argsrepr"]
    assert r.llen("celery") == 0, "a rescore in the default queue waits behind, and holds up, the refreshes"
    r.delete("rescore")


def test_going_back_to_a_version_rescored_before_rescores_it_again(celery_env):
    """Staff make an earlier version current again ("make current" in the admin): the live lists
    were re-scored with the later one since, so this version needs its re-scoring again, at once."""
    from kafka_workers import tasks

    r = _redis()
    r.delete("rescore", LAST_RESCORED_MODEL)
    first = publish_model(celery_env.in_model, seed=33)
    code = "from kafka_workers.tasks import check_model\nprint(check_model())\n"

    def check() -> str:
        out = subprocess.run([sys.executable, "-c", code], env=process_env(), cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    assert check() == first
    tasks.rescore_active_users(first)  # as the Celery worker would run what check_model queued
    second = publish_model(celery_env.in_model, seed=34)
    assert check() == second
    tasks.rescore_active_users(second)
    artifacts.publish(first)
    assert check() == first, "the earlier version was not queued for re-scoring again"
    r.delete("rescore")


def test_a_rescore_stops_when_its_version_is_no_longer_current(celery_env, monkeypatch):
    """A newer version published mid-way: the older re-score stops writing lists for a model nobody
    serves, and does not mark itself done (which would hide that the current one still needs it)."""
    from kafka_workers import tasks

    db, p = celery_env.db, celery_env.products
    db[mongo.RATINGS].delete_many({})
    _redis().delete(LAST_RESCORED_MODEL)
    now = time.time()
    for k in range(4):
        _rate(db, f"rt-super-{k}", p[40 + k], 5, now - 60)
    old = publish_model(celery_env.in_model, seed=35)
    original, calls = recommend.recommend, []

    def then_a_newer_model(model, rated, n=20, **kwargs):
        calls.append(model.version)
        if len(calls) == 1:
            publish_model(celery_env.in_model, seed=36)  # published while the old one re-scores
        return original(model, rated, n, **kwargs)

    monkeypatch.setattr(recommend, "recommend", then_a_newer_model)
    assert tasks.rescore_active_users(old, batch_size=1) == 1
    assert calls == [old]
    assert _redis().get(LAST_RESCORED_MODEL) != old.encode()


def test_a_rescore_over_its_time_limit_is_not_queued_again_at_once(celery_env, monkeypatch):
    """One that failed is queued again by the next check_model; one that ran out of time would only
    run out of time again, from its first user, every few seconds: it waits for its mark to expire."""
    from celery.exceptions import SoftTimeLimitExceeded

    from kafka_workers import tasks

    r = _redis()
    r.delete(LAST_RESCORED_MODEL)
    for error, queued_after in ((RuntimeError("MongoDB refused"), False), (SoftTimeLimitExceeded(), True)):
        version = publish_model(celery_env.in_model, seed=37)
        r.set(tasks._queued_key(version), "1")  # as check_model leaves it

        def fail(*args, error=error):
            raise error

        monkeypatch.setattr(tasks, "_rescore", fail)
        with pytest.raises(type(error)):
            tasks.rescore_active_users(version)
        assert bool(r.exists(tasks._queued_key(version))) is queued_after, type(error).__name__
        assert not r.exists(tasks._running_key(version))
        r.delete(tasks._queued_key(version))


def test_a_second_delivery_of_a_running_or_finished_rescore_does_nothing(celery_env, monkeypatch):
    """A redelivered rescore (visibility timeout, a second queueing) while the first still runs, or
    after it finished, must not re-score everybody again."""
    from kafka_workers import tasks
    from kafka_workers.celery_app import app

    db, p = celery_env.db, celery_env.products
    db[mongo.RATINGS].delete_many({})
    _redis().delete(LAST_RESCORED_MODEL)
    now = time.time()
    _rate(db, "rt-once-1", p[30], 5, now - 60)
    _rate(db, "rt-once-2", p[31], 4, now - 60)
    version = publish_model(celery_env.in_model, seed=32)
    original, inside, results = recommend.recommend, threading.Event(), {}

    def slow(model, rated, n=20, **kwargs):  # the first run is in the middle of its users...
        inside.set()
        time.sleep(0.3)
        return original(model, rated, n, **kwargs)

    monkeypatch.setattr(recommend, "recommend", slow)
    first = threading.Thread(target=lambda: results.setdefault("first", tasks.rescore_active_users(version)))
    first.start()
    assert inside.wait(30)
    results["second"] = tasks.rescore_active_users(version)  # ...when the copy arrives
    first.join(60)
    assert results == {"first": 2, "second": 0}
    assert _redis().get(LAST_RESCORED_MODEL) == version.encode()
    assert tasks.rescore_active_users(version) == 0, "a delivery after the run finished re-scored again"

    # And no task may outlive the broker's visibility timeout (Redis would hand it out again).
    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert tasks.rescore_active_users.time_limit < visibility
    assert app.conf.task_time_limit is None or app.conf.task_time_limit < visibility


def test_the_running_mark_is_renewed_and_dropped_only_by_its_holder_on_redis(celery_env):
    """The compare-and-set scripts that tests/unit/test_rescore_handover.py's stand-in imitates."""
    from kafka_workers import tasks

    r, key = _redis(), tasks._running_key("rt-mark")
    r.delete(key)
    try:
        assert tasks._renew_mark(r, "rt-mark", "A")  # nobody's (it expired): taken
        assert r.get(key) == b"A" and 0 < r.ttl(key) <= tasks.RUNNING_LEASE_S
        assert tasks._renew_mark(r, "rt-mark", "A")
        assert not tasks._renew_mark(r, "rt-mark", "B") and r.get(key) == b"A"
        assert not tasks._drop_mark(r, "rt-mark", "B") and r.get(key) == b"A"
        assert tasks._drop_mark(r, "rt-mark", "A") and r.get(key) is None
        assert not tasks._drop_mark(r, "rt-mark", "A")
    finally:
        r.delete(key)
