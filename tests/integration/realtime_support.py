"""Shared helpers of the real-time tests (workers, dead letters, reliability, Celery).

Everything here talks to real servers: a small synthetic catalog goes into MongoDB through
``core.mongo``, a small synthetic ALS model is saved and published through ``core.artifacts``, and
workers run as real ``python -m kafka_workers.worker`` processes whose environment names the test's
own database, artifacts directory, topics and consumer group. Nothing the shared services or other
tests use is touched: every test gets its own topics (deleted afterwards) and every module its own
database and artifacts directory.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "bin" / "services"
CATEGORIES = ("Guitars", "Drums", "Keyboards")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.2) -> Any:
    """Poll until ``predicate()`` is truthy and return it; fail with ``what`` after ``timeout_s``.

    The timeout is a liveness bound (generous, for a loaded 2-core machine), not a speed check.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


def runs_below(p: subprocess.Popen, program: str, *args: str) -> bool:
    """Whether a process below ``p`` (a bin/services, say) runs ``program`` (in its command line)
    with each of ``args`` among its arguments: ``runs_below(p, "programs.py", "wait")``, it waits
    for a health check."""
    import psutil

    def runs(c: psutil.Process) -> bool:
        cmdline = c.cmdline()
        return program in " ".join(cmdline) and all(a in cmdline for a in args)
    try:
        return any(runs(c) for c in psutil.Process(p.pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return False


def own_database(monkeypatch, base_name: str, suffix: str, **env: str):
    """A test's own MongoDB database, ``<base_name>_<suffix>``, with ``env`` set beside ``MONGO_DB``;
    dropped afterwards and the environment restored (a fixture: ``yield from own_database(...)``)."""
    from core import mongo

    name = f"{base_name}_{suffix}"[:60]
    for key, value in {**env, "MONGO_DB": name}.items():
        monkeypatch.setenv(key, value)
    reset_core_caches()
    yield mongo.get_db()
    mongo.get_client().drop_database(name)
    monkeypatch.undo()
    reset_core_caches()


def reset_core_caches(mongo_uri_changed: bool = False) -> None:
    """Forget cached settings (and the producer, and on request the MongoDB clients) after the
    environment changed. ``mongo.get_client()`` caches the client of the first URI under ``None``."""
    from core import kafka_io, mongo
    from core.settings import get_settings

    get_settings.cache_clear()
    mongo.forget_pointers()  # which generation / model version a collection name means (and CURRENT)
    for breaker in (getattr(kafka_io, "BREAKER", None), getattr(mongo, "BREAKER", None)):
        if breaker is not None:  # the servers changed: what failed before says nothing now
            breaker.success()
    if kafka_io.get_producer.cache_info().currsize:
        try:
            kafka_io.get_producer().close(timeout=2)
        except Exception:
            pass
    kafka_io.get_producer.cache_clear()
    if mongo_uri_changed:
        mongo.get_client.cache_clear()


# --- catalog and model ----------------------------------------------------------------------

def product_id(i: int) -> str:
    return f"RT{i:05d}"


def seed_catalog(n_products: int, db=None) -> list[str]:
    """Products ``RT00000..`` (most reviewed first) with the ``_id``-keyed catalog order documents
    the batch load writes (``<category>:0``, ``<category>:count``, ``categories``), which the
    popular fallback and Celery's popular lists read."""
    from core import mongo

    ids = [product_id(i) for i in range(n_products)]
    docs = [{"_id": pid, "title": f"Synthetic product {i}", "category": CATEGORIES[i % len(CATEGORIES)],
             "n_reviews": n_products - i, "avg_rating": 4.0, "price": None, "brand": "RT"}
            for i, pid in enumerate(ids)]
    mongo.bulk_upsert(mongo.PRODUCTS, docs, db=db)
    index = [{"_id": f"{mongo.ALL}:0", "ids": ids}, {"_id": f"{mongo.ALL}:count", "n": len(ids)}]
    cats = []
    for c in CATEGORIES:
        members = [d["_id"] for d in docs if d["category"] == c]
        index += [{"_id": f"{c}:0", "ids": members}, {"_id": f"{c}:count", "n": len(members)}]
        cats.append({"name": c, "n_products": len(members)})
    index.append({"_id": "categories", "items": cats})
    mongo.bulk_upsert(mongo.CATALOG_INDEX, index, db=db)
    return ids


def publish_model(item_ids: list[str], rank: int = 8, seed: int = 0, **params: Any) -> str:
    """Save and publish a synthetic implicit-ALS model over ``item_ids``; returns its version."""
    from core import artifacts

    rng = np.random.default_rng(seed)
    factors = (rng.normal(size=(len(item_ids), rank)) / np.sqrt(rank)).astype(np.float32)
    version = artifacts.save_model(item_ids, factors,
                                   {"kind": "ials", "reg": 0.1, "alpha": 10.0, "weight": "rating", **params},
                                   metrics={"synthetic": True, "seed": seed})
    artifacts.publish(version)
    return version


# --- Kafka ----------------------------------------------------------------------------------

def topics_env(tag: str) -> dict[str, str]:
    """Fresh topic names and consumer group for one test."""
    base = f"rt-{tag}-{uuid.uuid4().hex[:8]}"
    return {"KAFKA_RATINGS_TOPIC": f"{base}.ratings", "KAFKA_DEAD_LETTER_TOPIC": f"{base}.dead-letter",
            "KAFKA_WORKER_GROUP": f"{base}.workers"}


def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="rt-tests-cleanup")
    except Exception:  # the broker of a failed test may be gone; nothing to clean then
        return
    try:
        existing = set(admin.list_topics())
        wanted = [n for n in names if n in existing]
        if wanted:
            admin.delete_topics(wanted)
    except Exception:
        pass
    finally:
        admin.close()


def send_raw(value: bytes | None, key: bytes | None = None, topic: str | None = None) -> tuple[int, int]:
    """Publish arbitrary bytes (a poison event) the way a buggy producer would; (partition, offset)."""
    from core import kafka_io
    from core.settings import get_settings

    meta = kafka_io.get_producer().send(topic or get_settings().ratings_topic, key=key, value=value).get(timeout=10)
    return meta.partition, meta.offset


def read_topic(topic: str, expected: int, timeout_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` from the beginning, once at least ``expected`` are there."""
    from kafka import KafkaConsumer, TopicPartition
    from core.settings import get_settings

    consumer = KafkaConsumer(bootstrap_servers=get_settings().kafka_bootstrap_servers, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        parts = wait_until(lambda: consumer.partitions_for_topic(topic), 30, f"metadata of {topic}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def committed_and_end_offsets(group: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """The group's committed offset and the log-end offset of every partition of ``topic``."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    from core.settings import get_settings

    bootstrap = get_settings().kafka_bootstrap_servers
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="rt-tests-offsets")
    try:
        committed = {tp.partition: meta.offset
                     for tp, meta in admin.list_consumer_group_offsets(group).items() if tp.topic == topic}
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        ends = {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()
    return committed, ends


# --- rating events --------------------------------------------------------------------------

def make_events(users: list[str], products: list[str], per_user: int, seed: int = 0) -> list:
    """Distinct products per user, ratings 1-5, increasing timestamps; interleaved across users."""
    from core.events import RatingEvent

    rng = np.random.default_rng(seed)
    base = time.time() - len(users) * per_user * 1e-3  # the last one is "now"
    chosen = {u: rng.choice(len(products), size=per_user, replace=False) for u in users}
    events, n = [], 0
    for k in range(per_user):
        for u in users:
            events.append(RatingEvent(user_id=u, product_id=products[int(chosen[u][k])],
                                      rating=int(rng.integers(1, 6)), ts=base + n * 1e-3))
            n += 1
    return events


def publish_all(events: list, retry_until_s: float = 0.0) -> int:
    """Publish through ``core.kafka_io.publish_event`` (the site's path), one acknowledged send
    each. With ``retry_until_s`` a refused send (broker down) is retried with the same event, as a
    user pressing the button again would; returns how many sends were refused on the way."""
    from core import kafka_io

    refused = 0
    for event in events:
        deadline = time.monotonic() + retry_until_s
        while True:
            try:
                kafka_io.publish_event(event)
                break
            except kafka_io.PublishError:
                refused += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    return refused


def last_event_per_user(events: list) -> dict[str, Any]:
    last: dict[str, Any] = {}
    for e in events:
        last[e.user_id] = e
    return last


def expected_history(events: list) -> dict[str, dict[str, float]]:
    """What each user's history must hold: every rated product, latest rating wins."""
    hist: dict[str, dict[str, tuple[float, float]]] = {}
    for e in events:
        cur = hist.setdefault(e.user_id, {}).get(e.product_id)
        if cur is None or cur[1] <= e.ts:
            hist[e.user_id][e.product_id] = (float(e.rating), e.ts)
    return {u: {p: r for p, (r, _) in h.items()} for u, h in hist.items()}


# --- worker processes -----------------------------------------------------------------------

def process_env(**extra: str) -> dict[str, str]:
    """This test's environment for a child process (database, topics, artifacts, servers)."""
    from core.settings import get_settings

    s = get_settings()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MONGO_URI": s.mongo_uri, "MONGO_DB": s.mongo_db,
           "KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers, "KAFKA_RATINGS_TOPIC": s.ratings_topic,
           "KAFKA_DEAD_LETTER_TOPIC": s.dead_letter_topic,
           "ARTIFACTS_DIR": str(s.artifacts_dir), "REDIS_URL": s.redis_url, "RECS_TOP_N": str(s.top_n),
           "LOG_LEVEL": "INFO"}
    # pytest-django exports DJANGO_SETTINGS_MODULE; Celery would then set Django up (the workers
    # and tasks do not use it, and bin/services does not set it either).
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(extra)
    return env


class Proc:
    """A child process (worker, Celery) with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout_s: float) -> int:
        return self.popen.wait(timeout=timeout_s)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL the process group if it does not exit (teardown only)."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        self._log.close()
        return self.popen.returncode


_METRICS_PORTS: dict[int, int] = {}  # a started worker's pid -> the port of its /metrics


def start_worker(env: dict[str, str], log_path: Path) -> Proc:
    """A worker process serving /metrics (on a free port unless ``env`` names one), read by
    :func:`worker_stats`."""
    env = dict(env)
    if not env.get("WORKER_METRICS_PORT"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            env["WORKER_METRICS_PORT"] = str(s.getsockname()[1])
    env.pop("WORKER_PROCESS_NUM", None)
    proc = Proc([sys.executable, "-m", "kafka_workers.worker"], env, log_path)
    _METRICS_PORTS[proc.pid] = int(env["WORKER_METRICS_PORT"])
    return proc


def worker_stats(pid: int) -> dict | None:
    """What the worker with ``pid`` (started by :func:`start_worker`) says on /metrics: its count of
    each outcome, ``lag`` (None: not known yet), ``model_version`` and the rating -> list latency's
    ``latency_ms_p50``/``_p99`` (from the histogram's buckets); None while it does not answer."""
    import math
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from core import freshness
    from kafka_workers.outcomes import STATUSES

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{_METRICS_PORTS[pid]}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    stats: dict[str, Any] = {**dict.fromkeys(STATUSES, 0), "lag": None, "model_version": None}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "recommender_worker_events_total":
                stats[sample.labels["outcome"]] = int(sample.value)
            elif sample.name == "recommender_worker_lag" and not math.isnan(sample.value):
                stats["lag"] = int(sample.value)
            elif sample.name == "recommender_worker_model_info":
                stats["model_version"] = sample.labels.get("version")  # (none before the first report)
            elif sample.name == freshness.HISTOGRAM + "_bucket":
                buckets[float(sample.labels["le"])] = sample.value
    for name, q in (("latency_ms_p50", 0.5), ("latency_ms_p99", 0.99)):
        seconds = freshness.quantile(q, buckets)
        stats[name] = None if seconds is None else seconds * 1000
    return stats


# --- checks ---------------------------------------------------------------------------------

def processed_ids(event_ids: Iterable[str], db) -> set[str]:
    """Which of these events MongoDB holds as processed (one ``_id`` read each)."""
    from core import mongo

    out = set()
    for eid in event_ids:
        doc = db[mongo.RATINGS].find_one({"_id": eid}, {"state": 1})
        if doc and doc.get("state") == "processed":
            out.add(eid)
    return out


def count_processed(db, user_prefix: str) -> int:
    """Processed ratings of users whose id starts with ``user_prefix`` (a scan; small tests only)."""
    from core import mongo

    return db[mongo.RATINGS].count_documents({"user_id": {"$regex": f"^{user_prefix}"}, "state": "processed"})


def check_users_current(events: list, db, model_version: str, top_n: int) -> None:
    """Each user's list comes from their last event, excludes everything they rated, uses the
    model, and their history holds every rating (latest wins)."""
    from core import rating_history, stored_lists

    want_hist = expected_history(events)
    problems = []
    for user, last in last_event_per_user(events).items():
        doc = stored_lists.get_live_recommendations(user, db=db)
        hist = rating_history.user_ratings(user, db=db)
        if doc is None:
            problems.append(f"{user}: no recommendations")
            continue
        if doc.get("source_event_id") != last.event_id:
            problems.append(f"{user}: list from {doc.get('source_event_id')}, last event {last.event_id}")
        if doc.get("model_version") != model_version:
            problems.append(f"{user}: model {doc.get('model_version')} != {model_version}")
        items = [i["product_id"] for i in doc.get("items", [])]
        if len(items) != top_n or len(set(items)) != top_n:
            problems.append(f"{user}: {len(items)} items ({len(set(items))} distinct), want {top_n}")
        if set(items) & set(want_hist[user]):
            problems.append(f"{user}: recommends rated items {sorted(set(items) & set(want_hist[user]))[:3]}")
        if hist != want_hist[user]:
            problems.append(f"{user}: history {len(hist)} items != expected {len(want_hist[user])}")
        if len(problems) > 20:
            break
    assert not problems, "\n".join(problems[:20])


# --- fixtures (imported by the test modules) ------------------------------------------------

N_PRODUCTS = 300
N_IN_MODEL = 250  # the last 50 catalog products are unknown to the model (popular fallback)
TOP_N = 10


@pytest.fixture(scope="module")
def rt_catalog(request, settings, mongo_db, kafka_topics, redis_url):
    """This module's own database with the synthetic catalog (the session's stays untouched)."""
    from core import mongo

    tag = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    name = f"{settings.mongo_db}_{tag}"[:60]
    mp = pytest.MonkeyPatch()
    mp.setenv("MONGO_DB", name)
    mp.setenv("RECS_TOP_N", str(TOP_N))
    reset_core_caches()
    _new_site_catalog()
    try:
        db = mongo.get_db()
        mongo.ensure_indexes(db)
        products = seed_catalog(N_PRODUCTS, db=db)
        yield SimpleNamespace(db=db, products=products, in_model=products[:N_IN_MODEL],
                              not_in_model=products[N_IN_MODEL:])
    finally:
        if os.environ.get("KEEP_TEST_DB") != "1":
            mongo.get_client().drop_database(name)
            from core import trending

            trending.drop_state(name)  # the workers' marks for the refresh (they expire, but go now)
        mp.undo()
        reset_core_caches()
        _new_site_catalog()


def _new_site_catalog() -> None:
    """A catalog revision of its own for the site's cached pages while this module's catalog is
    loaded, and again after it. A deployment keeps its database's pages apart by the cache prefix
    (``DJANGO_CACHE_PREFIX``, default the MongoDB database); the test session shares one prefix
    (the ``site_cache`` fixture) between the storefront's catalog and the modules' own, and with
    the same model published the storefront was served this module's catalog page. Only under the
    session's prefix: never the default one a site on this machine uses."""
    from django.conf import settings as dj

    if "-test-" in dj.CACHES["default"].get("KEY_PREFIX", ""):
        from core import catalog_revision

        catalog_revision.bump()


@pytest.fixture
def worker_env(rt_catalog, tmp_path, monkeypatch):
    """Settings of a test that calls the worker's code in-process: its own artifacts folder (for
    the models it publishes) and lists of ``TOP_N``."""
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("RECS_TOP_N", str(TOP_N))
    reset_core_caches()


def forget_users(db, users: Iterable[str]) -> None:
    """Nothing of these users in the worker's collections (history, list, exclusions, deletion,
    live ratings): the tests of a module share its database, and each starts its users fresh."""
    from core import mongo

    for user in users:
        for name in (mongo.USER_HISTORY, mongo.RECOMMENDATIONS, mongo.EXCLUSIONS, mongo.DELETED_USERS):
            db[name].delete_one({"_id": user})
        db[mongo.RATINGS].delete_many({"user_id": user})


@pytest.fixture
def rt(request, rt_catalog, tmp_path):
    """One test's topics, consumer group and published model, and its worker processes."""
    from core import kafka_io
    from core.settings import get_settings

    names = topics_env(request.node.name[:20].replace("[", "-").replace("]", "").replace("_", "-").lower())
    mp = pytest.MonkeyPatch()
    for k, v in names.items():
        mp.setenv(k, v)
    mp.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    reset_core_caches()
    procs: list[Proc] = []

    def start(**extra: str) -> Proc:
        proc = start_worker(process_env(**extra), tmp_path / f"worker-{len(procs)}.log")
        procs.append(proc)
        return proc

    try:
        kafka_io.ensure_topics()
        version = publish_model(rt_catalog.in_model)
        yield SimpleNamespace(db=rt_catalog.db, catalog=rt_catalog, version=version, group=names["KAFKA_WORKER_GROUP"],
                              topic=names["KAFKA_RATINGS_TOPIC"], dead_letter_topic=names["KAFKA_DEAD_LETTER_TOPIC"],
                              start_worker=start, procs=procs, tmp=tmp_path)
    finally:
        for proc in procs:
            proc.stop()
            print(f"--- {proc.log_path.name} (exit {proc.popen.returncode}) ---\n{proc.log()[-4000:]}")
        delete_topics(get_settings().kafka_bootstrap_servers, [v for k, v in names.items() if k.endswith("TOPIC")])
        mp.undo()
        reset_core_caches()


@pytest.fixture(scope="module")
def private_services(tmp_path_factory, settings, redis_url):
    """A private FerretDB and Kafka on free ports (``bin/services`` with ``SERVICES_STATE_DIR``), for
    tests that stop and restart them; stopped at the end even if a test failed. The shared servers
    are never touched."""
    state = tmp_path_factory.mktemp("services-state")
    ports = {"MONGO_PORT": free_port(), "KAFKA_PORT": free_port(), "KAFKA_CONTROLLER_PORT": free_port()}
    env = {k: v for k, v in os.environ.items() if k not in {"MONGO_URI", "KAFKA_BOOTSTRAP_SERVERS"}}
    env.update({"SERVICES_STATE_DIR": str(state), **{k: str(v) for k, v in ports.items()}})

    def services(*args: str) -> str:
        r = subprocess.run([str(SERVICES), *args], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"bin/services {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
        return r.stdout

    mp = pytest.MonkeyPatch()
    try:
        services("start", "mongo", "kafka")
        mp.setenv("MONGO_URI", f"mongodb://127.0.0.1:{ports['MONGO_PORT']}/")
        mp.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{ports['KAFKA_PORT']}")
        mp.setenv("RECS_TOP_N", str(TOP_N))
        reset_core_caches(mongo_uri_changed=True)
        yield SimpleNamespace(services=services, state=state, ports=ports)
    finally:
        try:
            out = subprocess.run([str(SERVICES), "stop", "kafka", "mongo"], env=env, capture_output=True,
                                 text=True, timeout=300)
            print(out.stdout, out.stderr)
        finally:
            mp.undo()
            reset_core_caches(mongo_uri_changed=True)
