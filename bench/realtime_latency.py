"""Real-time path benchmark: from the rating POST to the new recommendations the page can read.

    python bench/realtime_latency.py                      # full size: 1,000 ratings at 10k and 1M items
    python bench/realtime_latency.py --ratings 200 --sizes 10000 --throughput-events 1000   # quick check
    python bench/realtime_latency.py --controls --sizes 10000 --throughput-events 0   # + removals, "not interested"
    python bench/realtime_latency.py --via publish --sizes 10000 --throughput-events 0 --ratings 0 \
        --backlog 1000000 --backlog-old 3000 --backlog-workloads sessions   # a 1M-event backlog drained by one worker

Needs the local services (``bin/services start redis mongo kafka``). Everything the run writes is
its own and is removed at the end: a MongoDB database ``bench_rt_<id>``, Kafka topics
``bench-rt-<id>.*``, a consumer group, a temporary artifacts directory, and, with ``--via http``
(the default), a private gunicorn started through ``bin/services start web`` (bench/site_server.py).

Latency (one rating at a time, like a person clicking): for each catalog size a synthetic ALS model
(``--rank`` factors per item, Gaussian) is published and one worker process
(``python -m kafka_workers.worker``) is started. Each rating is then

  * ``--via http``: ``POST /api/ratings/`` to the real site over HTTP with a user's API token (the
    DRF view validates it, checks the product in MongoDB, records the submission in Django's
    database and publishes with ``core.kafka_io.publish_event``, waiting for the broker's ack);
  * ``--via publish``: ``core.kafka_io.publish_event`` called directly, as the site does;

and the clock stops when ``recommendations.<user>`` in MongoDB carries the rating's event id as
``source_event_id`` and its version is announced in Redis (``core.list_state``: what ``GET
/api/recommendations/`` and the page check first). The loop reads Redis, then MongoDB, whenever the
announcement may have changed: ``--wait notify`` (the default) wakes it on Redis's keyspace
notification for the user's key, so the time is not rounded up to the next poll and the loop takes
no CPU from the two cores while it waits; ``--wait poll`` reads every ``--poll-ms`` (the figures
in docs/benchmarks.md before 2026-12-03). Every 50th rating is also read back through ``GET /api/recommendations/``.

Throughput: ``--throughput-events`` events are published in one burst (pipelined, acks=all) to
fresh topics while 1 and then 2 worker processes consume; events/s = events / time until the
group's committed offsets reach the end of the log (a worker commits only after MongoDB has the
result), with the 10k-item model.

The catalog in MongoDB holds ``--catalog-docs`` products (the ones rated, plus the rest of the
pool); the model scores all of its items for every rating. The fixed-sleep design this replaces
answered after a constant 10 s; it is printed as the reference line.
"""
from __future__ import annotations

import argparse
import atexit
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXED_SLEEP_MS = 10_000.0


def _machine() -> dict:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "loadavg_start": os.getloadavg()}


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _isolate(run_id: str, artifacts: Path) -> dict[str, str]:
    """Point this process (and the children it starts) at the run's own database, topics, folders."""
    env = {"MONGO_DB": f"bench_rt_{run_id}", "ARTIFACTS_DIR": str(artifacts),
           "KAFKA_WORKER_GROUP": f"bench-rt-{run_id}.workers", "DJANGO_CACHE_PREFIX": f"bench-rt-{run_id}",
           "RECS_TOP_N": os.environ.get("RECS_TOP_N", "20"), "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"}
    os.environ.update(env)
    _topics(f"bench-rt-{run_id}")
    return env


def _topics(base: str) -> None:
    from core import kafka_io
    from core.settings import get_settings

    os.environ.update({"KAFKA_RATINGS_TOPIC": f"{base}.ratings", "KAFKA_DEAD_LETTER_TOPIC": f"{base}.dead-letter"})
    get_settings.cache_clear()
    kafka_io.ensure_topics()


def _topic_names() -> list[str]:
    from core.settings import get_settings

    s = get_settings()
    return [s.ratings_topic, s.dead_letter_topic]


def item_id(i: int) -> str:
    return f"P{i:07d}"


def seed_catalog(n_docs: int) -> None:
    """Products P0000000.. (most reviewed first) and the catalog order the popular fallback reads."""
    from core import mongo

    db = mongo.get_db()
    ids = [item_id(i) for i in range(n_docs)]
    for lo in range(0, n_docs, 20_000):
        mongo.insert_docs(mongo.PRODUCTS, ({"_id": pid, "title": f"Bench product {lo + k}", "category": "Bench",
                                            "n_reviews": n_docs - lo - k, "avg_rating": 4.0}
                                           for k, pid in enumerate(ids[lo:lo + 20_000])), db=db)
    mongo.bulk_upsert(mongo.CATALOG_INDEX, [{"_id": "all:0", "ids": ids[:mongo.CATALOG_CHUNK]},
                                            {"_id": "all:count", "n": n_docs}], db=db)


def publish_model(n_items: int, rank: int, seed: int = 0) -> str:
    from core import artifacts

    rng = np.random.default_rng(seed)
    factors = (rng.standard_normal((n_items, rank), dtype=np.float32) / np.float32(np.sqrt(rank)))
    version = artifacts.save_model([item_id(i) for i in range(n_items)], factors,
                                   {"kind": "ials", "reg": 0.1, "alpha": 10.0, "weight": "rating"},
                                   metrics={"synthetic": True})
    artifacts.publish(version)
    return version


