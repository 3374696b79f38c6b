"""Whether the ratings topic exists, for /readyz: a worker subscribed to a missing topic joins its
group and heartbeats, consuming nothing, and counted as ready while the broker answered.

Read from the consumer's metadata cache, never waiting on the broker (a broker down would freeze
the consume loop, and SIGTERM, for as long).
"""
from __future__ import annotations

import logging
import time

from kafka import KafkaConsumer

from kafka_workers import metrics

log = logging.getLogger("kafka_workers.topic_check")
TOPIC_CHECK_S = 1.0  # how often the loop looks whether its topic exists (for /readyz)
TOPIC_REFRESH_S = 30.0  # how often it asks for fresh metadata while the topic exists (a deleted one is seen)


def topic_exists(consumer: KafkaConsumer, topic: str, asked_ms: float) -> bool | None:
    """Whether ``topic``, the one the worker subscribes to, exists (for /readyz), from the consumer's
    metadata cache, never waiting: True while it lists partitions of the topic; False when a
    refresh that ended after ``asked_ms`` (wall time of the last :func:`check_topic` request) does
    not list it; None while that is not known.

    The cache decides, not the assignment: a member keeps its partitions of a deleted topic until
    the group's leader rebalances. kafka-python's ``partitions_for_topic`` would ask the broker, and
    wait for it without a limit: a broker down then froze the consume loop (and SIGTERM) for as
    long. So this reads its cache (kafka-python 2.x ``_client.cluster``; a unit test holds it to the
    pinned version); a missing attribute reads as not known, i.e. not ready, never as ready."""
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


def check_topic(consumer: KafkaConsumer, topic: str, asked_ms: float) -> float:
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


class TopicWatch:
    """:func:`check_topic` from the consume loop, every ``TOPIC_CHECK_S``; /readyz says "starting"
    until the first answer. State is real: when the loop last looked, and when it last asked."""

    def __init__(self, consumer: KafkaConsumer, topic: str) -> None:
        self.consumer, self.topic = consumer, topic
        self.checked_at, self.asked_ms = 0.0, 0.0
        metrics.topic_checked(topic, None)

    def check_when_due(self) -> None:
        if time.monotonic() - self.checked_at >= TOPIC_CHECK_S:
            self.asked_ms, self.checked_at = check_topic(self.consumer, self.topic, self.asked_ms), time.monotonic()
