"""Pure parts of the workers and Celery tasks (no servers): trending maths, stats, dead-letter shape."""
from __future__ import annotations

import pytest

from core.events import MAX_EVENT_BYTES
from kafka_workers.dead_letters import dead_letter_payload
from core.popular import TRENDING_HALF_LIFE_S, trending_scores
from kafka_workers.outcomes import Outcome
from kafka_workers.stats import Stats


def test_trending_halves_per_half_life_and_weights_by_rating():
    now = 1_700_000_000.0
    scores = trending_scores([
        {"user_id": "p", "product_id": "fresh5", "rating": 5, "ts": now},
        {"user_id": "q", "product_id": "day-old5", "rating": 5, "ts": now - TRENDING_HALF_LIFE_S},
        {"user_id": "r", "product_id": "fresh1", "rating": 1, "ts": now},
        {"user_id": "a", "product_id": "twice", "rating": 5, "ts": now - 2 * TRENDING_HALF_LIFE_S},
        {"user_id": "b", "product_id": "twice", "rating": 5, "ts": now - 2 * TRENDING_HALF_LIFE_S},
        {"user_id": "c", "product_id": "reposted", "rating": 5, "ts": now - 60},  # one user: only the latest
        {"user_id": "c", "product_id": "reposted", "rating": 2, "ts": now},
        {"user_id": "c", "product_id": "reposted", "rating": 5, "ts": now - 120},
        {"user_id": "s", "product_id": "future", "rating": 4, "ts": now + 600},  # clock skew: counts as now, not more
    ], now)
    assert scores["fresh5"] == pytest.approx(1.0)
    assert scores["day-old5"] == pytest.approx(0.5)
    assert scores["fresh1"] == pytest.approx(0.2)
    assert scores["twice"] == pytest.approx(0.5)
    assert scores["reposted"] == pytest.approx(0.4)
    assert scores["future"] == pytest.approx(0.8)


def test_trending_forgets_a_removed_rating_and_splits_one_accounts_weight():
    now = 1_700_000_000.0
    scores = trending_scores([
        {"user_id": "a", "product_id": "taken-back", "rating": 5, "ts": now - 10, "action": "rate"},
        {"user_id": "a", "product_id": "taken-back", "rating": 0, "ts": now, "action": "unrate"},
        {"user_id": "b", "product_id": "liked", "rating": 5, "ts": now},
        *[{"user_id": "flood", "product_id": f"f{i}", "rating": 5, "ts": now} for i in range(10)],
    ], now)
    assert scores.get("taken-back", 0.0) == 0.0
    assert scores["liked"] == pytest.approx(1.0)
    assert scores["f0"] == pytest.approx(0.1)  # one account's vote, split over its ten products


def test_stats_count_outcomes_and_put_lag_and_model_on_metrics():
    from prometheus_client import REGISTRY

    from kafka_workers.stats import report_stats

    s = Stats()
    for status in ("processed", "processed", "duplicate", "dead-letter"):
        s.add(Outcome(None, status))
    assert (s.counts["processed"], s.counts["duplicate"], s.counts["dead-letter"]) == (2, 1, 1)
    consumer = type("Consumer", (), {"assignment": lambda self: set()})()  # nothing assigned: lag 0
    report_stats(s, consumer, type("Holder", (), {"version": "v1"})())
    assert REGISTRY.get_sample_value("recommender_worker_lag") == 0
    assert REGISTRY.get_sample_value("recommender_worker_model_info", {"version": "v1"}) == 1


def test_dead_letter_payload_keeps_the_reason_origin_and_a_truncated_original():
    raw = b"{" + "é".encode() * 5000
    p = dead_letter_payload(raw, "bad JSON: x", "t", 3, 42)
    assert (p["reason"], p["topic"], p["partition"], p["offset"]) == ("bad JSON: x", "t", 3, 42)
    assert p["value_bytes"] == len(raw) and len(p["value"]) == 4096
    assert dead_letter_payload(None, "empty message", "t", 0, 0)["value_bytes"] == 0


