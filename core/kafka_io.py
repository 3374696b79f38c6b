"""Kafka plumbing shared by the site (producer), the workers and the dead-letters command.

The producer waits for the acknowledgement of all in-sync replicas before it reports success, so
the site never tells a user "saved" for a rating the broker does not have; and it gives up when
the site does (one delivery timeout). A broker that stalls may still write a record after that
(it had the request, the ack was lost): ``PublishError.maybe_sent`` says so, and the site then
cancels the event id (``core.cancellation``) before it answers "not saved".
"""
from __future__ import annotations

import json
import logging
import threading
from functools import lru_cache
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import (CorruptRecordError, InvalidRecordError, InvalidTimestampError, KafkaError,
                          MessageSizeTooLargeError, RecordListTooLargeError, TopicAlreadyExistsError)

from core.breaker import CircuitBreaker, Unavailable
from core.events import RatingEvent
from core.settings import get_settings

log = logging.getLogger(__name__)


class PublishError(Unavailable):
    """The broker did not acknowledge an event; the caller must tell the user it failed.

    ``maybe_sent``: the record was handed to the producer, so the broker may have it (or get it
    later) although no ack came; False when nothing was sent (the breaker refused, no metadata).
    """

    def __init__(self, message: str, maybe_sent: bool = False) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


class RecordRefused(PublishError):
    """Kafka refused this record itself (too large, invalid), not for an outage: sending it again
    fails the same way, so the caller must not wait for Kafka to come back (a dead letter)."""


# Errors about the record, not the broker: the producer's size check and the broker's answers.
RECORD_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError, CorruptRecordError, InvalidRecordError,
                 InvalidTimestampError)


# A new producer's probe of the broker's version (kafka-python's ``api_version_auto_timeout_ms``),
# the first part of a send after a start or a discard (:func:`send_wait_s`).
PRODUCER_START_MS = 2000
SEND_MARGIN_S = 5.0  # a pause of the sender's own, its other reads and writes around the send


# One breaker per process for the site's ratings: after a failed send, ratings are refused at once
# (503) for two seconds instead of each holding a thread for the delivery timeout.
BREAKER = CircuitBreaker("kafka", cooldown_s=2.0)


@lru_cache(maxsize=1)
def get_producer() -> KafkaProducer:
    """The idempotent producer: a retry after a lost ack is not written twice to the log.

    Every deadline is the one delivery timeout (``KAFKA_DELIVERY_TIMEOUT_MS``): a record is either
    acknowledged or failed within it, never retried after the caller was told it failed.
    """
    s = get_settings()
    timeout_ms = s.kafka_delivery_timeout_ms
    return KafkaProducer(
        bootstrap_servers=s.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        max_in_flight_requests_per_connection=1,  # keeps a user's events in order across retries
        linger_ms=0,
        request_timeout_ms=timeout_ms,
        delivery_timeout_ms=timeout_ms,  # >= request_timeout_ms + linger_ms, as kafka-python requires
        max_block_ms=timeout_ms,  # waiting for metadata (the broker is unreachable) counts too
        api_version_auto_timeout_ms=PRODUCER_START_MS,
        client_id="amazon-recommender",
        # kafka-python's own sensors, read by nothing here: ~0.1 ms of a send's ~0.9 ms of CPU (docs/benchmarks.md)
        metrics_enabled=False,
    )


_DISCARD_LOCK = threading.Lock()


def _discard(producer: KafkaProducer) -> None:
    """Replace a producer whose send failed with a fresh one at the next call.

    kafka-python 2.3.0 fails a produce request that timed out with a TypeError inside its own
    errback (``_failed_produce`` hands an exception instance where a class is expected), so the
    batch never completes and, with one request in flight per connection, its partition stays
    muted: every later send to that partition expired, for good (found by
    tests/integration/test_ghost_ratings.py: a frozen broker, resumed, still refused the user's
    next rating). A new producer starts clean; only failures pay for it.
    """
    with _DISCARD_LOCK:
        if not get_producer.cache_info().currsize or get_producer() is not producer:
            return  # another thread replaced it already
        get_producer.cache_clear()
    try:
        producer.close(timeout=0)
    except Exception as exc:  # noqa: BLE001 - a broken producer may fail to close; it is dropped anyway
        log.warning("closing a failed producer: %s", exc)


