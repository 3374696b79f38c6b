"""One Kafka message on its own: its raw bytes parsed into an event (or a dead letter), then handled
as a batch of one (``kafka_workers.batch``, where every rule of an event is written once).

The worker's path for a batch that failed (each message on its own isolates the one at fault, which
it retries and dead-letters) and for ``WORKER_BATCH_MAX=1``.
"""
from __future__ import annotations

import logging

from core.artifacts import Model
from core.events import InvalidEvent, RatingEvent, parse_event
from kafka_workers.batch import HistoriesReloaded, handle_batch
from kafka_workers.outcomes import Outcome

log = logging.getLogger(__name__)

# Reloads of ``user_history`` one event follows between its read and its write (as
# ``core.rating_history.change_history`` does); after that it raises, and the worker retries it.
RELOADS_MET = 3


def handle(raw: bytes | None, model: Model | None) -> Outcome:
    """Process one Kafka message value.

    Invalid events come back as ``dead-letter`` outcomes with the reason, so the caller can send
    them to the dead-letter topic and carry on with the next message; nothing is claimed for them
    (as on the batched path, ``kafka_workers.polls``). A valid event is claimed once, by its batch
    of one, which also skips it if the site cancelled it. Anything else raises: an
    outage (MongoDB down), which the worker waits out, or an error of this message (a document
    MongoDB refuses, a bug), which it retries and then dead-letters.
    """
    try:
        event = parse_event(raw)
    except InvalidEvent as exc:
        return Outcome(None, "dead-letter", str(exc))
    return handle_event(event, model)


def handle_event(event: RatingEvent, model: Model | None) -> Outcome:
    """:func:`handle` of an event already parsed: a batch of one, its locks given back and its
    rating inserted before this returns (the worker commits its offset next).

    A reload that switched the histories between the batch's read and its write
    (:class:`kafka_workers.batch.HistoriesReloaded`, nothing written) is read again, from the new
    generation: the worker's fallback for exactly that batch must not fail on it too."""
    for _ in range(RELOADS_MET - 1):
        try:
            return handle_batch([event], model)[0]
        except HistoriesReloaded as exc:
            log.info("%s; event %s read again", exc, event.event_id)
    return handle_batch([event], model)[0]