def test_a_dead_letter_stays_far_below_kafkas_1_mb_whatever_the_original():
    """Kafka refuses a message over 1 MB (the producer's ``max_request_size``, the broker's
    ``message.max.bytes``): a 200 KB key once made a 1.8 MB letter, which blocked its partition.
    Worst cases: the largest record the broker takes, every byte a character JSON escapes."""
    import json

    from kafka_workers.dead_letters import letter_key, original_key

    for key, value in [(b"\xff" * 1_000_000, b"\xff" * 1_000_000), (b"k", "\U0001F600".encode() * 250_000),
                       (b"\x01" * 1_000_000, b"\x01" * MAX_EVENT_BYTES)]:
        letter = dead_letter_payload(value, "\x01" * 1_000_000, "t", 0, 1, key=key, event_id="\x01" * 1000)
        assert len(json.dumps(letter).encode()) + len(letter_key(key) or b"") < 300_000
    big = dead_letter_payload(b"x", "bad JSON", "t", 0, 1, key=b"\xff" * 200_000)
    assert letter_key(b"\xff" * 200_000) is None and big["key_bytes"] == 200_000
    assert original_key(big) == (False, None)  # not replayable with another key
    small = dead_letter_payload(b"x", "bad JSON", "t", 0, 1, key=b"user-\xfe")
    assert letter_key(b"user-\xfe") == b"user-\xfe" and original_key(small) == (True, b"user-\xfe")
    assert original_key(dead_letter_payload(b"x", "bad JSON", "t", 0, 1)) == (True, None)
    assert original_key({"key": "older-letter"}) == (True, b"older-letter")


def test_a_record_kafka_refuses_is_not_an_outage(monkeypatch):
    """The producer's size check and the broker's refusal of a record raise ``RecordRefused``, which
    the worker does not wait out; a broker that does not answer stays an outage."""
    from types import SimpleNamespace

    from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

    from core import kafka_io

    outcomes = iter([MessageSizeTooLargeError("too big"), MessageSizeTooLargeError("broker: too big"),
                     KafkaTimeoutError("no answer")])

    class Producer:
        def send(self, topic, key, value):
            exc = next(outcomes)
            if str(exc) == "too big":
                raise exc
            return SimpleNamespace(get=lambda timeout: (_ for _ in ()).throw(exc))

        def close(self, timeout=None):
            pass

    monkeypatch.setattr(kafka_io, "get_producer", lambda: Producer())
    monkeypatch.setattr(kafka_io, "_discard", lambda producer: None)
    for _ in range(2):
        with pytest.raises(kafka_io.RecordRefused):
            kafka_io.publish_json("t", {"a": 1})
    with pytest.raises(kafka_io.PublishError) as outage:
        kafka_io.publish_json("t", {"a": 1})
    assert not isinstance(outage.value, kafka_io.RecordRefused)


def test_a_refused_dead_letter_is_sent_bare_and_the_worker_moves_on(monkeypatch):
    """A letter Kafka refuses goes again without the original (the message is quarantined with
    its reason); refused again, the message is skipped: never an endless wait."""
    from types import SimpleNamespace

    from core import kafka_io
    from kafka_workers.dead_letter_sender import send_dead_letter

    sent = []

    def publish_json(topic, payload, key=None):
        sent.append((payload, key))
        if len(sent) in refused:
            raise kafka_io.RecordRefused("MessageSizeTooLargeError")

    monkeypatch.setattr(kafka_io, "publish_json", publish_json)
    record = SimpleNamespace(value=b"not json", key=b"u1", topic="ratings", partition=2, offset=7)
    outcome = Outcome(None, "dead-letter", "bad JSON")
    refused = {1}
    send_dead_letter(record, outcome, attempts=1)
    (first, first_key), (bare, bare_key) = sent
    assert first["value_b64"] and first_key == b"u1"
    assert bare_key is None and bare["value_b64"] is None and bare["value"] == "" and bare["id"] == "ratings:2:7"
    assert bare["reason"].startswith("bad JSON (its letter was refused by Kafka: MessageSizeTooLargeError")
    sent.clear()
    refused = {1, 2}
    send_dead_letter(record, outcome, attempts=1)  # returns: the partition moves on
    assert len(sent) == 2


