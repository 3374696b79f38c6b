"""A poll's records, handled as one batch (``kafka_workers.batch.handle_batch``: grouped by user,
each user's history read and written once, bulk writes) or, when the batch fails or
``WORKER_BATCH_MAX=1``, one message at a time, which isolates the message at fault."""
from __future__ import annotations

import logging
import threading
import time

from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition

from core.events import InvalidEvent, RatingEvent, parse_event
from kafka_workers import commits
from kafka_workers.batch import HistoriesReloaded, Tail, handle_batch
from kafka_workers.dead_letter_sender import send_dead_letter
from kafka_workers.model_holder import ModelHolder
from kafka_workers.outage import OUTAGE_ERRORS, Backoff
from kafka_workers.outcomes import Outcome
from kafka_workers.retry import process_with_retry
from kafka_workers.stats import Stats

log = logging.getLogger("kafka_workers.polls")


def handle_as_batch(records: list, holder: ModelHolder, stop: threading.Event, tail: Tail) -> list[Outcome] | None:
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
    backoff = Backoff(stop)
    for record, outcome in zip(records, outcomes):
        while outcome.status == "dead-letter":  # after the batch's writes: a failed batch sends none
            try:
                send_dead_letter(record, outcome, attempts=1)
                break
            except OUTAGE_ERRORS as exc:
                if stop.is_set():
                    return None
                log.warning("dead letter not sent (%s); retrying in %.1fs", exc.__class__.__name__, backoff.delay_s)
                backoff.wait()  # stopped meanwhile: one more send, and a failed one returns above
    return outcomes  # type: ignore[return-value]


def handle_one_at_a_time(consumer: KafkaConsumer, batches: dict, holder: ModelHolder, stop: threading.Event,
                         stats: Stats, pending: dict[TopicPartition, OffsetAndMetadata], deadline: float) -> None:
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
            outcome = process_with_retry(record, holder, stop)
            if outcome is None:
                break
            stats.add(outcome)
            done = record.offset
            if stop.is_set():  # SIGTERM: this message is done; commit and go
                break
        if done is not None:
            pending[tp] = OffsetAndMetadata(done + 1, "", -1)
            commits.commit(consumer, pending)
        if stop.is_set():
            return
