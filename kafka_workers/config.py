"""The rating worker's knobs, one function each, read when they are used.

Read at call time, not import time: tests and tools that run a worker in-process set them first
(frozen at import, an in-process consumer could join the production group ``recommender-workers``).
The worker's loop (``kafka_workers.worker``) and its health check (``kafka_workers.metrics``) read
the same functions, so one variable cannot mean two things. README lists them under "Workers and
Celery".
"""
from __future__ import annotations

from core.env import env_float, env_int, env_str


def group_id() -> str:
    """``KAFKA_WORKER_GROUP``, the consumer group that shares the ratings topic's partitions."""
    return env_str("KAFKA_WORKER_GROUP", "recommender-workers")


def max_poll_interval_ms() -> int:
    """``WORKER_MAX_POLL_INTERVAL_MS`` (default 300 s): a member silent for longer leaves the group.

    A poll's records are processed for at most half of it; the rest are fetched again by the next
    poll. A longer batch would let the group rebalance under it and hand its partitions to another
    member while this one still writes for them (and redo, or dead-letter twice, what it did).
    """
    return env_int("WORKER_MAX_POLL_INTERVAL_MS", 300_000, minimum=1000)


def batch_max() -> int:
    """Records per poll handled together (``WORKER_BATCH_MAX``, default 500); 1 handles every
    message on its own, the path a failed batch and a deleted account's events always take."""
    return env_int("WORKER_BATCH_MAX", 500, minimum=1)


def commit_every_s() -> float:
    """``WORKER_COMMIT_EVERY_MS`` (default 200): how long the offsets of handled batches may wait
    for their commit while events keep coming (an idle worker commits at once).

    A commit is a round trip to the broker: committing after every batch made the worker busier at
    normal load, and every rating behind it waited (docs/benchmarks.md).
    Committing later is always correct (every message below the offset is in MongoDB); a crash
    redelivers at most this long's events more, which the claims tell apart (nothing is applied twice).
    """
    return env_int("WORKER_COMMIT_EVERY_MS", 200, minimum=0) / 1000


def remember_catalog_max() -> int:
    """``WORKER_REMEMBER_CATALOG_MAX`` (default 50,000; 0 turns it off): a catalog of at most this
    many products is read whole when the worker starts (``core.catalog.remember_catalog``), and
    again, in a thread beside the batches, when it loads a new model (the pipeline publishes after
    its reload, which wrote a new catalog generation). A larger one, and one reloaded without a new
    model, is learnt product by product as events name them: a one-rating batch reads its product
    the first time.

    Not in the loop itself: reading the ids takes ~0.7 s for 10,000 products and ~2 s for 50,000 on
    FerretDB here (15 s for 200,000; docs/benchmarks.md), time in which the worker would handle no
    rating; a larger catalog costs the read of this many ids, once."""
    return env_int("WORKER_REMEMBER_CATALOG_MAX", 50_000, minimum=0)


def max_attempts() -> int:
    """Tries of one message before it is dead-lettered (``WORKER_MAX_ATTEMPTS``, default 3)."""
    return env_int("WORKER_MAX_ATTEMPTS", 3, minimum=1)


def retry_delay_s() -> float:
    """First back-off between tries of a failing message, doubled each time (``WORKER_RETRY_DELAY_S``)."""
    return env_float("WORKER_RETRY_DELAY_S", 0.5, minimum=0)


def ready_broker_s() -> float:
    """``WORKER_READY_BROKER_S`` (default 30): /readyz says not ready once the consumer has had no
    answer from Kafka's group coordinator for this long. A member heartbeats every 3 s (10 s
    session): 30 s of silence is a broker that is down or out of reach, not a slow answer. While
    it is, poll() returns nothing every 200 ms and the loop (what /healthz checks) turns as usual."""
    return env_float("WORKER_READY_BROKER_S", 30.0, minimum=1)


def check_all() -> None:
    """Read every knob above once. ``worker.run`` calls it first, so a value that cannot work
    (``WORKER_MAX_ATTEMPTS=0``) stops the worker at its start, naming the variable, rather than at
    the first message that fails, in the middle of a batch."""
    for read in (group_id, max_poll_interval_ms, batch_max, commit_every_s, remember_catalog_max,
                 max_attempts, retry_delay_s, ready_broker_s):
        read()
