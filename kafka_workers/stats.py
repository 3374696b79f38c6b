"""The worker's counts of outcomes and its lag, for its log; /metrics has them too (with the
latency, ``kafka_workers.metrics``)."""
from __future__ import annotations

import logging
import time

from kafka import KafkaConsumer

from kafka_workers import metrics
from kafka_workers.consumer import consumer_lag
from kafka_workers.model_holder import ModelHolder
from kafka_workers.outcomes import STATUSES, Outcome

log = logging.getLogger("kafka_workers.stats")
STATS_EVERY_S = 5.0


class Stats:
    """This worker's counts of outcomes, for its log (/metrics has them too, and the latency)."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(STATUSES, 0)
        self.reported_at = 0.0
        self.last_logged: tuple | None = None  # the counters last logged: quiet while idle

    def add(self, outcome: Outcome) -> None:
        """Count an event's outcome here and on /metrics (the dashboard's p50/p99)."""
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        metrics.event_handled(outcome.status, outcome.latency_s)


def report_stats_when_due(stats: Stats, consumer: KafkaConsumer, holder: ModelHolder) -> None:
    """:func:`report_stats` every ``STATS_EVERY_S``."""
    if time.monotonic() - stats.reported_at > STATS_EVERY_S:
        report_stats(stats, consumer, holder)


def report_stats(stats: Stats, consumer: KafkaConsumer, holder: ModelHolder) -> None:
    """Put the lag and the model version on /metrics; log the counters and lag when they changed."""
    stats.reported_at = time.monotonic()
    lag = consumer_lag(consumer)
    metrics.stats_seen(lag, holder.version)
    seen = (*stats.counts.values(), lag)
    if seen != stats.last_logged:  # quiet while idle
        stats.last_logged = seen
        log.info("stats %s lag %s model %s", stats.counts, lag, holder.version)