def test_deleting_an_account_waits_for_a_list_writer_between_its_mark_and_its_data(monkeypatch):
    """``forget_user`` marks the account deleted, then takes the user's writer lock once before it
    removes the data: a list writer (Celery) that checked the mark just before holds the lock,
    so its list is written before the deletion removes it, never after."""
    from contextlib import contextmanager

    from core import erasure, events, list_state, locking
    from core.events import RatingEvent
    from kafka_workers import batch

    steps = []

    @contextmanager
    def writer_lock(user_id, db=None):
        steps.append(("lock", user_id))
        yield
        steps.append(("unlock", user_id))

    monkeypatch.setattr(locking, "writer_lock", writer_lock)
    monkeypatch.setattr(erasure, "record_deleted_user", lambda u: steps.append(("mark", u)))
    monkeypatch.setattr(erasure, "delete_user_data", lambda u, **kw: steps.append(("delete", u)))
    monkeypatch.setattr(list_state, "drop", lambda u: steps.append(("drop", u)))
    outcome = batch.forget_user(RatingEvent(user_id="u1", product_id="", rating=0, action=events.DELETE_ACCOUNT))
    assert outcome.status == "processed"
    assert [s for s, _ in steps] == ["mark", "lock", "unlock", "delete", "drop"]


def test_kafka_python_checksums_record_batches_in_c():
    """Every produced and consumed record batch carries a CRC-32C; kafka-python's own is pure
    Python (~77 us a batch) unless the ``crc32c`` package of requirements.txt is there."""
    from kafka.record import util

    assert util._crc32c is not util.crc32c_py
    assert util.calc_crc32c(memoryview(b"123456789")) == 0xE3069283  # the CRC-32C check value


def test_worker_and_site_clients_keep_no_kafka_python_sensors(monkeypatch):
    """kafka-python records its own metrics on every fetch and send unless told not to; nothing
    here reads them (the worker has /metrics), and they were 3% of a worker's CPU per event."""
    from core import kafka_io
    from kafka_workers import consumer

    made = {}

    class Fake:
        def __init__(self, *args, **config):
            made[type(self).__name__] = config

        def subscribe(self, *args, **kwargs):
            pass

    monkeypatch.setattr(consumer, "KafkaConsumer", type("Consumer", (Fake,), {}))
    monkeypatch.setattr(kafka_io, "KafkaProducer", type("Producer", (Fake,), {}))
    kafka_io.get_producer.cache_clear()
    try:
        consumer.make_consumer()
        kafka_io.get_producer()
    finally:
        kafka_io.get_producer.cache_clear()
    assert made["Consumer"]["metrics_enabled"] is False
    assert made["Producer"]["metrics_enabled"] is False


def test_the_worker_remembers_the_catalog_up_to_its_setting_and_never_fails_on_it(monkeypatch, caplog):
    """``WORKER_REMEMBER_CATALOG_MAX`` is the limit passed on (0: not read at all), and an error
    reading the catalog (MongoDB down) is logged, not raised: the batches read what they need."""
    from core import catalog
    from kafka_workers.startup import remember_catalog

    asked = []

    def remember(limit):
        asked.append(limit)
        if limit == 7:
            raise ConnectionError("mongo is down")
        return 3

    monkeypatch.setattr(catalog, "remember_catalog", remember)
    monkeypatch.delenv("WORKER_REMEMBER_CATALOG_MAX", raising=False)
    remember_catalog()
    monkeypatch.setenv("WORKER_REMEMBER_CATALOG_MAX", "0")
    remember_catalog()
    monkeypatch.setenv("WORKER_REMEMBER_CATALOG_MAX", "7")
    remember_catalog()
    assert asked == [50_000, 7]
    assert "catalog not remembered (ConnectionError: mongo is down)" in caplog.text


