"""Live freshness: how long from a rating to the new list, as the workers measured it, last hour.

Each worker adds every processed event's latency (rating submitted -> new list written, the
``Outcome.latency_s`` of kafka_workers/process.py) to a per-minute histogram in Redis: one hash
per minute, fields are log-spaced latency buckets (5 % wide), values are counts. That is one
``HINCRBY`` per event whatever the rate, the hashes expire on their own, and the dashboard sums
the last 60 of them to read p50 and p99 to within a bucket's width, for all workers together.
Keys carry the MongoDB database name, like core/list_state.py, so deployments and test
sessions sharing one Redis never mix. Best effort: Redis down costs the figure, never an event.
"""
from __future__ import annotations

import logging
import math
import time

import redis

from core import list_state
from core.settings import get_settings

log = logging.getLogger(__name__)

BUCKET_RATIO = 1.05  # each bucket is 5 % wider than the one below
MIN_MS = 0.1  # everything faster is counted in bucket 0
WINDOW_MINUTES = 60
KEEP_S = 2 * 3600


def _key(minute: int) -> str:
    return f"recsys:{get_settings().mongo_db}:freshness:{minute}"


def bucket(latency_ms: float) -> int:
    if latency_ms <= MIN_MS:
        return 0
    return 1 + int(math.log(latency_ms / MIN_MS, BUCKET_RATIO))


def bucket_upper_ms(b: int) -> float:
    """The largest latency counted in bucket ``b`` (what a percentile falling in it reports)."""
    return MIN_MS * BUCKET_RATIO ** b


def record(latency_s: float, now: float | None = None, r: redis.Redis | None = None) -> None:
    """Count one processed rating's latency (the worker calls this once per event)."""
    now = time.time() if now is None else now
    key = _key(int(now // 60))
    try:
        pipe = (r or list_state.client()).pipeline(transaction=False)
        pipe.hincrby(key, str(bucket(latency_s * 1000)), 1)
        pipe.expire(key, KEEP_S)
        pipe.execute()
    except redis.RedisError as exc:
        log.debug("freshness not recorded (%s)", exc)


def record_many(latencies_s: list[float], now: float | None = None, r: redis.Redis | None = None) -> None:
    """:func:`record` for a batch of processed events, in one pipelined round trip."""
    if not latencies_s:
        return
    now = time.time() if now is None else now
    key = _key(int(now // 60))
    counts: dict[int, int] = {}
    for latency_s in latencies_s:
        b = bucket(latency_s * 1000)
        counts[b] = counts.get(b, 0) + 1
    try:
        pipe = (r or list_state.client()).pipeline(transaction=False)
        for b, n in counts.items():
            pipe.hincrby(key, str(b), n)
        pipe.expire(key, KEEP_S)
        pipe.execute()
    except redis.RedisError as exc:
        log.debug("freshness not recorded (%s)", exc)


def summary(now: float | None = None, minutes: int = WINDOW_MINUTES, r: redis.Redis | None = None) -> dict:
    """{n, p50_ms, p99_ms, minutes} over the last ``minutes`` (p50/p99 None without events)."""
    now = time.time() if now is None else now
    last = int(now // 60)
    pipe = (r or list_state.client()).pipeline(transaction=False)
    for minute in range(last - minutes + 1, last + 1):
        pipe.hgetall(_key(minute))
    counts: dict[int, int] = {}
    for hist in pipe.execute():
        for b, n in hist.items():
            counts[int(b)] = counts.get(int(b), 0) + int(n)
    total = sum(counts.values())

    def pct(q: float) -> float | None:
        if not total:
            return None
        seen, target = 0, max(1, math.ceil(q * total))
        for b in sorted(counts):
            seen += counts[b]
            if seen >= target:
                return round(bucket_upper_ms(b), 1)
        return None

    return {"n": total, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "minutes": minutes}
