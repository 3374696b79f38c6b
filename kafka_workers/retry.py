"""One message, handled until it has an outcome: an outage is waited out, a failure is tried again
and finally dead-lettered, so one message never stops the worker or its partition.

Each failed try is one of three kinds:

- an outage (``kafka_workers.outage``: MongoDB or Kafka down) is nobody's fault: waited out with
  back-off, as long as it lasts, using up no try;
- a user's lock taken over while this worker stalled (``core.locking.LeaseLost``: nothing was
  written) is no fault of the message either: the first ``WORKER_MAX_ATTEMPTS`` of them are waited
  out like an outage; after that each one counts as a try, so a worker that stalls on every try
  dead-letters the message (replayable; the reason names the lock, its ``lost_leases`` all the
  lost ones) instead of holding its partition back for ever;
- anything else (a document MongoDB refuses, a model numpy cannot solve, a bug) is the message's:
  it is tried ``WORKER_MAX_ATTEMPTS`` times, ``WORKER_RETRY_DELAY_S`` apart and doubling, then
  dead-lettered with the exception as the reason.
"""
from __future__ import annotations

import logging
import threading

from core import locking
from core.events import InvalidEvent, parse_event
from kafka_workers import metrics
from kafka_workers.config import max_attempts, retry_delay_s
from kafka_workers.dead_letter_sender import send_dead_letter
from kafka_workers.model_holder import ModelHolder
from kafka_workers.outage import OUTAGE_ERRORS, Backoff
from kafka_workers.outcomes import Outcome
from kafka_workers.process import handle

log = logging.getLogger("kafka_workers.retry")


def process_with_retry(record, holder: ModelHolder, stop: threading.Event) -> Outcome | None:
    """Handle one message (``kafka_workers.process.handle``: a valid event's claim says whether the
    site cancelled it), and send its dead letter if it has one; its outcome, or None when stopped
    before it was done (not committed: the next owner of the partition redelivers it).
    ``attempts`` counts the tries that used one up, ``lost`` the lost leases; one :class:`Backoff`
    paces every outage and free lost lease of the message."""
    attempts, lost, backoff = 0, 0, Backoff(stop)
    outcome: Outcome | None = None
    while outcome is None:
        try:
            outcome = handle(record.value, holder.model)
            attempts += 1
        except OUTAGE_ERRORS as exc:
            if not _wait_out(record, exc, lost, backoff):
                return None
        except Exception as exc:  # noqa: BLE001 - the point is that nothing escapes
            if isinstance(exc, locking.LeaseLost):
                lost += 1
                if lost <= max_attempts():  # nothing written; the next try takes the lock again
                    if not _wait_out(record, exc, lost, backoff):
                        return None
                    continue
            attempts += 1
            if attempts >= max_attempts():
                log.error("giving up on %s[%d]@%d after %d tries", record.topic, record.partition,
                          record.offset, attempts, exc_info=exc)
                outcome = failed_outcome(record.value, exc)
            elif not _wait_to_try_again(record, exc, attempts, stop):
                return None
    while outcome.status == "dead-letter":
        try:
            send_dead_letter(record, outcome, attempts, lost_leases=lost)
            break
        except (*OUTAGE_ERRORS, locking.LeaseLost) as exc:
            if not _wait_out(record, exc, lost, backoff):
                return None
    return outcome


def _wait_to_try_again(record, exc: Exception, attempts: int, stop: threading.Event) -> bool:
    """The back-off after the message's own failure (``attempts`` tries so far); False if stopped."""
    metrics.retried("error")
    wait = retry_delay_s() * 2 ** (attempts - 1)
    log.warning("error on %s[%d]@%d (try %d of %d): %s: %s; retrying in %.2fs", record.topic, record.partition,
                record.offset, attempts, max_attempts(), exc.__class__.__name__, str(exc)[:200], wait)
    return not stop.wait(wait)


def _wait_out(record, exc: Exception, lost: int, backoff: Backoff) -> bool:
    """Wait out an outage or a lost lease (the ``lost``-th) that uses up no try; False if stopped."""
    if backoff.stop.is_set():
        return False
    if isinstance(exc, locking.LeaseLost):
        metrics.retried("lock-lost")
        log.log(logging.ERROR if lost == max_attempts() else logging.WARNING,
                "lock lost on %s[%d]@%d (%d time(s) for this message; after %d, each uses up a try): %s; "
                "retrying in %.1fs", record.topic, record.partition, record.offset, lost, max_attempts(),
                str(exc)[:200], backoff.delay_s)
    else:
        metrics.retried("outage")
        log.warning("infrastructure error on %s[%d]@%d (%s); retrying in %.1fs", record.topic,
                    record.partition, record.offset, exc.__class__.__name__, backoff.delay_s)
    return backoff.wait()


def failed_outcome(raw: bytes | None, exc: BaseException) -> Outcome:
    """The dead-letter outcome of a message whose last try raised ``exc`` (its reason)."""
    try:
        event = parse_event(raw)
    except InvalidEvent:
        event = None
    return Outcome(event, "dead-letter", f"{exc.__class__.__name__}: {exc}"[:500])