def test_one_at_a_time_leaves_what_is_past_the_poll_budget_to_the_next_poll(monkeypatch):
    """Records reached after the deadline are not handled: the consumer seeks back to the first of
    them in each partition, and only what was handled is committed."""
    import threading
    from types import SimpleNamespace

    from kafka.structs import TopicPartition

    from kafka_workers import commits, metrics, polls

    clock = iter(range(100))  # each look at the clock is one second later
    monkeypatch.setattr(polls, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    handled, committed, seeks = [], [], []
    monkeypatch.setattr(polls, "process_with_retry",
                        lambda record, holder, stop: handled.append(record.offset) or Outcome(None, "processed"))
    monkeypatch.setattr(commits, "commit", lambda consumer, pending: committed.append(dict(pending)))
    monkeypatch.setattr(metrics, "event_handled", lambda *a: None)
    consumer = SimpleNamespace(seek=lambda tp, offset: seeks.append((tp.partition, offset)))
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    records = {a: [SimpleNamespace(offset=o) for o in (10, 11, 12)], b: [SimpleNamespace(offset=o) for o in (5, 6)]}
    pending: dict = {}
    polls.handle_one_at_a_time(consumer, records, None, threading.Event(), Stats(), pending, deadline=1)
    assert handled == [10, 11]
    assert seeks == [(0, 12), (1, 5)]
    assert [{tp.partition: m.offset for tp, m in c.items()} for c in committed] == [{0: 12}]


def test_a_replay_is_taken_over_only_once_its_longest_send_is_over(monkeypatch):
    """A dead letter's replay record is taken over once older than ``stale_s``. A send can last a
    new producer's start, the wait for the topic's metadata (max_block_ms) and the ack's; stale_s
    was the ack's wait alone, so a replay still sending was taken over, and the letter sent twice."""
    from core import dead_letter_replays, kafka_io
    from kafka_workers import dead_letters

    config, asked = {}, []

    class Producer:
        def __init__(self, **kwargs):
            config.update(kwargs)

    class Claimed(Exception):
        pass

    def claim(letter_id, doc, stale_s, db=None):
        asked.append(stale_s)
        raise Claimed

    monkeypatch.setattr(kafka_io, "KafkaProducer", Producer)
    kafka_io.get_producer.cache_clear()
    try:
        kafka_io.get_producer()
    finally:
        kafka_io.get_producer.cache_clear()
    letter = dead_letter_payload(b'{"event_id": "e1"}', "bad", "ratings", 0, 7, key=b"u1")
    monkeypatch.setattr(dead_letters, "collect", lambda reason=None: {letter["id"]: letter})
    monkeypatch.setattr(dead_letter_replays, "claim", claim)
    with pytest.raises(Claimed):
        dead_letters.main(["replay", "--id", letter["id"]])
    start_ms = config.get("api_version_auto_timeout_ms", 2000)  # kafka-python's default
    assert asked[0] > (start_ms + config["max_block_ms"]) / 1000 + kafka_io.ack_wait_s()


def test_a_lock_lost_while_handling_an_event_uses_up_no_try_and_is_logged_each_time(monkeypatch, caplog):
    """LeaseLost (the user's lock taken over while this worker stalled: nothing written) counted as
    the message's error: three in a row dead-lettered a valid event."""
    import threading
    from types import SimpleNamespace

    from core import locking
    from kafka_workers import retry

    tries, sent = [], []

    def handle(value, model):
        tries.append(value)
        if len(tries) <= retry.max_attempts():
            raise locking.LeaseLost("1 of 1 lock(s) (user:u1, ...) taken over while held")
        return Outcome(None, "processed")

    monkeypatch.setattr(retry, "handle", handle)
    monkeypatch.setattr(retry, "send_dead_letter", lambda record, outcome, attempts: sent.append(outcome))
    monkeypatch.setattr(retry, "retry_delay_s", lambda: 0.0)
    record = SimpleNamespace(topic="ratings", partition=0, offset=1, value=b'{"event_id": "e1"}')
    with caplog.at_level("WARNING", logger=retry.log.name):
        outcome = retry.process_with_retry(record, SimpleNamespace(model=None), threading.Event())
    assert outcome.status == "processed" and sent == []
    lost = [r for r in caplog.records if "lock lost" in r.getMessage()]
    assert len(lost) == retry.max_attempts() and lost[-1].levelname == "ERROR"


def test_a_lock_lost_on_every_try_ends_in_a_dead_letter_naming_the_lock(monkeypatch, caplog):
    """A LeaseLost used up no try, ever: a worker that stalled on every try of a message retried it
    for ever and held its partition back. After ``max_attempts()`` lost leases each one counts as a
    try, so the message is dead-lettered (replayable) with the lost lock as the reason."""
    import threading
    from types import SimpleNamespace

    from core import locking
    from kafka_workers import retry

    class NoWaiting(threading.Event):  # the back-off's waits, skipped (never stopped)
        def wait(self, timeout=None):
            return False

    tries, sent = [], []

    def handle(value, model):
        tries.append(value)
        if len(tries) > 10 * retry.max_attempts():
            raise AssertionError("still retried")
        raise locking.LeaseLost("1 of 1 lock(s) (user:u1, ...) taken over while held")

    monkeypatch.setattr(retry, "handle", handle)
    monkeypatch.setattr(retry, "send_dead_letter",
                        lambda record, outcome, attempts, **more: sent.append((outcome, attempts)))
    record = SimpleNamespace(topic="ratings", partition=0, offset=1, value=b'{"event_id": "e1"}')
    with caplog.at_level("WARNING", logger=retry.log.name):
        outcome = retry.process_with_retry(record, SimpleNamespace(model=None), NoWaiting())
    assert len(tries) == 2 * retry.max_attempts()  # the free ones, then the tries
    assert outcome.status == "dead-letter" and "LeaseLost" in outcome.reason and "user:u1" in outcome.reason
    assert sent == [(outcome, retry.max_attempts())]


def test_a_dead_letter_after_lost_leases_counts_them_beside_its_tries(monkeypatch):
    """The letter of a message whose every try lost its user's lock said ``attempts: 3``: the three
    lost leases that used no try were not in it, so an operator could not tell a stalling worker
    from a message that failed three times. It now carries ``lost_leases`` (all of them), also when
    Kafka refuses it and it goes bare; a message that simply failed has 0."""
    import threading
    from types import SimpleNamespace

    from core import kafka_io, locking
    from kafka_workers import retry

    class NoWaiting(threading.Event):  # the back-off's waits, skipped (never stopped)
        def wait(self, timeout=None):
            return False

    letters, refused = [], []

    def publish_json(topic, payload, key=None):
        letters.append(payload)
        if refused:
            raise kafka_io.RecordRefused(refused.pop())

    def lose_the_lock(value, model):
        raise locking.LeaseLost("1 of 1 lock(s) (user:u1, ...) taken over while held")

    monkeypatch.setattr(kafka_io, "publish_json", publish_json)
    monkeypatch.setattr(retry, "handle", lose_the_lock)
    record = SimpleNamespace(topic="ratings", partition=0, offset=1, key=b"u1", value=b'{"event_id": "e1"}')
    retry.process_with_retry(record, SimpleNamespace(model=None), NoWaiting())
    refused.append("MessageSizeTooLargeError")
    retry.process_with_retry(record, SimpleNamespace(model=None), NoWaiting())
    letter, refused_letter, bare = letters
    assert refused_letter["lost_leases"] == 2 * retry.max_attempts()
    assert (letter["attempts"], letter["lost_leases"]) == (retry.max_attempts(), 2 * retry.max_attempts())
    assert "LeaseLost" in letter["reason"] and "user:u1" in letter["reason"]
    assert bare["value_b64"] is None and bare["lost_leases"] == 2 * retry.max_attempts()

    def fail(value, model):
        raise ValueError("no model")

    letters.clear()
    monkeypatch.setattr(retry, "handle", fail)
    retry.process_with_retry(record, SimpleNamespace(model=None), NoWaiting())
    assert [(x["attempts"], x["lost_leases"]) for x in letters] == [(retry.max_attempts(), 0)]


@pytest.mark.parametrize("down", [False, True])
def test_the_worker_creates_the_indexes_at_start_and_runs_without_mongodb_answering(monkeypatch, down):
    """Only mongo_load created the indexes, so one a deploy added (the staff records' look-up by
    ``deleted_users.refs``) was missing, and its query scanned, until the next load."""
    from pymongo.errors import ServerSelectionTimeoutError

    from core import mongo
    from kafka_workers import metrics, worker

    calls = []

    def ensure_indexes():
        calls.append("indexes")
        if down:
            raise ServerSelectionTimeoutError("no server")

    monkeypatch.setattr(mongo, "ensure_indexes", ensure_indexes)
    monkeypatch.setattr(worker, "run", lambda stop: calls.append("run"))
    monkeypatch.setattr(metrics, "serve_from_env", lambda: None)
    monkeypatch.setattr(worker.signal, "signal", lambda *a: None)
    assert worker.main() == 0
    assert calls == ["indexes", "run"]


@pytest.mark.parametrize("raw_id,marked", [("user:u1", False), ("an id with spaces", False), ("evt-0123456789", True)])
def test_only_a_well_formed_event_id_is_marked_dead_lettered(monkeypatch, raw_id, marked):
    """An invalid message's id comes from its raw JSON unchecked; marking it on ``event_claims``
    would upsert any document there, e.g. ``user:<id>``, a user's writer lock."""
    import json
    from types import SimpleNamespace

    from core import cancellation, kafka_io
    from kafka_workers.dead_letter_sender import send_dead_letter

    notes = []
    monkeypatch.setattr(cancellation, "note_dead_letter", notes.append)
    monkeypatch.setattr(kafka_io, "publish_json", lambda topic, payload, key=None: None)
    value = json.dumps({"event_id": raw_id, "rating": "five"}).encode()
    record = SimpleNamespace(value=value, key=b"u1", topic="ratings", partition=0, offset=1)
    send_dead_letter(record, Outcome(None, "dead-letter", "bad rating"), attempts=1)
    assert notes == ([raw_id] if marked else [])


def test_waiting_out_an_outage_keeps_healthz_alive(monkeypatch):
    """The outage back-offs never marked the loop alive, so /healthz said "stalled" (503) after
    WORKER_MAX_POLL_INTERVAL_MS of a MongoDB outage, and a healthcheck restarted every worker."""
    import threading
    from types import SimpleNamespace

    from pymongo.errors import ServerSelectionTimeoutError

    from kafka_workers import commits, metrics, retry

    turns, waits = [], []
    monkeypatch.setattr(metrics, "loop_turned", lambda: turns.append(len(waits)))

    class CountedWaits(threading.Event):
        def wait(self, timeout=None) -> bool:
            waits.append(timeout)
            return False

    def handle(value, model):
        if len(waits) < 3:
            raise ServerSelectionTimeoutError("MongoDB down")
        return Outcome(None, "processed")

    monkeypatch.setattr(retry, "handle", handle)
    record = SimpleNamespace(topic="ratings", partition=0, offset=1, value=b'{"event_id": "e1"}')
    assert retry.process_with_retry(record, SimpleNamespace(model=None), CountedWaits()).status == "processed"
    assert turns == [0, 1, 2]  # before each of the three waits

    turns.clear(), waits.clear()
    monkeypatch.setattr(commits, "finish_tail", lambda tail: len(waits) >= 2)
    assert commits.finish_tail_or_wait(object(), CountedWaits())
    assert turns == [0, 1]


@pytest.mark.parametrize("raw_id", ["user:victim", "an id with spaces", "evt-0123456789"])
def test_an_invalid_message_is_a_dead_letter_and_claims_nothing(monkeypatch, raw_id):
    """Claims share their collection with the users' locks: an invalid message naming
    ``event_id: "user:victim"`` was once claimed before validation, and held the victim's writer
    lock. The one-message path claimed a well-formed id of an invalid message and the batched path
    did not; neither does now (a valid event is claimed once, by its batch of one)."""
    import json
    import threading
    from types import SimpleNamespace

    from core import cancellation
    from kafka_workers import retry

    claims, sent = [], []
    monkeypatch.setattr(cancellation, "_decide", lambda *a, **k: claims.append(a) or cancellation.STORED)
    monkeypatch.setattr(cancellation, "claim_batch", lambda *a, **k: claims.append(a) or (set(), set(), True))
    monkeypatch.setattr(retry, "send_dead_letter", lambda record, outcome, attempts, **more: sent.append(outcome))
    record = SimpleNamespace(value=json.dumps({"event_id": raw_id, "junk": 1}).encode(), key=b"x", topic="ratings",
                             partition=0, offset=1)
    outcome = retry.process_with_retry(record, SimpleNamespace(model=None), threading.Event())
    assert outcome.status == "dead-letter" and outcome.event is None and sent == [outcome]
    assert claims == []


def test_one_message_waits_out_outages_and_free_lost_leases_and_counts_its_own_failures(monkeypatch):
    """The whole retry policy of one message, in one sequence: outages and the first
    ``max_attempts()`` lost leases share one back-off (0.2 s doubling to 5 s) and use up no try;
    the message's own failures (and later lost leases) wait ``WORKER_RETRY_DELAY_S`` doubling, and
    the last try's is the dead letter's reason; a letter Kafka cannot take yet is waited out on the
    same back-off. The sequence of the worker's retry loop before it was made one flow."""
    import threading
    from types import SimpleNamespace

    from pymongo.errors import ServerSelectionTimeoutError

    from core import kafka_io, locking
    from kafka_workers import metrics, retry

    monkeypatch.setenv("WORKER_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("WORKER_RETRY_DELAY_S", "1")
    down, lost, bad = ServerSelectionTimeoutError("down"), locking.LeaseLost("user:u1 taken over"), ValueError("bad")
    script = [down, lost, bad, down, lost, bad, lost, lost]
    waits, reasons, turns, letters = [], [], [], []

    class Waits(threading.Event):
        def wait(self, timeout=None) -> bool:
            waits.append(timeout)
            return False

    def handle(value, model):
        raise script.pop(0)

    def send(record, outcome, attempts, lost_leases=0):
        letters.append((outcome.reason, attempts, lost_leases))
        if len(letters) == 1:
            raise kafka_io.PublishError("Kafka down")

    monkeypatch.setattr(retry, "handle", handle)
    monkeypatch.setattr(retry, "send_dead_letter", send)
    monkeypatch.setattr(metrics, "retried", reasons.append)
    monkeypatch.setattr(metrics, "loop_turned", lambda: turns.append(len(waits)))
    record = SimpleNamespace(topic="ratings", partition=0, offset=1, key=b"u1", value=b'{"event_id": "e1"}')
    outcome = retry.process_with_retry(record, SimpleNamespace(model=None), Waits())
    assert outcome.status == "dead-letter" and outcome.reason.startswith("LeaseLost: user:u1") and not script
    assert waits == [0.2, 0.4, 1.0, 0.8, 1.6, 2.0, 3.2, 5.0]
    assert reasons == ["outage", "lock-lost", "error", "outage", "lock-lost", "error", "lock-lost", "outage"]
    assert turns == [0, 1, 3, 4, 6, 7]  # before each back-off wait, never before a try's own
    assert letters == [(outcome.reason, 3, 4)] * 2


@pytest.mark.parametrize("failure", ["outage", "error", "letter"])
def test_one_message_stopped_while_it_waits_is_left_for_redelivery(monkeypatch, failure):
    """SIGTERM during any wait of a message returns None (not committed: the partition's next owner
    redelivers it), and its dead letter is not sent."""
    import threading
    from types import SimpleNamespace

    from pymongo.errors import ServerSelectionTimeoutError

    from core import kafka_io
    from kafka_workers import retry

    monkeypatch.setenv("WORKER_MAX_ATTEMPTS", "1" if failure == "letter" else "3")
    stop, sent = threading.Event(), []  # the letters tried

    def handle(value, model):
        raise ServerSelectionTimeoutError("down") if failure == "outage" else ValueError("bad")

    def send(record, outcome, attempts, lost_leases=0):
        sent.append(outcome)
        stop.set()
        raise kafka_io.PublishError("Kafka down")

    monkeypatch.setattr(retry, "handle", handle)
    monkeypatch.setattr(retry, "send_dead_letter", send)
    if failure != "letter":
        stop.set()
    record = SimpleNamespace(topic="ratings", partition=0, offset=1, key=b"u1", value=b'{"event_id": "e1"}')
    assert retry.process_with_retry(record, SimpleNamespace(model=None), stop) is None
    assert len(sent) == (failure == "letter")
