"""What the worker waits out rather than blames on a message: a server that is down.

An outage means nothing can be processed until the server is back, so the message waits (as long
as it takes) rather than being dead-lettered, and the wait never uses up one of its tries.
"""
from __future__ import annotations

import threading

from pymongo.errors import ConnectionFailure, ExecutionTimeout, WTimeoutError

from core import kafka_io, published
from kafka_workers import metrics

# The model store is one while this process has never read its CURRENT (``core.published``).
# Anything else is about this one message (a dead letter Kafka refuses, ``kafka_io.RecordRefused``,
# is handled by ``kafka_workers.dead_letter_sender`` and never waited on).
OUTAGE_ERRORS = (ConnectionFailure, ExecutionTimeout, WTimeoutError, kafka_io.PublishError,
                 published.ModelStoreUnreachable)

FIRST_WAIT_S = 0.2
LONGEST_WAIT_S = 5.0


class Backoff:
    """The waits of one outage: 0.2 s, doubled each time up to 5 s.

    Each wait first marks the loop alive (``metrics.loop_turned``): a worker waiting out an outage
    is not stalled, and a restart would not bring the server back (/healthz). State is real: the
    next wait's length, kept across the tries of one message or one tail.
    """

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.delay_s = FIRST_WAIT_S

    def wait(self) -> bool:
        """Wait ``delay_s``; False when ``stop`` was set (before or meanwhile)."""
        metrics.loop_turned()
        if self.stop.wait(self.delay_s):
            return False
        self.delay_s = min(self.delay_s * 2, LONGEST_WAIT_S)
        return True
