"""The worker's Kafka consumer: a member of the group ``KAFKA_WORKER_GROUP`` on the ratings topic,
and what it tells without a network call (the broker's last answer, the lag)."""
from __future__ import annotations

import os
import socket

from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition

from core.settings import get_settings
from kafka_workers.batch import Tail
from kafka_workers.commits import CommitOnRevoke
from kafka_workers.config import batch_max, group_id, max_poll_interval_ms


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
