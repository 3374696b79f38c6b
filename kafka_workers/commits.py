"""Commit-after-write: the offsets of handled messages are committed only once MongoDB holds the
result of every message below them, so a crash (even ``kill -9``) redelivers, and processing
being idempotent, re-applies nothing twice.

The handled batches leave a tail (``batch.Tail``: their locks' release and ratings' insert) that is
finished first; a commit the broker refuses (it is down, or the group is rebalancing) is kept and
retried, never fatal; a rebalance commits what is done before the partitions move
(:class:`CommitOnRevoke`).
"""
from __future__ import annotations

import logging
import threading

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from kafka_workers.batch import Tail, finish
from kafka_workers.exclusions_cache import forget_users_without_exclusions
from kafka_workers.outage import Backoff

log = logging.getLogger("kafka_workers.commits")
COMMIT_TIMEOUT_MS = 5000


def finish_tail(tail: Tail) -> bool:
    """Finish what the handled batches left (``batch.Tail``); False when MongoDB refused, which
    is logged: the rest is kept for the next try, and no offset may be committed until then."""
    if not tail:
        return True
    try:
        finish(tail)
        return True
    except Exception as exc:  # noqa: BLE001 - an outage, most likely: kept, retried, never lost
        log.warning("the handled batches' locks and ratings not written (%s: %s); will retry",
                    exc.__class__.__name__, str(exc)[:200])
        return False


def finish_tail_or_wait(tail: Tail, stop: threading.Event) -> bool:
    """:func:`finish_tail`, retried with back-off for as long as it fails; False if stopped first."""
    backoff = Backoff(stop)
    while not finish_tail(tail):
        if not backoff.wait():
            return False
    return True


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


class CommitOnRevoke(ConsumerRebalanceListener):
    """On a rebalance, commit what is processed before the partitions go, and forget the rest;
    on an assignment, forget which users had no exclusions (``kafka_workers.exclusions_cache``:
    a user may have been another worker's meanwhile).

    kafka-python calls this inside ``poll()`` before the member rejoins, while it still owns the
    partitions: a commit that failed earlier (the group was already rebalancing) gets its last
    chance, so the next owner does not redo work; what cannot be committed is dropped (the next
    owner redelivers it, and processing is idempotent). The batches' tail is finished first
    (commit-after-write), and its locks given back before another member takes the users over.
    State is real: the worker's pending offsets and its batches' tail.
    """

    def __init__(self, pending: dict[TopicPartition, OffsetAndMetadata], tail: Tail | None = None) -> None:
        self.pending = pending
        self.tail = tail if tail is not None else Tail()
        self.consumer: KafkaConsumer | None = None

    def on_partitions_revoked(self, revoked) -> None:
        done = {tp: meta for tp, meta in self.pending.items() if tp in revoked} if finish_tail(self.tail) else {}
        if done and self.consumer is not None:
            try:
                self.consumer.commit(done, timeout_ms=COMMIT_TIMEOUT_MS)
                log.info("rebalance: committed %d revoked partition(s) before giving them up", len(done))
            except KafkaError as exc:
                log.warning("rebalance: commit of revoked partitions failed (%s); the next owner redelivers",
                            exc.__class__.__name__)
        for tp in revoked:
            self.pending.pop(tp, None)

    def on_partitions_assigned(self, assigned) -> None:
        forget_users_without_exclusions()  # a user may have been another worker's meanwhile
        log.info("rebalance: assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