class Workers:
    """``python -m kafka_workers.worker`` processes with this run's environment."""

    def __init__(self, n: int, log_dir: Path, code: Path = ROOT, trace_dir: Path | None = None) -> None:
        """``code``: the checkout whose worker runs (another commit's, for a same-run comparison);
        ``trace_dir``: run them as ``bench.worker_trace``, each recording its batches and MongoDB
        commands there (this checkout's bench; the worker's code is ``code``'s)."""
        self.procs = []
        command, env = ["-m", "kafka_workers.worker"], {**os.environ, "LOG_LEVEL": "INFO", "PYTHONPATH": str(code)}
        if trace_dir is not None:  # by its path: `code` may be a checkout without it
            command, env["WORKER_TRACE_DIR"] = [str(ROOT / "bench" / "worker_trace.py")], str(trace_dir)
        for i in range(n):
            log = open(log_dir / f"worker-{time.time_ns()}-{i}.log", "ab")
            self.procs.append(subprocess.Popen([sys.executable, *command], cwd=code, env=env,
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the worker processes have used so far: a cost per event that
        a busy machine's noise hardly moves, unlike latency."""
        tick, total = os.sysconf("SC_CLK_TCK"), 0.0
        for p in self.procs:
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def wait_group_ready(group: str, topic: str, members: int, timeout_s: float = 120) -> None:
    """Until ``members`` consumers of ``group`` share all partitions of ``topic`` (a stable group).

    A broker started moments before has no group coordinator until it has created its offsets
    topic (the first lookup asks for it): that answer is waited out like an unstable group."""
    from kafka import KafkaAdminClient
    from kafka.errors import CoordinatorNotAvailableError
    from core.settings import get_settings

    admin = KafkaAdminClient(bootstrap_servers=get_settings().kafka_bootstrap_servers)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                desc = admin.describe_consumer_groups([group])[0]
                if desc.state == "Stable" and len(desc.members) == members:
                    return
            except CoordinatorNotAvailableError:
                pass  # no coordinator yet: asked again below, like an unstable group
            time.sleep(0.2)
    finally:
        admin.close()
    raise RuntimeError(f"consumer group {group} did not reach {members} stable member(s)")


def processed_count(user_prefix: str) -> int:
    """Ratings stored as processed for the users whose ids start with ``user_prefix`` (one run's)."""
    from core import mongo

    return mongo.get_db()[mongo.RATINGS].count_documents({"user_id": {"$regex": f"^{user_prefix}"},
                                                          "state": "processed"})


def dead_letter_count() -> int:
    """Messages in this run's dead-letter topic (``KAFKA_DEAD_LETTER_TOPIC``)."""
    from kafka import KafkaConsumer, TopicPartition
    from core.settings import get_settings

    topic = get_settings().dead_letter_topic
    consumer = KafkaConsumer(bootstrap_servers=get_settings().kafka_bootstrap_servers, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return sum(consumer.end_offsets(tps).values()) if tps else 0
    finally:
        consumer.close()


def wait_drained(group: str, topic: str, workers: "Workers", what: str, poll_s: float = 0.2) -> float:
    """Until the committed offsets of ``group`` reach the end of every partition of ``topic`` (a
    worker commits only after MongoDB has the result); returns when that was seen (perf_counter).
    Raises if a worker exits first. One admin client and one consumer for the whole wait."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    from core.settings import get_settings

    bootstrap = get_settings().kafka_bootstrap_servers
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        while True:
            committed = {tp.partition: m.offset for tp, m in admin.list_consumer_group_offsets(group).items()
                         if tp.topic == topic}
            ends = consumer.end_offsets(tps)
            if all(committed.get(tp.partition, 0) >= end for tp, end in ends.items()):
                return time.perf_counter()
            if not workers.alive():
                raise RuntimeError(f"a worker exited during the {what}")
            time.sleep(poll_s)
    finally:
        admin.close()
        consumer.close()


# --- how a rating is sent ---------------------------------------------------------------------

class HttpRater:
    """POST /api/ratings/ to the real site with each user's API token (keep-alive connection)."""

    def __init__(self, site, n_users: int, runs: int = 1) -> None:
        code = (
            "import json\n"
            "from django.contrib.auth.models import User\n"
            "from knox.models import AuthToken\n"
            "from accounts.models import Profile\n"
            "out = []\n"
            f"for run in range({runs}):\n"
            "    out.append([])\n"
            f"    for i in range({n_users}):\n"
            "        u = User(username=f'bench{run}-{i}'); u.set_unusable_password(); u.save()\n"
            "        p = Profile.objects.create(user=u)\n"
            "        out[-1].append((AuthToken.objects.create(u)[1], p.recommender_id))\n"
            "print(json.dumps(out))\n"
        )
        # one set of accounts per run, as PublishRater's ids (see main)
        self.accounts = json.loads(site.manage("shell", "-c", code).stdout.strip().splitlines()[-1])
        self.run = 0
        host, port = site.url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def _request(self, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
        headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                break
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                # gunicorn closes a keep-alive connection after 2 idle seconds (e.g. while the
                # next model loads); the request never reached a view, so sending it again is safe.
                self.conn.close()
                if attempt == 2:
                    raise
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else {})

    @property
    def users(self) -> list[tuple[str, str]]:
        """(API token, recommender id) of this run's accounts."""
        return self.accounts[self.run]

    def rate(self, user: int, product: str, rating: int) -> str:
        token, _ = self.users[user]
        status, body = self._request("POST", "/api/ratings/", token, {"product_id": product, "rating": rating})
        if status != 202:
            raise RuntimeError(f"POST /api/ratings/ answered {status}: {body}")
        return body["event_id"]

    def control(self, user: int, product: str, action: str) -> str:
        """Remove a rating or "not interested", through the site's API."""
        path = "/api/ratings/remove/" if action == "unrate" else "/api/not-interested/"
        token, _ = self.users[user]
        status, body = self._request("POST", path, token, {"product_id": product})
        if status != 202:
            raise RuntimeError(f"POST {path} answered {status}: {body}")
        return body["event_id"]

    def page_sees(self, user: int, event_id: str) -> bool:
        status, body = self._request("GET", "/api/recommendations/", self.users[user][0])
        return status == 200 and body.get("source_event_id") == event_id and body.get("source") == "personal"

    def recommender_id(self, user: int) -> str:
        return self.users[user][1]


class PublishRater:
    """``core.kafka_io.publish_event`` directly, exactly as the site's view does after validation."""

    def __init__(self, n_users: int) -> None:
        self.n_users = n_users
        self.run = 0  # each code's run rates as users of its own (see main)

    def recommender_id(self, user: int) -> str:
        return f"bench-user-{self.run}-{user}"

    def rate(self, user: int, product: str, rating: int) -> str:
        from core import kafka_io
        from core.events import RatingEvent

        event = RatingEvent(user_id=self.recommender_id(user), product_id=product, rating=rating)
        kafka_io.publish_event(event)
        return event.event_id

    def control(self, user: int, product: str, action: str) -> str:
        from core import kafka_io
        from core.events import RatingEvent

        event = RatingEvent(user_id=self.recommender_id(user), product_id=product, rating=0, action=action)
        kafka_io.publish_event(event)
        return event.event_id


def announcement_waiter(mode: str, poll_s: float):
    """``wait(key, deadline)``: returns once the Redis key may have changed, or at the deadline.

    ``poll`` sleeps ``poll_s``. ``notify`` subscribes once to the keyspace notifications of every
    list key of this run (``notify-keyspace-events`` set on the local Redis) and returns on a
    notification for ``key``; one that came before the caller's read only makes it read again.
    """
    if mode == "poll":
        return lambda key, deadline: time.sleep(poll_s)
    import redis

    from core import list_state
    from core.settings import get_settings

    r = redis.Redis.from_url(get_settings().redis_url)  # no socket timeout: it blocks while it waits
    try:
        before = r.config_get("notify-keyspace-events").get("notify-keyspace-events", "")
        r.config_set("notify-keyspace-events", "K$")  # keyspace events of string commands (SET)
    except redis.ResponseError as exc:  # a managed Redis may refuse CONFIG
        raise SystemExit(f"--wait notify needs CONFIG SET on Redis ({exc}); use --wait poll") from exc
    atexit.register(r.config_set, "notify-keyspace-events", before)  # every SET publishes while on
    prefix = f"__keyspace@{r.connection_pool.connection_kwargs.get('db', 0)}__:"
    subscription = r.pubsub(ignore_subscribe_messages=True)
    subscription.psubscribe(prefix + list_state.key("*", "*"))

    def wait(key: str, deadline: float) -> None:
        channel = (prefix + key).encode()
        while (left := deadline - time.perf_counter()) > 0:
            message = subscription.get_message(timeout=left)
            if message is not None and message["channel"] == channel:
                return
    return wait


def measure_latency(rater, n_ratings: int, pool: int, wait, seed: int, warmup: int,
                    controls: bool = False) -> dict:
    """Sequential ratings; POST time and POST-to-readable time for each.

    With ``controls`` each user's events go rate, rate, remove a rating, rate, "not interested", and
    so on; the POST-to-readable times are reported per action.
    """
    from core import list_state, mongo, stored_lists

    rng = np.random.default_rng(seed)
    db = mongo.get_db()
    n_users = len(rater.users) if hasattr(rater, "users") else rater.n_users
    rated: dict[int, set[str]] = {}
    post_ms, e2e_ms, checked, timeouts = [], [], 0, 0
    to_list_ms, after_list_ms = [], []  # rating -> the worker's list write starts; that -> readable
    by_action: dict[str, list[float]] = {}
    for i in range(warmup + n_ratings):
        user = i % n_users
        product = item_id(int(rng.integers(pool)))
        while product in rated.setdefault(user, set()):
            product = item_id(int(rng.integers(pool)))
        action, step = "rate", (i // n_users) % 5  # per user: rate, rate, unrate, rate, not interested
        if controls and step == 2 and len(rated[user]) > 1:  # (a user never drops to no rating: that is
            action, product = "unrate", sorted(rated[user])[int(rng.integers(len(rated[user])))]  # the popular
            rated[user].discard(product)  # fallback, another path)
        elif controls and step == 4:
            action = "not_interested"
        else:
            rated[user].add(product)
        uid = rater.recommender_id(user)
        generation = list_state.generation()
        announced = list_state.current(uid, generation)
        t0, wall0, written = time.perf_counter(), time.time(), None
        if action == "rate":
            event_id = rater.rate(user, product, int(rng.integers(1, 6)))
        else:
            event_id = rater.control(user, product, action)
        t_post = time.perf_counter()
        deadline = t0 + 30
        while True:  # announced in Redis (what the site checks first), then read from MongoDB
            version = list_state.current(uid, generation)
            if version != announced:
                doc = stored_lists.get_live_recommendations(uid, db=db)
                if doc and doc.get("source_event_id") == event_id and version == list_state.version_of(doc):
                    written = float(doc["updated_at"])  # the worker's clock when it began writing lists
                    break
                announced = version
            if time.perf_counter() > deadline:
                timeouts += 1
                break
            wait(list_state.key(uid, generation), deadline)
        t1 = time.perf_counter()
        if i >= warmup:
            post_ms.append((t_post - t0) * 1000)
            e2e_ms.append((t1 - t0) * 1000)
            by_action.setdefault(action, []).append((t1 - t0) * 1000)
            if written is not None:
                to_list_ms.append((written - wall0) * 1000)
                after_list_ms.append((t1 - t0) * 1000 - to_list_ms[-1])
            if i % 50 == 0 and isinstance(rater, HttpRater) and action == "rate":
                if not rater.page_sees(user, event_id):
                    raise RuntimeError(f"GET /api/recommendations/ does not show event {event_id}")
                checked += 1
    return {"ratings": n_ratings, "post_p50_ms": _pct(post_ms, 50), "post_p99_ms": _pct(post_ms, 99),
            "e2e_p50_ms": _pct(e2e_ms, 50), "e2e_p99_ms": _pct(e2e_ms, 99), "e2e_max_ms": max(e2e_ms),
            "timeouts": timeouts, "checked_through_api": checked,
            "split": _split(e2e_ms, to_list_ms, after_list_ms),
            "by_action": {a: {"n": len(v), "e2e_p50_ms": _pct(v, 50), "e2e_p99_ms": _pct(v, 99)}
                          for a, v in sorted(by_action.items())}}


def _split(e2e_ms: list[float], to_list_ms: list[float], after_list_ms: list[float]) -> dict:
    """Where the time went: from the rating to the worker's list write (Kafka, a batch before it,
    claims, locks, reads, fold-in, history write) and from there to readable (list and rating writes,
    the announcement, this loop's poll); medians overall, and means over the slowest 1%."""
    if not to_list_ms or len(to_list_ms) != len(e2e_ms):
        return {}
    slow = np.argsort(e2e_ms)[-max(1, len(e2e_ms) // 100):]
    return {"to_list_p50_ms": _pct(to_list_ms, 50), "after_list_p50_ms": _pct(after_list_ms, 50),
            "slowest_1pct_to_list_ms": float(np.mean([to_list_ms[i] for i in slow])),
            "slowest_1pct_after_list_ms": float(np.mean([after_list_ms[i] for i in slow]))}


def bulk_producer():
    """A producer for a burst of events, not the site's: the site's 1.5 s delivery timeout is for
    failing a request fast, and a burst of 20,000 queued records outlived it once (while the broker
    created a new topic's logs). The caller closes it."""
    from kafka import KafkaProducer

    from core.settings import get_settings

    return KafkaProducer(bootstrap_servers=get_settings().kafka_bootstrap_servers, acks="all",
                         enable_idempotence=True, max_in_flight_requests_per_connection=1,
                         linger_ms=5, request_timeout_ms=30_000, delivery_timeout_ms=120_000)


def measure_throughput(n_workers: int, n_events: int, pool: int, log_dir: Path, run_id: str) -> dict:
    """Burst of ``n_events`` to fresh topics; events/s until the group has committed them all."""
    from core.events import RatingEvent
    from core.settings import get_settings

    base = f"bench-rt-{run_id}-tp{n_workers}-{uuid.uuid4().hex[:4]}"
    _topics(base)
    os.environ["KAFKA_WORKER_GROUP"] = f"{base}.workers"
    rng = np.random.default_rng(n_workers)
    users = max(1, n_events // 8)
    events = [RatingEvent(user_id=f"tp{n_workers}-{i % users}", product_id=item_id(int(rng.integers(pool))),
                          rating=int(rng.integers(1, 6))) for i in range(n_events)]
    workers = Workers(n_workers, log_dir)
    try:
        wait_group_ready(os.environ["KAFKA_WORKER_GROUP"], get_settings().ratings_topic, n_workers)
        producer = bulk_producer()
        topic = get_settings().ratings_topic
        t0 = time.perf_counter()
        futures = [producer.send(topic, key=e.key, value=e.to_bytes()) for e in events]
        producer.flush()
        for f in futures:
            f.get(timeout=60)
        t_published = time.perf_counter()
        producer.close()
        elapsed = wait_drained(os.environ["KAFKA_WORKER_GROUP"], topic, workers, "throughput run") - t0
    finally:
        workers.stop()
    return {"workers": n_workers, "events": n_events, "processed": processed_count(f"tp{n_workers}-"), "seconds": elapsed,
            "publish_seconds": t_published - t0, "events_per_s": n_events / elapsed}


def backlog_events(n_events: int, pool: int, workload: str, tag: str, seed: int = 0) -> list:
    """The backlog's events, in the order they are published (a list; see :func:`iter_backlog_events`)."""
    return list(iter_backlog_events(n_events, pool, workload, tag, seed))


def iter_backlog_events(n_events: int, pool: int, workload: str, tag: str, seed: int = 0):
    """The backlog's events one by one, so a backlog of millions is never held in memory.

    ``sessions``: shoppers rate a few products in a row (1 + geometric, mean 5 ratings) and about
    200 sessions are open at any moment, interleaved event by event, as a busy site's stream
    looks; a poll of 500 then holds ~2.5 events per user. ``distinct``: every event in a poll
    is another user's (round robin over max(n/8, 1,000) users), the worst case for grouping.
    """
    from core.events import RatingEvent

    rng = np.random.default_rng(seed)
    base = time.time() - n_events * 1e-4
    if workload == "distinct":
        users = max(1000, n_events // 8)
        for i in range(n_events):
            yield RatingEvent(user_id=f"{tag}-{i % users}", product_id=item_id(int(rng.integers(pool))),
                              rating=int(rng.integers(1, 6)), ts=base + i * 1e-4)
        return
    open_sessions: list[list] = []  # [user, events left]
    next_user = 0
    for n in range(n_events):
        while len(open_sessions) < 200:
            open_sessions.append([f"{tag}-{next_user}", 1 + int(rng.geometric(0.25))])
            next_user += 1
        k = int(rng.integers(len(open_sessions)))
        session = open_sessions[k]
        yield RatingEvent(user_id=session[0], product_id=item_id(int(rng.integers(pool))),
                          rating=int(rng.integers(1, 6)), ts=base + n * 1e-4)
        session[1] -= 1
        if session[1] == 0:
            open_sessions[k] = open_sessions[-1]
            open_sessions.pop()


def measure_backlog(n_events: int, batch_max: int, workload: str, pool: int, log_dir: Path, run_id: str,
                    code: Path = ROOT) -> dict:
    """A backlog of ``n_events`` already in fresh topics; one worker (``WORKER_BATCH_MAX=batch_max``,
    from the checkout ``code``) drains it; events/s from the moment it holds the partitions until its
    commits reach the end."""
    from core.settings import get_settings

    tag = f"bl{batch_max}{workload[0]}-{uuid.uuid4().hex[:4]}"
    base = f"bench-rt-{run_id}-{tag}"
    _topics(base)
    os.environ["KAFKA_WORKER_GROUP"] = f"{base}.workers"
    producer = bulk_producer()
    topic = get_settings().ratings_topic
    t = time.perf_counter()
    user_ids, futures = set(), []
    for n, e in enumerate(iter_backlog_events(n_events, pool, workload, tag, seed=n_events + batch_max)):
        futures.append(producer.send(topic, key=e.key, value=e.to_bytes()))
        user_ids.add(e.user_id)
        if len(futures) == 20_000 or n == n_events - 1:
            producer.flush()
            for f in futures:
                f.get(timeout=120)
            futures = []
    published_s = time.perf_counter() - t
    producer.close()
    load_before = os.getloadavg()[0]
    os.environ["WORKER_BATCH_MAX"] = str(batch_max)
    try:
        workers = Workers(1, log_dir, code)
    finally:
        os.environ.pop("WORKER_BATCH_MAX", None)
    try:
        wait_group_ready(os.environ["KAFKA_WORKER_GROUP"], topic, 1)
        t0 = time.perf_counter()
        elapsed = wait_drained(os.environ["KAFKA_WORKER_GROUP"], topic, workers, "backlog run", 0.5) - t0
    finally:
        workers.stop()
    users = len(user_ids)
    # every event, not a sample: the offsets also pass a dead-lettered one, which must not count as drained
    return {"batch_max": batch_max, "workload": workload, "events": n_events, "users": users,
            "processed": processed_count(f"{tag}-"), "dead_letters": dead_letter_count(), "publish_seconds": published_s,
            "seconds": elapsed, "events_per_s": n_events / elapsed, "load_before": load_before,
            "load_after": os.getloadavg()[0]}


class CommandCounter:
    """Counts the MongoDB commands this process sends (pymongo's command monitoring): round trips,
    which is what a worker's time on FerretDB follows, and which a loaded machine does not blur."""

    def __init__(self) -> None:
        from pymongo import monitoring

        class Listener(monitoring.CommandListener):
            def started(inner, event) -> None:  # noqa: N805
                self.n += 1

            def succeeded(inner, event) -> None:  # noqa: N805
                pass

            def failed(inner, event) -> None:  # noqa: N805
                pass

        self.n = 0
        monitoring.register(Listener())  # before any client is made: it applies to clients made after


def measure_round_trips(counter: CommandCounter, n_events: int, pool: int, workload: str) -> list[dict]:
    """The same events one message at a time (``handle``: a batch of one each, the worker's fallback)
    and through batches of 500, in this process: MongoDB commands and seconds per event."""
    from core import artifacts
    from kafka_workers.batch import handle_batch
    from kafka_workers.process import handle

    model = artifacts.load_model(artifacts.current_version())
    rows = []
    for path in ("per message", "batches of 500"):
        events = backlog_events(n_events, pool, workload, f"rt-{workload[0]}{len(rows)}-{uuid.uuid4().hex[:4]}")
        n0, t0 = counter.n, time.perf_counter()
        if path == "per message":
            statuses = [handle(e.to_bytes(), model).status for e in events]
        else:
            statuses = [o.status for lo in range(0, len(events), 500) for o in handle_batch(events[lo:lo + 500], model)]
        seconds = time.perf_counter() - t0
        rows.append({"path": path, "workload": workload, "events": n_events,
                     "users": len({e.user_id for e in events}), "processed": statuses.count("processed"),
                     "commands_per_event": (counter.n - n0) / n_events, "seconds": seconds,
                     "events_per_s": n_events / seconds, "load": os.getloadavg()[0]})
    return rows


class Background:
    """Ratings of other users at ``rate`` per second, published while the latency is measured.

    From a process of its own with its own producer, as other shoppers' ratings come from other
    site processes. As a thread of the measuring process they shared its GIL and its one producer
    (one request in flight), and took 6 ms from made to picked up against the measured ratings'
    2.2 ms (trace of 2026-12-03 20:13): the other shoppers were not independent of the measured one.
    """

    USER_PREFIX = "bg-"  # 2,000 of them per run: "bg-<run>-<n>"

    def __init__(self, rate: float, pool: int, run: int = 0) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # not fork: this process runs a producer's thread
        self.rate = rate
        self.stop_event, self._sent = ctx.Event(), ctx.Value("q", 0)
        self.process = ctx.Process(target=_background_ratings, args=(rate, pool, self.stop_event, self._sent, run),
                                   name="background-ratings", daemon=True)

    @property
    def sent(self) -> int:
        return self._sent.value

    def __enter__(self) -> "Background":
        if self.rate > 0:
            self.process.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        if self.process.pid is not None:  # started
            self.process.join(10)


def _background_ratings(rate: float, pool: int, stop_event, sent, run: int) -> None:
    """:class:`Background`'s process: a rating of one of 2,000 users every 1/rate seconds."""
    from core import kafka_io
    from core.events import RatingEvent
    from core.settings import get_settings

    rng = np.random.default_rng(7)
    producer, topic = kafka_io.get_producer(), get_settings().ratings_topic
    start, n = time.perf_counter(), 0
    while not stop_event.is_set():
        e = RatingEvent(user_id=f"{Background.USER_PREFIX}{run}-{int(rng.integers(2000))}",
                        product_id=item_id(int(rng.integers(pool))), rating=int(rng.integers(1, 6)))
        producer.send(topic, key=e.key, value=e.to_bytes())
        n += 1
        sent.value = n
        wait = start + n / rate - time.perf_counter()
        if wait > 0:
            stop_event.wait(wait)
    producer.flush(10)


def cleanup(run_id: str, topics: list[str], artifacts: Path) -> None:
    from kafka import KafkaAdminClient
    from core import mongo
    from core.settings import get_settings

    mongo.get_client().drop_database(f"bench_rt_{run_id}")
    try:
        admin = KafkaAdminClient(bootstrap_servers=get_settings().kafka_bootstrap_servers)
        existing = set(admin.list_topics())
        admin.delete_topics([t for t in topics if t in existing])
        admin.close()
    except Exception as exc:  # leftovers are harmless; say so
        print(f"note: could not delete topics {topics}: {exc}")
    shutil.rmtree(artifacts, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratings", type=int, default=1000, help="measured ratings per catalog size (default 1000)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--sizes", default="10000,1000000", help="model sizes in items (default 10000,1000000)")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--users", type=int, default=200, help="site users the ratings are spread over")
    ap.add_argument("--catalog-docs", type=int, default=5000,
                    help="products in MongoDB, the pool ratings are drawn from (default 5000)")
    ap.add_argument("--via", choices=("http", "publish"), default="http")
    ap.add_argument("--wait", choices=("notify", "poll"), default="notify",
                    help="how the latency loop learns of a new list: Redis keyspace notification, or a read every --poll-ms")
    ap.add_argument("--poll-ms", type=float, default=5.0)
    ap.add_argument("--throughput-events", type=int, default=3000)
    ap.add_argument("--throughput-workers", default="1,2")
    ap.add_argument("--latency-workers", type=int, default=1,
                    help="worker processes (consumer-group members) while the latency is measured; "
                         "docker/docker-compose.yml runs 2")
    ap.add_argument("--controls", action="store_true",
                    help="mix in removed ratings and 'not interested' (a fifth each) and report them per action")
    ap.add_argument("--background-rate", type=float, default=0.0,
                    help="other users' ratings per second published while the latency is measured (e.g. 50)")
    ap.add_argument("--backlog", type=int, default=0,
                    help="events of a backlog drained by one worker with batches (0: skip)")
    ap.add_argument("--backlog-old", type=int, default=3000,
                    help="events of the same backlog drained by the former per-message path (WORKER_BATCH_MAX=1)")
    ap.add_argument("--backlog-workloads", default="sessions,distinct")
    ap.add_argument("--compare-code", help="a checkout of another commit (e.g. `git archive <commit> | tar -x -C /tmp/before`): "
                    "its worker is measured beside this one in the same run (latency and backlog)")
    ap.add_argument("--compare-events", type=int, default=0, help="events of that backlog (default: --backlog)")
    ap.add_argument("--compare-label", help="its name in the table (default: the folder's name)")
    ap.add_argument("--compare-first", action="store_true",
                    help="measure the latency of that code before this one's (alternate runs with and without: "
                         "the first code's run is often the slower, the bench's own POST included)")
    ap.add_argument("--round-trips", type=int, default=0,
                    help="events handled in this process by both paths, counting MongoDB commands (0: skip)")
    ap.add_argument("--trace", action="store_true",
                    help="the latency run's workers record their batches and MongoDB commands (bench/worker_trace.py); "
                         "prints where a measured rating's time went")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.compare_code and (args.compare_label or Path(args.compare_code).name) == "this":
        ap.error("--compare-label: 'this' names this checkout's code (its traces would be mixed with the other's)")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if min(sizes) < args.catalog_docs:
        ap.error("--catalog-docs must not exceed the smallest model size (rated products must be in the model)")

    counter = CommandCounter() if args.round_trips else None
    run_id = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="bench-rt-"))
    artifacts = work / "artifacts"
    _isolate(run_id, artifacts)
    from core import mongo
    from core.settings import get_settings

    all_topics = list(_topic_names())
    machine = _machine()
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine, "via": args.via,
                     "rank": args.rank, "catalog_docs": args.catalog_docs, "wait": args.wait, "poll_ms": args.poll_ms,
                     "latency": [], "throughput": [], "backlog": [], "round_trips": [], "background_rate": args.background_rate}
    print(f"run {run_id}: {machine['cpus']} CPUs ({machine['cpu']}), load {machine['loadavg_start']}, "
          f"via {args.via}, MongoDB {get_settings().mongo_uri}{get_settings().mongo_db}", flush=True)
    site_ctx = None
    try:
        mongo.ensure_indexes()
        t = time.perf_counter()
        seed_catalog(args.catalog_docs)
        print(f"catalog: {args.catalog_docs} products in {time.perf_counter() - t:.1f}s", flush=True)
        codes = [(ROOT, "this")] + ([(Path(args.compare_code), args.compare_label or Path(args.compare_code).name)]
                                    if args.compare_code else [])
        if args.compare_first:
            codes.reverse()
        wait = announcement_waiter(args.wait, args.poll_ms / 1000) if args.ratings else None
        runs = [(n, c) for n in (sizes if args.ratings else []) for c in codes]
        if args.via == "http":
            from bench.site_server import running_site

            # latency, not the per-user rating limit (shop.throttles), is what this measures
            site_ctx = running_site(env={"RATING_RATE": "1000000/min", **os.environ}, workers=2, threads=4)
            site = site_ctx.__enter__()
            rater = HttpRater(site, args.users, runs=len(runs))
            print(f"site: {site.url} (gunicorn, 2 workers x 4 threads), {args.users} users with tokens", flush=True)
        else:
            rater = PublishRater(args.users)
        for run, (n_items, (code, label)) in enumerate(runs):
            # Each run's users are new to it. With the same ids, the second code in a run found the
            # histories the first one wrote, and a user without one costs a batch one read more
            # (deleted_users: in 31% of the first code's one-event batches and none of the second's,
            # traced 2026-12-04), so whichever code went second was favoured.
            rater.run = run
            t = time.perf_counter()
            version = publish_model(n_items, args.rank, seed=n_items)
            trace_dir = work / f"trace-{n_items}-{label}" if args.trace else None
            workers = Workers(args.latency_workers, work, code, trace_dir)
            try:
                wait_group_ready(os.environ["KAFKA_WORKER_GROUP"], get_settings().ratings_topic, args.latency_workers)
                print(f"model {n_items} items x rank {args.rank}: published and {args.latency_workers} worker(s) ({label} code) ready in "
                      f"{time.perf_counter() - t:.1f}s", flush=True)
                cpu0 = workers.cpu_s()
                with Background(args.background_rate, args.catalog_docs, run) as bg:
                    row = measure_latency(rater, args.ratings, args.catalog_docs, wait, n_items,
                                          args.warmup, controls=args.controls)
                row["background_sent"] = bg.sent
                row["worker_cpu_ms_per_event"] = (workers.cpu_s() - cpu0) * 1000 / (
                    args.warmup + args.ratings + bg.sent)
                if not workers.alive():
                    raise RuntimeError("the worker exited during the latency run")
            finally:
                workers.stop()
            row.update({"items": n_items, "model_version": version, "code": label, "workers": args.latency_workers,
                        "load": os.getloadavg()[0]})
            results["latency"].append(row)
            print(f"  e2e p50 {row['e2e_p50_ms']:.1f} ms, p99 {row['e2e_p99_ms']:.1f} ms "
                  f"(POST p50 {row['post_p50_ms']:.1f} ms); worker CPU {row['worker_cpu_ms_per_event']:.2f} ms "
                  f"per event", flush=True)
            if row["split"]:
                sp = row["split"]
                print(f"  rating -> list write begins p50 {sp['to_list_p50_ms']:.1f} ms, then -> readable p50 "
                      f"{sp['after_list_p50_ms']:.1f} ms; the slowest 1%: {sp['slowest_1pct_to_list_ms']:.1f} + "
                      f"{sp['slowest_1pct_after_list_ms']:.1f} ms", flush=True)
            if trace_dir is not None:  # the measured users' one-event batches, per worker process
                from bench import worker_trace

                row["trace"] = [worker_trace.summary(f, lambda user: not user.startswith(Background.USER_PREFIX))
                                for f in sorted(trace_dir.glob("worker-*.jsonl"))]
                for t in row["trace"]:
                    worker_trace.print_summary(t)
            shutil.rmtree(artifacts / "models" / version, ignore_errors=True)
        if args.throughput_events:
            publish_model(min(sizes), args.rank, seed=1)
            for w in [int(x) for x in args.throughput_workers.split(",") if x]:
                row = measure_throughput(w, args.throughput_events, args.catalog_docs, work, run_id)
                all_topics += _topic_names()
                results["throughput"].append(row)
                print(f"  {w} worker(s): {row['events_per_s']:.0f} events/s", flush=True)
        if args.round_trips:
            publish_model(min(sizes), args.rank, seed=3)
            for workload in [w for w in args.backlog_workloads.split(",") if w]:
                results["round_trips"] += measure_round_trips(counter, args.round_trips, args.catalog_docs, workload)
                for r in results["round_trips"][-2:]:
                    print(f"  {workload}, {r['path']}: {r['commands_per_event']:.2f} MongoDB commands per event, "
                          f"{r['events_per_s']:,.0f} events/s in-process (load {r['load']:.1f})", flush=True)
        if args.backlog:
            publish_model(min(sizes), args.rank, seed=2)
            for workload in [w for w in args.backlog_workloads.split(",") if w]:
                runs = [(1, args.backlog_old, ROOT, "this"), (500, args.backlog, ROOT, "this")]
                if args.compare_code:  # another commit's batched worker, between the two
                    runs.insert(1, (500, args.compare_events or args.backlog, Path(args.compare_code),
                                    args.compare_label or Path(args.compare_code).name))
                for batch_max, n, code, label in runs:
                    if not n:
                        continue
                    row = measure_backlog(n, batch_max, workload, args.catalog_docs, work, run_id, code)
                    row["code"] = label
                    all_topics += _topic_names()
                    results["backlog"].append(row)
                    print(f"  backlog {workload}, {label} code, WORKER_BATCH_MAX={batch_max}: {n:,} events drained at "
                          f"{row['events_per_s']:,.0f} events/s (load {row['load_before']:.1f})", flush=True)
    finally:
        if site_ctx is not None:
            site_ctx.__exit__(None, None, None)
        results["machine"]["loadavg_end"] = os.getloadavg()
        cleanup(run_id, all_topics, artifacts)
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"Real-time path, {time.strftime('%Y-%m-%d %H:%M')}, {machine['cpus']} CPUs, "
          f"load average {machine['loadavg_start'][0]:.1f} at start / {results['machine']['loadavg_end'][0]:.1f} at end")
    how = "HTTP POST /api/ratings/ (gunicorn)" if args.via == "http" else "core.kafka_io.publish_event"
    waited = "woken by Redis keyspace notifications" if args.wait == "notify" else f"poll {args.poll_ms:g} ms"
    print(f"latency from {how} to recommendations readable by the site (MongoDB + version in Redis; {waited}), "
          f"one rating at a time")
    print(f"{'design':<34}{'items':>9}{'ratings':>9}{'POST p50':>10}{'POST p99':>10}"
          f"{'e2e p50':>10}{'e2e p99':>10}{'e2e max':>10}")
    for r in results["latency"]:
        name = f"Kafka worker{'s x' + str(r['workers']) if r.get('workers', 1) > 1 else ''} ({r['code']}), rank {args.rank}"
        print(f"{name:<34}{r['items']:>9,}{r['ratings']:>9}"
              f"{r['post_p50_ms']:>8.1f}ms{r['post_p99_ms']:>8.1f}ms{r['e2e_p50_ms']:>8.1f}ms"
              f"{r['e2e_p99_ms']:>8.1f}ms{r['e2e_max_ms']:>8.1f}ms"
              + (f"  ({r['timeouts']} not seen in 30 s)" if r["timeouts"] else ""))
    for r in results["latency"]:
        if len(r["by_action"]) > 1:
            for action, a in r["by_action"].items():
                print(f"{'  ' + action:<34}{r['items']:>9,}{a['n']:>9}{'':>20}"
                      f"{a['e2e_p50_ms']:>8.1f}ms{a['e2e_p99_ms']:>8.1f}ms")
    print(f"{'fixed 10 s sleep (reference)':<34}{'-':>9}{'-':>9}{'-':>10}{'-':>10}"
          f"{FIXED_SLEEP_MS:>8.0f}ms{FIXED_SLEEP_MS:>8.0f}ms{FIXED_SLEEP_MS:>8.0f}ms")
    if results["throughput"]:
        print(f"\nsustained throughput, {min(sizes):,}-item model, burst published to fresh topics")
        print(f"{'workers':>8}{'events':>9}{'processed':>11}{'seconds':>9}{'events/s':>10}")
        for r in results["throughput"]:
            print(f"{r['workers']:>8}{r['events']:>9}{r['processed']:>11}{r['seconds']:>9.1f}{r['events_per_s']:>10.0f}")
    if results["backlog"]:
        print(f"\nbacklog drained by one worker, {min(sizes):,}-item model (former per-message path vs batches, same run)")
        print(f"{'workload':>9}{'code':>14}{'WORKER_BATCH_MAX':>18}{'events':>10}{'users':>9}{'seconds':>9}{'events/s':>10}"
              f"{'load':>11}{'processed':>13}{'dead letters':>14}")
        for r in results["backlog"]:
            print(f"{r['workload']:>9}{r['code']:>14}{r['batch_max']:>18}{r['events']:>10,}{r['users']:>9,}{r['seconds']:>9.1f}"
                  f"{r['events_per_s']:>10,.0f}{r['load_before']:>5.1f}-{r['load_after']:<5.1f}"
                  f"{r['processed']:>13,}{r['dead_letters']:>14,}")
    if results["round_trips"]:
        print(f"\nthe same events handled in one process by each path, {min(sizes):,}-item model")
        print(f"{'workload':>9}{'path':>16}{'events':>8}{'users':>7}{'commands/event':>16}{'events/s':>10}{'load':>6}")
        for r in results["round_trips"]:
            print(f"{r['workload']:>9}{r['path']:>16}{r['events']:>8,}{r['users']:>7,}{r['commands_per_event']:>16.2f}"
                  f"{r['events_per_s']:>10,.0f}{r['load']:>6.1f}")
    if args.background_rate:
        print(f"\n(latency measured while {args.background_rate:g} other ratings/s were published)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    bad = [r for r in results["latency"] if r["timeouts"]] + \
        [r for r in results["throughput"] if r["processed"] != r["events"]] + \
        [r for r in results["backlog"] if r["processed"] != r["events"] or r["dead_letters"]] + \
        [r for r in results["round_trips"] if r["processed"] != r["events"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
