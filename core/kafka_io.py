"""Kafka plumbing shared by the site (producer), the workers and the batch publisher.

The producer waits for the acknowledgement of all in-sync replicas before it reports success, so
the site never tells a user "saved" for a rating the broker does not have.
"""
from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from core.events import RatingEvent
from core.settings import get_settings

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """The broker did not acknowledge an event; the caller must tell the user it failed."""


@lru_cache(maxsize=1)
def get_producer() -> KafkaProducer:
    s = get_settings()
    return KafkaProducer(
        bootstrap_servers=s.kafka_bootstrap_servers,
        acks="all",
        retries=5,
        max_in_flight_requests_per_connection=1,  # keeps a user's events in order across retries
        linger_ms=0,
        request_timeout_ms=5000,
        max_block_ms=5000,
        client_id="amazon-recommender",
    )


def publish_rating(event: RatingEvent, timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one rating event keyed by user and block until the broker acknowledges it."""
    try:
        meta = get_producer().send(get_settings().ratings_topic, key=event.key,
                                   value=event.to_bytes()).get(timeout=timeout_s)
    except KafkaError as exc:
        raise PublishError(f"the rating could not be delivered to Kafka: {exc.__class__.__name__}") from exc
    return {"partition": meta.partition, "offset": meta.offset}


def publish_json(topic: str, payload: dict[str, Any], key: str | None = None, timeout_s: float = 5.0) -> None:
    """Send a small JSON control message (dead letters, model announcements) and wait for the ack."""
    try:
        get_producer().send(topic, key=key.encode() if key else None,
                            value=json.dumps(payload, default=str).encode()).get(timeout=timeout_s)
    except KafkaError as exc:
        raise PublishError(f"could not publish to {topic}: {exc.__class__.__name__}") from exc


def publish_raw(topic: str, value: bytes, key: bytes | None = None, timeout_s: float = 5.0) -> dict[str, Any]:
    """Send bytes as they are (a dead letter's original, replayed) and wait for the ack."""
    try:
        meta = get_producer().send(topic, key=key, value=value).get(timeout=timeout_s)
    except KafkaError as exc:
        raise PublishError(f"could not publish to {topic}: {exc.__class__.__name__}") from exc
    return {"partition": meta.partition, "offset": meta.offset}


def ensure_topics() -> list[str]:
    """Create the project's topics if missing (the broker does not auto-create them)."""
    s = get_settings()
    wanted = [
        NewTopic(s.ratings_topic, num_partitions=s.ratings_partitions, replication_factor=1),
        NewTopic(s.dead_letter_topic, num_partitions=1, replication_factor=1),
        NewTopic(s.model_topic, num_partitions=1, replication_factor=1),
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