def _send(topic: str, value: bytes, key: bytes | None):
    """Send and wait for the ack; a failed send discards the producer (see :func:`_discard`)."""
    try:
        producer = get_producer()  # a new one (after a discard) fails to start while no broker answers
    except KafkaError as exc:
        raise PublishError(f"could not publish to {topic}: {exc.__class__.__name__}") from exc
    try:
        future = producer.send(topic, key=key, value=value)
    except RECORD_ERRORS as exc:  # the producer's own check: nothing was sent, the producer is fine
        raise RecordRefused(f"could not publish to {topic}: {exc.__class__.__name__}: {exc}") from exc
    except KafkaError as exc:  # no metadata within max_block_ms, or the record was refused: not sent
        _discard(producer)
        raise PublishError(f"could not publish to {topic}: {exc.__class__.__name__}") from exc
    try:
        return future.get(timeout=ack_wait_s())
    except KafkaError as exc:
        _discard(producer)
        if isinstance(exc, RECORD_ERRORS):  # the broker refused the record: it does not have it
            raise RecordRefused(f"could not publish to {topic}: {exc.__class__.__name__}: {exc}") from exc
        raise PublishError(f"could not publish to {topic}: {exc.__class__.__name__}", maybe_sent=True) from exc


def ack_wait_s() -> float:
    """How long a send waits for its ack: a little longer than the producer's own deadline, so the
    caller hears the outcome."""
    return get_settings().kafka_delivery_timeout_ms / 1000 + 0.5


def send_wait_s() -> float:
    """The longest one :func:`_send` can last, with a margin: a new producer's start
    (``PRODUCER_START_MS``), the wait for the topic's metadata (``max_block_ms``: the delivery
    timeout), then the ack's (:func:`ack_wait_s`). A dead letter's replay still "replaying" after
    that was killed, or never heard its outcome: the next replay takes it over."""
    return PRODUCER_START_MS / 1000 + get_settings().kafka_delivery_timeout_ms / 1000 + ack_wait_s() + SEND_MARGIN_S


def publish_event(event: RatingEvent) -> dict[str, Any]:
    """Send one event of a user (a rating, a control, an account deletion: ``core.events``), keyed
    by user so a user's events stay in order, and block until the broker acknowledges it.

    Raises PublishError at once while the breaker is open (Kafka failed moments ago), else within
    the delivery timeout. The event id is the submission's identity, so a user's retry of a
    rating whose ack was lost is stored once by the workers.
    """
    if not BREAKER.allow():
        raise PublishError("Kafka is unavailable (it failed moments ago); not trying again yet")
    try:
        meta = _send(get_settings().ratings_topic, event.to_bytes(), event.key)
    except PublishError as exc:
        BREAKER.failure()
        raise PublishError(f"the event could not be delivered to Kafka: {exc.__cause__.__class__.__name__}",
                           maybe_sent=exc.maybe_sent) from exc.__cause__
    BREAKER.success()
    return {"partition": meta.partition, "offset": meta.offset}


def publish_json(topic: str, payload: dict[str, Any], key: str | bytes | None = None) -> None:
    """Send a small JSON message (a dead letter) and wait for the ack; :class:`RecordRefused` when
    Kafka refuses the message itself (too large)."""
    _send(topic, json.dumps(payload, default=str).encode(), key.encode() if isinstance(key, str) else key)


def publish_raw(topic: str, value: bytes, key: bytes | None = None) -> dict[str, Any]:
    """Send bytes as they are (a dead letter's original, replayed) and wait for the ack."""
    meta = _send(topic, value, key)
    return {"partition": meta.partition, "offset": meta.offset}


def ensure_topics() -> list[str]:
    """Create the project's topics if missing (the broker does not auto-create them)."""
    s = get_settings()
    wanted = [
        NewTopic(s.ratings_topic, num_partitions=s.ratings_partitions, replication_factor=1),
        NewTopic(s.dead_letter_topic, num_partitions=1, replication_factor=1),
    ]
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap_servers, client_id="amazon-recommender-admin")
    created = []
    try:
        existing = set(admin.list_topics())
        for topic in wanted:
            if topic.name in existing:
                continue
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    return created
