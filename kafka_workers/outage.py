"""What the worker waits out rather than blames on a message: a server that is down.

An outage means nothing can be processed until the server is back, so the message waits (as long
as it takes) rather than being dead-lettered, and the wait never uses up one of its tries.
"""
from __future__ import annotations

from pymongo.errors import ConnectionFailure, ExecutionTimeout, WTimeoutError

from core import kafka_io, published

# The model store is one while this process has never read its CURRENT (``core.published``).
# Anything else is about this one message (a dead letter Kafka refuses, ``kafka_io.RecordRefused``,
# is handled by ``kafka_workers.dead_letter_sender`` and never waited on).
OUTAGE_ERRORS = (ConnectionFailure, ExecutionTimeout, WTimeoutError, kafka_io.PublishError,
                 published.ModelStoreUnreachable)
