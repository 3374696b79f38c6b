"""Sending a message the worker gives up on to the dead-letter topic (its shape and the command
that replays it: ``kafka_workers.dead_letters``)."""
from __future__ import annotations

import logging

from pymongo.errors import PyMongoError

from core import cancellation, kafka_io
from core.events import is_event_id
from core.settings import get_settings
from kafka_workers.dead_letters import bare_letter, dead_letter_payload, letter_key
from kafka_workers.outage import OUTAGE_ERRORS
from kafka_workers.outcomes import Outcome

log = logging.getLogger("kafka_workers.dead_letter_sender")


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
