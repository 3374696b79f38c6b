"""Rating-event worker: one member of the Kafka consumer group ``KAFKA_WORKER_GROUP``.

    python -m kafka_workers.worker            # run as many processes as there are cores/partitions

At-least-once end to end: offsets are committed only after MongoDB holds the result of every
message up to them, and processing is idempotent, so a crash (even ``kill -9``) redelivers and
re-applies nothing twice (``kafka_workers.commits``). Each poll's records (up to
``WORKER_BATCH_MAX``) are processed together; if anything in a batch fails, that batch is handled
again one message at a time, which isolates the message at fault (``kafka_workers.polls``). While
MongoDB is unreachable the worker retries the same message with back-off instead of skipping it;
any other exception on a message is retried ``WORKER_MAX_ATTEMPTS`` times and then dead-lettered
with the reason (``kafka_workers.retry``; ``python -m kafka_workers.dead_letters`` lists and
replays them). SIGTERM finishes the current batch, commits, leaves the group. Counters, lag, the
model version and the rating -> list histogram are on /metrics (the counters and lag also logged
when they change, ``kafka_workers.stats``), liveness on /healthz, readiness (the broker answers,
the topic exists: ``kafka_workers.topic_check``) on /readyz (``kafka_workers/metrics.py``).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

from kafka.structs import OffsetAndMetadata, TopicPartition
from threadpoolctl import threadpool_limits

from core.env import env_str
from core.settings import get_settings
from kafka_workers import commits, metrics
from kafka_workers.batch import Tail
from kafka_workers.config import batch_max, check_all, commit_every_s, group_id, max_poll_interval_ms
from kafka_workers.consumer import last_broker_contact, make_consumer
from kafka_workers.model_holder import ModelHolder
from kafka_workers.polls import handle_as_batch, handle_one_at_a_time
from kafka_workers.startup import ensure_indexes, remember_catalog
from kafka_workers.stats import Stats, report_stats_when_due
from kafka_workers.topic_check import TopicWatch

log = logging.getLogger("kafka_workers.worker")


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
    topic = TopicWatch(consumer, get_settings().ratings_topic)
    budget_s = max_poll_interval_ms() / 1000 / 2
    log.info("worker %s consuming %s as group %s (model %s)", name, topic.topic, group_id(), holder.version)
    committed_at, idle = time.monotonic(), True
    try:
        while not stop.is_set():
            metrics.loop_turned()
            topic.check_when_due()
            if holder.refresh():  # the pipeline publishes after its reload: likely a new catalog generation
                threading.Thread(target=remember_catalog, name="remember-catalog", daemon=True).start()
            if (pending or tail) and (idle or time.monotonic() - committed_at >= commit_every_s()):
                if not commits.finish_tail_or_wait(tail, stop):  # first: commit-after-write
                    break
                commits.commit(consumer, pending)  # the batches handled since the last commit (or a failed one)
                committed_at = time.monotonic()
            elif tail.due() and not commits.finish_tail_or_wait(tail, stop):  # locks held and ratings kept long enough
                break
            batches = consumer.poll(timeout_ms=200)
            idle = not batches
            polled_at = time.monotonic()
            records = [r for rs in batches.values() for r in rs]
            outcomes = handle_as_batch(records, holder, stop, tail) if batch_max() > 1 and records else None
            if outcomes is not None:
                for outcome in outcomes:
                    stats.add(outcome)
                for tp, rs in batches.items():  # committed at the top of the loop
                    pending[tp] = OffsetAndMetadata(rs[-1].offset + 1, "", -1)
            elif batches:
                if not commits.finish_tail_or_wait(tail, stop):  # one at a time: the locks given back first
                    break
                handle_one_at_a_time(consumer, batches, holder, stop, stats, pending, deadline=polled_at + budget_s)
            report_stats_when_due(stats, consumer, holder)
        if commits.finish_tail_or_wait(tail, stop):  # (stopped: one try)
            commits.commit(consumer, pending)
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


if __name__ == "__main__":
    raise SystemExit(main())
