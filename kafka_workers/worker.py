"""Rating-event worker: one member of the Kafka consumer group ``KAFKA_WORKER_GROUP``.

    python -m kafka_workers.worker            # run as many processes as there are cores/partitions

At-least-once end to end: offsets are committed only after MongoDB holds the result of every
message up to them, and processing is idempotent, so a crash (even ``kill -9``) redelivers and
re-applies nothing twice. Each poll's records (up to ``WORKER_BATCH_MAX``) are processed together
(``kafka_workers.batch.handle_batch``: grouped by user, each user's history read and written
once, folded in once, bulk writes); if anything in a batch fails, that batch is handled again one
message at a time, which isolates the message at fault. While MongoDB is unreachable the worker
retries the same message with back-off instead of skipping it; any other exception on a message (a document MongoDB refuses, a
model numpy cannot solve, a bug) is retried ``WORKER_MAX_ATTEMPTS`` times and then dead-lettered
with the reason (``python -m kafka_workers.dead_letters`` lists and replays them). A commit the
broker refuses (it is down, or the group is rebalancing) is kept and retried, never fatal, and a
rebalance listener commits what is done before partitions move. SIGTERM finishes the current batch, commits,
leaves the group. Counters, lag, the model version and the rating -> list histogram are on
/metrics (the counters and lag also logged when they change), liveness on /healthz, readiness
(the broker answers, the topic exists) on /readyz (``kafka_workers/metrics.py``).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError, WTimeoutError
from threadpoolctl import threadpool_limits

from core import cancellation, catalog, kafka_io, locking, mongo, published
from core.env import env_str
from core.events import InvalidEvent, RatingEvent, is_event_id, parse_event
from core.settings import get_settings
from kafka_workers import metrics
from kafka_workers.config import (batch_max, check_all, commit_every_s, group_id, max_attempts,
                                   max_poll_interval_ms, remember_catalog_max, retry_delay_s)
from kafka_workers.model_holder import ModelHolder
from kafka_workers.dead_letters import bare_letter, dead_letter_payload, letter_key
from kafka_workers.batch import HistoriesReloaded, Tail, finish, handle_batch
from kafka_workers.exclusions_cache import forget_users_without_exclusions
from kafka_workers.outcomes import STATUSES, Outcome
from kafka_workers.process import handle

log = logging.getLogger("kafka_workers.worker")
STATS_EVERY_S = 5.0
TOPIC_CHECK_S = 1.0  # how often the loop looks whether its topic exists (for /readyz)
TOPIC_REFRESH_S = 30.0  # how often it asks for fresh metadata while the topic exists (a deleted one is seen)
COMMIT_TIMEOUT_MS = 5000


class CommitOnRevoke(ConsumerRebalanceListener):
    """On a rebalance, commit what is processed before the partitions go, and forget the rest;
    on an assignment, forget which users had no exclusions (``kafka_workers.exclusions_cache``:
    a user may have been another worker's meanwhile).

    kafka-python calls this inside ``poll()`` before the member rejoins, while it still owns the
    partitions: a commit that failed earlier (the group was already rebalancing) gets its last
    chance, so the next owner does not redo work; what cannot be committed is dropped (the next
    owner redelivers it, and processing is idempotent). The batches' tail is finished first
    (commit-after-write), and its locks given back before another member takes the users over.
    State is real: the worker's pending offsets and its batches' tail.
    """

    def __init__(self, pending: dict[TopicPartition, OffsetAndMetadata], tail: Tail | None = None) -> None:
        self.pending = pending
        self.tail = tail if tail is not None else Tail()
        self.consumer: KafkaConsumer | None = None

    def on_partitions_revoked(self, revoked) -> None:
        done = {tp: meta for tp, meta in self.pending.items() if tp in revoked} if finish_tail(self.tail) else {}
        if done and self.consumer is not None:
            try:
                self.consumer.commit(done, timeout_ms=COMMIT_TIMEOUT_MS)
                log.info("rebalance: committed %d revoked partition(s) before giving them up", len(done))
            except KafkaError as exc:
                log.warning("rebalance: commit of revoked partitions failed (%s); the next owner redelivers",
                            exc.__class__.__name__)
        for tp in revoked:
            self.pending.pop(tp, None)

    def on_partitions_assigned(self, assigned) -> None:
        forget_users_without_exclusions()  # a user may have been another worker's meanwhile
        log.info("rebalance: assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


def remember_catalog() -> None:
    """:func:`core.catalog.remember_catalog`, never fatal: without it the products are read as needed."""
    limit = remember_catalog_max()
    if limit <= 0:
        return
    try:
        started = time.monotonic()
        read = catalog.remember_catalog(limit)
        if read:
            log.info("catalog remembered: %d products in %.2fs", read, time.monotonic() - started)
    except Exception as exc:  # noqa: BLE001 - MongoDB down: the batches read the products they need
        log.warning("catalog not remembered (%s: %s)", exc.__class__.__name__, str(exc)[:200])


def make_consumer(pending: dict[TopicPartition, OffsetAndMetadata] | None = None,
                  tail: Tail | None = None) -> KafkaConsumer:
    """A group member of the ratings topic; ``pending`` (the offsets waiting for a commit) is what
    its rebalance listener commits when partitions are revoked, once ``tail`` is finished."""
    s = get_settings()
    consumer = KafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap_servers,
        group_id=group_id(),
        client_id=f"worker-{socket.gethostname()}-{os.getpid()}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch_max() if batch_max() > 1 else 200,
        max_poll_interval_ms=max_poll_interval_ms(),
        session_timeout_ms=10_000,
        heartbeat_interval_ms=3_000,
        fetch_max_wait_ms=50,  # low latency: answer a poll as soon as one event is there
        metrics_enabled=False,  # kafka-python's own sensors: read by nothing here, 3% of a worker's CPU
    )
    listener = CommitOnRevoke(pending if pending is not None else {}, tail)
    listener.consumer = consumer
    consumer.subscribe([s.ratings_topic], listener=listener)
    return consumer


def last_broker_contact(consumer: KafkaConsumer) -> float | None:
    """Wall time the group coordinator last answered this member's heartbeat (None: never), for
    /readyz. kafka-python says it nowhere public (its metrics are off here, a 3% CPU saving), so
    this reads its heartbeat record (kafka-python 2.x; a unit test holds it to the pinned version);
    a missing attribute reads as never, i.e. not ready, never as ready."""
    heartbeat = getattr(getattr(consumer, "_coordinator", None), "heartbeat", None)
    last = getattr(heartbeat, "last_receive", None)
    return float(last) if isinstance(last, (int, float)) and last > 0 else None


def topic_exists(consumer: KafkaConsumer, topic: str, asked_ms: float) -> bool | None:
    """Whether ``topic``, the one the worker subscribes to, exists (for /readyz), from the consumer's
    metadata cache, never waiting: True while it lists partitions of the topic; False when a
    refresh that ended after ``asked_ms`` (wall time of the last :func:`_check_topic` request) does
    not list it; None while that is not known.

    A worker subscribed to a missing topic joins its group and heartbeats, consuming nothing: it
    counted as ready while the broker answered. The cache decides, not the assignment: a member
    keeps its partitions of a deleted topic until the group's leader rebalances. kafka-python's
    ``partitions_for_topic`` would ask the broker, and wait for it without a limit: a broker down
    then froze the consume loop (and SIGTERM) for as long. So this reads its cache (kafka-python
    2.x ``_client.cluster``; a unit test holds it to the pinned version); a missing attribute reads
    as not known, i.e. not ready, never as ready."""
    cluster = _metadata(consumer)
    if cluster is None:
        return None
    if cluster.partitions_for_topic(topic):
        return True
    return False if _refreshed_since(cluster, asked_ms) else None


def _metadata(consumer: KafkaConsumer):
    """kafka-python's metadata cache of ``consumer`` (``_client.cluster``), None if it has none."""
    return getattr(getattr(consumer, "_client", None), "cluster", None)


def _refreshed_since(cluster, asked_ms: float) -> bool:
    """Whether the metadata was refreshed after ``asked_ms`` (wall time in ms)."""
    return getattr(cluster, "_last_successful_refresh_ms", 0) > asked_ms


def _check_topic(consumer: KafkaConsumer, topic: str, asked_ms: float) -> float:
    """Tell /readyz whether the topic exists (:func:`topic_exists`), logged when that changes, and
    ask for fresh metadata when the last request was answered: at once while the topic is missing
    (a topic made since is assigned within seconds, not at the next refresh, ``metadata_max_age_ms``:
    5 minutes), every ``TOPIC_REFRESH_S`` while it exists (one small request: a deleted topic is
    seen). The request goes out with the next poll; nothing here waits. Returns when it last asked."""
    exists = topic_exists(consumer, topic, asked_ms)
    if exists is not None:
        was = metrics.topic_checked(topic, exists)
        if not exists and was is not False:
            log.error("topic %s does not exist: this worker consumes nothing until it does (/readyz: no-topic)", topic)
        elif exists and was is False:
            log.info("topic %s exists now", topic)
    now_ms = time.time() * 1000
    cluster = _metadata(consumer)
    if cluster is not None and _refreshed_since(cluster, asked_ms) and (
            exists is False or now_ms - asked_ms >= TOPIC_REFRESH_S * 1000):
        cluster.request_update()
        return now_ms
    return asked_ms


class Stats:
    """This worker's counts of outcomes, for its log (/metrics has them too, and the latency)."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(STATUSES, 0)
        self.reported_at = 0.0
        self.last_logged: tuple | None = None  # the counters last logged: quiet while idle

    def add(self, outcome: Outcome) -> None:
        """Count an event's outcome here and on /metrics (the dashboard's p50/p99)."""
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        metrics.event_handled(outcome.status, outcome.latency_s)


def consumer_lag(consumer: KafkaConsumer) -> int | None:
    """Events in the assigned partitions not yet handed to this worker; None until known.

    From the high watermarks of the latest fetch responses, without a network call: the former
    ``end_offsets()`` waits up to ``request_timeout_ms`` (305 s in kafka-python) when the broker
    is down, which would freeze the loop (and SIGTERM) for minutes during a broker outage.
    """
    total = 0
    for tp in consumer.assignment():
        high, pos = consumer.highwater(tp), consumer.position(tp, timeout_ms=0)
        if high is None or pos is None:
            return None
        total += max(0, high - pos)
    return total


def commit(consumer: KafkaConsumer, pending: dict[TopicPartition, OffsetAndMetadata]) -> bool:
    """Commit the offsets of processed messages; on failure keep them for the next try.

    kafka-python raises CommitFailedError / RebalanceInProgressError when the group rebalanced
    under this member (e.g. it stalled past the session timeout), which ended the worker, and
    without a timeout it waits forever while the broker is down, deaf to SIGTERM. Losing a commit
    is harmless (the messages are redelivered and processing is idempotent), and committing later
    is correct: every message below the offset is in MongoDB.
    """
    for tp in [tp for tp in pending if tp not in consumer.assignment()]:
        del pending[tp]  # lost in a rebalance: its new owner resumes from the last commit and commits
    if not pending:
        return True
    try:
        consumer.commit(dict(pending), timeout_ms=COMMIT_TIMEOUT_MS)
    except KafkaError as exc:
        log.warning("commit of %d partition(s) failed (%s: %s); will retry", len(pending),
                    exc.__class__.__name__, str(exc)[:120])
        return False
    pending.clear()
    return True


def finish_tail(tail: Tail) -> bool:
    """Finish what the handled batches left (``batch.Tail``); False when MongoDB refused, which
    is logged: the rest is kept for the next try, and no offset may be committed until then."""
    if not tail:
        return True
    try:
        finish(tail)
        return True
    except Exception as exc:  # noqa: BLE001 - an outage, most likely: kept, retried, never lost
        log.warning("the handled batches' locks and ratings not written (%s: %s); will retry",
                    exc.__class__.__name__, str(exc)[:200])
        return False


def finish_tail_or_wait(tail: Tail, stop: threading.Event) -> bool:
    """:func:`finish_tail`, retried with back-off for as long as it fails; False if stopped first."""
    delay = 0.2
    while not finish_tail(tail):
        metrics.loop_turned()  # waiting out an outage is alive: a restart would not help (/healthz)
        if stop.wait(delay):
            return False
        delay = min(delay * 2, 5.0)
    return True


# An outage: nothing can be processed until the server is back, so the message waits (as long as
# it takes) rather than being dead-lettered. The model store is one while this process has never
# read its CURRENT (``core.published``). Anything else is about this one message (a dead letter
# Kafka refuses, ``kafka_io.RecordRefused``, is handled by ``send_dead_letter`` and never waited on).
OUTAGE_ERRORS = (ConnectionFailure, ExecutionTimeout, WTimeoutError, kafka_io.PublishError,
                 published.ModelStoreUnreachable)


def skip_cancelled(record) -> Outcome | None:
    """An event the site cancelled (its ack timed out and the shopper was told "not saved") is
    skipped and committed past, not stored; None for every other event (it is claimed first, see
    ``core.cancellation``)."""
    event_id = cancellation.event_id_of(record.value)
    if event_id is None or cancellation.claim(event_id):
        return None
    log.info("cancelled by the site, skipped: %s[%d]@%d event %s", record.topic, record.partition, record.offset,
             event_id)
    return Outcome(None, "cancelled", "the site cancelled it: its ack timed out")


def _failed_outcome(raw: bytes | None, exc: BaseException) -> Outcome:
    try:
        event = parse_event(raw)
    except InvalidEvent:
        event = None
    return Outcome(event, "dead-letter", f"{exc.__class__.__name__}: {exc}"[:500])


def _note_dead_letter(event_id: str) -> None:
    """``cancellation.note_dead_letter``: MongoDB down raises (an outage: the caller waits it out);
    any other refusal is logged, and the letter still goes (the status then says "pending")."""
    try:
        cancellation.note_dead_letter(event_id)
    except PyMongoError as exc:
        if isinstance(exc, OUTAGE_ERRORS):
            raise
        log.error("dead letter of event %s not marked on its claim (%s: %s)", event_id, exc.__class__.__name__,
                  str(exc)[:200])


def send_dead_letter(record, outcome: Outcome, attempts: int, lost_leases: int = 0) -> None:
    """Publish the message to the dead-letter topic with its reason, its counted tries and its lost
    leases (``dead_letter_payload``; raises while Kafka is down).

    The event's claim is marked dead-lettered first (``cancellation.note_dead_letter``: MongoDB
    down raises, an outage the callers wait out), so ``GET /api/ratings/<id>/`` says so instead of
    "pending" for ever; good events never come here.

    A letter Kafka refuses for itself (``kafka_io.RecordRefused``: too large, invalid) is not an
    outage, and waiting would block the partition for good: it goes again without the original
    (``bare_letter``), and if even that is refused the message is logged and left behind.
    """
    letter = dead_letter_payload(record.value, outcome.reason, record.topic, record.partition, record.offset,
                                 key=record.key, event_id=outcome.event.event_id if outcome.event else None,
                                 attempts=attempts, lost_leases=lost_leases)
    if is_event_id(letter["event_id"]):  # before the send: a send that fails comes back here, a mark would not
        _note_dead_letter(letter["event_id"])  # (an invalid message's id is unchecked: "user:<id>" is a lock's)
    topic = get_settings().dead_letter_topic
    try:
        kafka_io.publish_json(topic, letter, key=letter_key(record.key))
    except kafka_io.RecordRefused as exc:
        log.error("dead letter of %s[%d]@%d refused by Kafka (%s); sent without the original", record.topic,
                  record.partition, record.offset, exc)
        try:
            kafka_io.publish_json(topic, bare_letter(letter, str(exc)))
        except kafka_io.RecordRefused as again:
            log.error("dead letter of %s[%d]@%d refused again (%s); the message is skipped: %s", record.topic,
                      record.partition, record.offset, again, outcome.reason)
            return
    log.warning("dead letter %s[%d]@%d: %s", record.topic, record.partition, record.offset, outcome.reason)


def _handle_poll(records: list, holder: ModelHolder, stop: threading.Event, tail: Tail) -> list[Outcome] | None:
    """One outcome per record (in order) for a whole poll, or None when the batch must be handled
    one message at a time instead: an outage, or an exception anywhere in the batch (a poison
    message: the per-message path retries each message and dead-letters the one at fault, and
    redoes nothing that counts, see ``handle_batch``)."""
    outcomes: list[Outcome | None] = [None] * len(records)
    valid: dict[int, RatingEvent] = {}
    for i, record in enumerate(records):
        try:
            valid[i] = parse_event(record.value)
        except InvalidEvent as exc:
            outcomes[i] = Outcome(None, "dead-letter", str(exc))
    try:  # the batch claims its events first (core.cancellation): a cancelled one is skipped
        for i, outcome in zip(valid, handle_batch(list(valid.values()), holder.model, tail)):
            outcomes[i] = outcome
    except HistoriesReloaded as exc:  # expected once per reload: the per-message path reads the new histories
        log.info("%s; handling the batch's %d messages one at a time", exc, len(records))
        return None
    except Exception as exc:  # noqa: BLE001 - an outage or a poison message: the per-message path copes
        log.warning("batch of %d messages failed (%s: %s); handling them one at a time", len(records),
                    exc.__class__.__name__, str(exc)[:200])
        return None
    delay = 0.2
    for record, outcome in zip(records, outcomes):
        while outcome.status == "dead-letter":  # after the batch's writes: a failed batch sends none
            try:
                send_dead_letter(record, outcome, attempts=1)
                break
            except OUTAGE_ERRORS as exc:
                if stop.is_set():
                    return None
                log.warning("dead letter not sent (%s); retrying in %.1fs", exc.__class__.__name__, delay)
                metrics.loop_turned()  # an outage: alive, a restart would not help (/healthz)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
    return outcomes  # type: ignore[return-value]


def _one_at_a_time(consumer: KafkaConsumer, batches: dict, holder: ModelHolder, stop: threading.Event, stats: Stats,
                   pending: dict[TopicPartition, OffsetAndMetadata], deadline: float) -> None:
    """Handle a poll's records one message at a time (``WORKER_BATCH_MAX=1``, or its batch failed),
    committing each partition's after them. Records left at ``deadline`` (time.monotonic()) are
    fetched again by the next poll, so the group never rebalances under a long poll; SIGTERM
    stops after the message in hand."""
    for tp, records in batches.items():
        done = None
        for record in records:
            if time.monotonic() > deadline:
                consumer.seek(tp, record.offset)  # the next poll fetches the rest again
                break
            outcome = _process_with_retry(record, holder, stop)
            if outcome is None:
                break
            stats.add(outcome)
            done = record.offset
            if stop.is_set():  # SIGTERM: this message is done; commit and go
                break
        if done is not None:
            pending[tp] = OffsetAndMetadata(done + 1, "", -1)
            commit(consumer, pending)
        if stop.is_set():
            return


def _report_stats(stats: Stats, consumer: KafkaConsumer, holder: ModelHolder) -> None:
    """Put the lag and the model version on /metrics; log the counters and lag when they changed."""
    stats.reported_at = time.monotonic()
    lag = consumer_lag(consumer)
    metrics.stats_seen(lag, holder.version)
    seen = (*stats.counts.values(), lag)
    if seen != stats.last_logged:  # quiet while idle
        stats.last_logged = seen
        log.info("stats %s lag %s model %s", stats.counts, lag, holder.version)


def _process_with_retry(record, holder: ModelHolder, stop: threading.Event):
    """Handle one message; returns its outcome, or None when stopped before it was done.

    While MongoDB (or Kafka, for a dead letter) is down, retry with back-off for as long as the
    outage lasts. Any other exception (a document MongoDB refuses, a model numpy cannot solve, a
    bug) is this message's problem: it is tried ``max_attempts()`` times, then dead-lettered with
    the exception as the reason, so one message never stops the worker or its partition. A user's
    lock taken over while this worker stalled (:class:`core.locking.LeaseLost`) is no fault of the
    message either: retried like an outage, without using up a try, ``max_attempts()`` times; after
    that each one counts as a try, so a worker that stalls on every try dead-letters the message
    (replayable, the reason names the lock, its ``lost_leases`` all the lost ones) instead of
    holding its partition back for ever.
    """
    delay, attempts, outcome, lost = 0.2, 0, None, 0
    while True:
        try:
            if outcome is None:
                attempts += 1
                try:
                    outcome = skip_cancelled(record) or handle(record.value, holder.model)
                except OUTAGE_ERRORS:
                    attempts -= 1  # an outage is nobody's fault: it does not use up a try
                    raise
                except Exception as exc:  # noqa: BLE001 - the point is that nothing escapes
                    if isinstance(exc, locking.LeaseLost):
                        lost += 1
                        if lost <= max_attempts():  # nothing written; the next try takes the lock again
                            attempts -= 1
                            raise
                    if attempts < max_attempts():
                        metrics.retried("error")
                        wait = retry_delay_s() * 2 ** (attempts - 1)
                        log.warning("error on %s[%d]@%d (try %d of %d): %s: %s; retrying in %.2fs", record.topic,
                                    record.partition, record.offset, attempts, max_attempts(),
                                    exc.__class__.__name__, str(exc)[:200], wait)
                        if stop.wait(wait):
                            return None
                        continue
                    log.error("giving up on %s[%d]@%d after %d tries", record.topic, record.partition,
                              record.offset, attempts, exc_info=exc)
                    outcome = _failed_outcome(record.value, exc)
            if outcome.status == "dead-letter":
                send_dead_letter(record, outcome, attempts, lost_leases=lost)
            return outcome
        except (*OUTAGE_ERRORS, locking.LeaseLost) as exc:  # nobody's fault: wait, and try again
            if stop.is_set():
                return None  # not committed: the next owner of the partition redelivers it
            if isinstance(exc, locking.LeaseLost):
                metrics.retried("lock-lost")
                log.log(logging.ERROR if lost == max_attempts() else logging.WARNING,
                        "lock lost on %s[%d]@%d (%d time(s) for this message; after %d, each uses up a try): %s; "
                        "retrying in %.1fs", record.topic, record.partition, record.offset, lost, max_attempts(),
                        str(exc)[:200], delay)
            else:
                metrics.retried("outage")
                log.warning("infrastructure error on %s[%d]@%d (%s); retrying in %.1fs", record.topic,
                            record.partition, record.offset, exc.__class__.__name__, delay)
            metrics.loop_turned()  # waiting out an outage is alive: a restart would not help (/healthz)
            if stop.wait(delay):
                return None
            delay = min(delay * 2, 5.0)


def run(stop: threading.Event | None = None, name: str | None = None) -> Stats:
    """Consume until ``stop`` is set; returns the counters (tests call this in a thread)."""
    check_all()  # a knob that cannot work stops the worker here, not mid-batch
    stop = stop or threading.Event()
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    # A fold-in's matrices are 64 x 64: OpenBLAS's second thread only adds hand-offs, and on a busy
    # machine (FerretDB beside the worker) a 64 x 64 solve took 1.4-10x longer with two (measured).
    threadpool_limits(1, user_api="blas")
    holder = ModelHolder()
    holder.refresh(force=True)
    stats = Stats()
    pending: dict[TopicPartition, OffsetAndMetadata] = {}
    tail = Tail()  # the handled batches' lock release and ratings insert, done when idle or before a commit
    remember_catalog()
    consumer = make_consumer(pending, tail)
    metrics.watch_broker(lambda: last_broker_contact(consumer))
    topic = get_settings().ratings_topic
    metrics.topic_checked(topic, None)
    budget_s = max_poll_interval_ms() / 1000 / 2
    log.info("worker %s consuming %s as group %s (model %s)", name, topic, group_id(), holder.version)
    committed_at, idle, topic_checked_at, topic_asked_ms = time.monotonic(), True, 0.0, 0.0
    try:
        while not stop.is_set():
            metrics.loop_turned()
            if time.monotonic() - topic_checked_at >= TOPIC_CHECK_S:
                topic_asked_ms, topic_checked_at = _check_topic(consumer, topic, topic_asked_ms), time.monotonic()
            if holder.refresh():  # the pipeline publishes after its reload: likely a new catalog generation
                threading.Thread(target=remember_catalog, name="remember-catalog", daemon=True).start()
            if (pending or tail) and (idle or time.monotonic() - committed_at >= commit_every_s()):
                if not finish_tail_or_wait(tail, stop):  # first: commit-after-write
                    break
                commit(consumer, pending)  # the batches handled since the last commit (or a failed one)
                committed_at = time.monotonic()
            elif tail.due() and not finish_tail_or_wait(tail, stop):  # locks held and ratings kept long enough
                break
            batches = consumer.poll(timeout_ms=200)
            idle = not batches
            polled_at = time.monotonic()
            records = [r for rs in batches.values() for r in rs]
            outcomes = _handle_poll(records, holder, stop, tail) if batch_max() > 1 and records else None
            if outcomes is not None:
                for outcome in outcomes:
                    stats.add(outcome)
                for tp, rs in batches.items():  # committed at the top of the loop
                    pending[tp] = OffsetAndMetadata(rs[-1].offset + 1, "", -1)
            elif batches:
                if not finish_tail_or_wait(tail, stop):  # one at a time: the locks given back first
                    break
                _one_at_a_time(consumer, batches, holder, stop, stats, pending, deadline=polled_at + budget_s)
            if time.monotonic() - stats.reported_at > STATS_EVERY_S:
                _report_stats(stats, consumer, holder)
        if finish_tail_or_wait(tail, stop):  # (stopped: one try)
            commit(consumer, pending)
    finally:
        consumer.close(autocommit=False)
        log.info("worker %s stopped: %s", name, stats.counts)
    return stats


def main() -> int:
    logging.basicConfig(level=env_str("LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    metrics.serve_from_env()
    ensure_indexes()
    run(stop)
    return 0


def ensure_indexes() -> None:
    """Create the indexes the site and the workers query by, at each start, as ``mongo_load`` does:
    a deploy that adds one (the staff records' ``deleted_users.refs``) would otherwise scan until
    the next load. MongoDB being down only delays them to the next start or load."""
    try:
        mongo.ensure_indexes()
    except PyMongoError as exc:
        log.warning("indexes not checked (%s): the next start or mongo_load creates them", exc)


if __name__ == "__main__":
    raise SystemExit(main())
