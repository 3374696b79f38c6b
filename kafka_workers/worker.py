"""Rating-event worker: one member of the Kafka consumer group ``KAFKA_WORKER_GROUP``.

    python -m kafka_workers.worker            # run as many processes as there are cores/partitions

At-least-once end to end: offsets are committed only after MongoDB holds the result of every
message up to them, and processing is idempotent, so a crash (even ``kill -9``) redelivers and
re-applies nothing twice. While MongoDB is unreachable the worker retries the same message with
back-off instead of skipping it; a commit the broker refuses (it is down, or the group is
rebalancing) is kept and retried, never fatal. SIGTERM finishes the current message, commits,
leaves the group. Lag and latency are logged and stored in Redis (``recsys:worker:<name>``).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections import deque

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from pymongo.errors import PyMongoError

from core import freshness, kafka_io
from core.settings import get_settings
from kafka_workers.model_holder import ModelHolder
from kafka_workers.process import dead_letter_payload, handle

log = logging.getLogger("kafka_workers.worker")
STATS_EVERY_S = 5.0
COMMIT_TIMEOUT_MS = 5000


def group_id() -> str:
    """Read when the consumer is made, like every other setting: frozen at import time, an
    in-process consumer (tests, tools) could join the production group ``recommender-workers``."""
    return os.environ.get("KAFKA_WORKER_GROUP", "").strip() or "recommender-workers"


def make_consumer() -> KafkaConsumer:
    s = get_settings()
    return KafkaConsumer(
        s.ratings_topic,
        bootstrap_servers=s.kafka_bootstrap_servers,
        group_id=group_id(),
        client_id=f"worker-{socket.gethostname()}-{os.getpid()}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=200,
        max_poll_interval_ms=300_000,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=3_000,
        fetch_max_wait_ms=50,  # low latency: answer a poll as soon as one event is there
    )


class Stats:
    """Rolling processing latency and counters, published for operators."""

    def __init__(self) -> None:
        self.latencies: deque[float] = deque(maxlen=2000)
        self.counts = {"processed": 0, "duplicate": 0, "dead-letter": 0}
        self.published_at = 0.0

    def add(self, status: str, latency_s: float) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        if status == "processed":
            self.latencies.append(latency_s)

    def snapshot(self, lag: int | None, model_version: str | None) -> dict:
        lat = sorted(self.latencies)
        pct = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1) if lat else None)
        return {**self.counts, "lag": lag, "latency_ms_p50": pct(0.5), "latency_ms_p99": pct(0.99),
                "model_version": model_version, "pid": os.getpid(), "at": time.time()}


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


def publish_stats(name: str, snapshot: dict) -> None:
    try:
        import redis

        redis.Redis.from_url(get_settings().redis_url, socket_timeout=1).set(
            f"recsys:worker:{name}", json.dumps(snapshot), ex=60)
    except Exception:
        pass


def _process_with_retry(record, holder: ModelHolder, stop: threading.Event):
    """Handle one message, retrying with back-off while MongoDB (or Kafka for dead letters) is down."""
    delay = 0.2
    while True:
        try:
            outcome = handle(record.value, holder.model)
            if outcome.status == "dead-letter":
                kafka_io.publish_json(get_settings().dead_letter_topic,
                                      dead_letter_payload(record.value, outcome.reason, record.topic,
                                                          record.partition, record.offset),
                                      key=record.key.decode("utf-8", "replace") if record.key else None)
                log.warning("dead letter %s[%d]@%d: %s", record.topic, record.partition, record.offset,
                            outcome.reason)
            return outcome
        except (PyMongoError, kafka_io.PublishError) as exc:
            if stop.is_set():
                return None  # not committed: the next owner of the partition redelivers it
            log.warning("infrastructure error on %s[%d]@%d (%s); retrying in %.1fs", record.topic,
                        record.partition, record.offset, exc.__class__.__name__, delay)
            stop.wait(delay)
            delay = min(delay * 2, 5.0)


def run(stop: threading.Event | None = None, name: str | None = None) -> Stats:
    """Consume until ``stop`` is set; returns the counters (tests call this in a thread)."""
    stop = stop or threading.Event()
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    holder = ModelHolder()
    holder.refresh(force=True)
    consumer = make_consumer()
    stats = Stats()
    pending: dict[TopicPartition, OffsetAndMetadata] = {}
    log.info("worker %s consuming %s as group %s (model %s)", name, get_settings().ratings_topic, group_id(),
             holder.version)
    try:
        while not stop.is_set():
            holder.refresh()
            commit(consumer, pending)  # what an earlier failed commit left behind
            batches = consumer.poll(timeout_ms=200)
            for tp, records in batches.items():
                done = None
                for record in records:
                    outcome = _process_with_retry(record, holder, stop)
                    if outcome is None:
                        break
                    stats.add(outcome.status, outcome.latency_s)
                    if outcome.status == "processed":
                        freshness.record(outcome.latency_s)  # the dashboard's last-hour p50/p99
                    done = record.offset
                    if stop.is_set():  # SIGTERM: this message is done; commit and go
                        break
                if done is not None:
                    pending[tp] = OffsetAndMetadata(done + 1, "", -1)
                    commit(consumer, pending)
                if stop.is_set():
                    break
            if time.monotonic() - stats.published_at > STATS_EVERY_S:
                stats.published_at = time.monotonic()
                snap = stats.snapshot(consumer_lag(consumer), holder.version)
                publish_stats(name, snap)
                seen = (snap["processed"], snap["duplicate"], snap["dead-letter"], snap["lag"])
                if seen != getattr(stats, "last_logged", None):  # quiet while idle
                    stats.last_logged = seen
                    log.info("stats %s", snap)
        commit(consumer, pending)
    finally:
        consumer.close(autocommit=False)
        log.info("worker %s stopped: %s", name, stats.counts)
    return stats


def main() -> int:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
