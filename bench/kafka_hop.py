"""Kafka's own share of a rating's trip: the site's publish (until the broker's ack) and the worker's pickup.

    .local/venv/bin/python -m bench.kafka_hop                        # 3 runs of 400 records at 30/s
    .local/venv/bin/python -m bench.kafka_hop --background-rate 50 --work-ms 5   # with other traffic
    .local/venv/bin/python -m bench.kafka_hop --request-log .local/log/kafka.log  # + the broker's own split

Why: bench/realtime_latency.py times a rating from the site's publish to the list the page reads;
this takes the broker and the two clients alone, with no MongoDB and no recommender, so what Kafka
costs on a machine is known before the rest is blamed. The producer is ``core.kafka_io``'s (the
site's: idempotent, acks=all, one request in flight, no linger). A consumer with the worker's
fetch settings (``kafka_workers.consumer.make_consumer``'s: 50 ms fetch wait, its batch size) runs in a process of its own,
as the worker does; each record carries its send time, and the consumer notes when ``poll`` handed
it over. ``--work-ms`` makes the consumer busy that long after each poll that returned records
(the worker's batch), ``--background-rate`` adds records from a second process, like other shoppers.

``--request-log``: with ``log4j.logger.kafka.request.logger=DEBUG`` in
services/kafka/log4j.properties (then ``bin/services stop kafka && bin/services start kafka``), the
broker writes one line per request with its own timings; the run's Produce requests are summarised
from the lines it added (the background's too), splitting the ack into the broker's part and the rest (the clients and the
machine's wake-ups).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
import uuid
from pathlib import Path

BROKER_FIELDS = ("totalTimeMs", "requestQueueTimeMs", "localTimeMs", "responseQueueTimeMs", "sendTimeMs")


def _pcts(values: list[float]) -> dict[str, float | None]:
    """p50, p90 and p99 as bench/worker_trace.py computes them."""
    from bench.worker_trace import _pct

    return {f"p{q}": _pct(values, q) for q in (50, 90, 99)}


def _consume(topic: str, n: int, work_ms: float, ready, out) -> None:
    """The worker's fetch settings (``kafka_workers.consumer.make_consumer``, copied: it subscribes to
    the ratings topic); the hop of each timed record, until ``n`` of them came."""
    from kafka import KafkaConsumer

    from core.settings import get_settings
    from kafka_workers.config import batch_max

    consumer = KafkaConsumer(
        bootstrap_servers=get_settings().kafka_bootstrap_servers, group_id=f"{topic}.hop",
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=batch_max(),
        session_timeout_ms=10_000, heartbeat_interval_ms=3_000, fetch_max_wait_ms=50, metrics_enabled=False)
    consumer.subscribe([topic])
    hops: list[float] = []
    while len(hops) < n:
        batches = consumer.poll(timeout_ms=200)
        if not ready.is_set() and consumer.assignment():
            ready.set()
        now = time.time()
        for records in batches.values():
            hops += [(now - float(r.value)) * 1000 for r in records if r.value != b"bg"]
        if batches and work_ms:
            until = time.perf_counter() + work_ms / 1000
            while time.perf_counter() < until:  # busy, as a batch is: CPU, not a sleep
                pass
    consumer.close()
    out.put(hops)


def _background(topic: str, rate: float, stop) -> None:
    from core import kafka_io

    producer, n, start = kafka_io.get_producer(), 0, time.perf_counter()
    while not stop.is_set():
        producer.send(topic, key=f"bg-{n % 2000}".encode(), value=b"bg")
        n += 1
        stop.wait(max(0.0, start + n / rate - time.perf_counter()))
    producer.flush(10)


def one_run(records: int, rate: float, work_ms: float, background_rate: float, partitions: int) -> dict:
    """A fresh topic, a consumer process, ``records`` sends of the site's producer at ``rate``/s."""
    from kafka.admin import KafkaAdminClient, NewTopic

    from core import kafka_io
    from core.settings import get_settings

    ctx = multiprocessing.get_context("spawn")
    topic = f"bench-hop-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=get_settings().kafka_bootstrap_servers)
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    consumer = ctx.Process(target=_consume, args=(topic, records, work_ms, ready, out), daemon=True)
    consumer.start()
    background = ctx.Process(target=_background, args=(topic, background_rate, stop), daemon=True)
    try:
        if not ready.wait(60):
            raise RuntimeError("the consumer got no partitions within 60 s")
        if background_rate > 0:
            background.start()
        producer, acks = kafka_io.get_producer(), []
        for i in range(records):
            t = time.time()
            producer.send(topic, key=f"user-{i % 200}".encode(), value=repr(t).encode()).get(10)
            acks.append((time.time() - t) * 1000)
            time.sleep(max(0.0, 1 / rate - (time.time() - t)))
        hops = out.get(timeout=60)
    finally:
        stop.set()
        for p in (consumer, background):
            if p.pid is not None:
                p.join(10)
        admin.delete_topics([topic])
        admin.close()
    ack_ms, hop_ms = _pcts(acks), _pcts(hops)
    return {"topic": topic, "records": records, "ack_ms": ack_ms, "hop_ms": hop_ms,
            "hop_minus_ack_p50_ms": hop_ms["p50"] - ack_ms["p50"]}


def broker_produce_times(lines: list[str], topic: str) -> dict[str, dict[str, float]]:
    """The broker's own timings of the Produce requests to ``topic`` (the background's too), from
    request-log lines."""
    rows = []
    for line in lines:
        if "Completed request:" not in line or "PRODUCE" not in line:
            continue
        row = json.loads(line.split("Completed request:", 1)[1].rsplit(" (kafka.request.logger)", 1)[0])
        if row["requestHeader"].get("requestApiKeyName") == "PRODUCE" and any(t.get("name") == topic for t in row.get("request", {}).get("topicData", [])):
            rows.append(row)
    return {f: {"n": len(rows), **_pcts([float(r[f]) for r in rows])} for f in BROKER_FIELDS} if rows else {}


def log_mark(log: Path) -> tuple[int, int]:
    """Where the log ends now: its inode and size."""
    st = log.stat()
    return st.st_ino, st.st_size


def lines_since(log: Path, mark: tuple[int, int]) -> list[str]:
    """The lines written after ``mark``, across one rotation (bin/services' supervisord renames the
    log to ``<name>.1`` at 50 MB; a request log at DEBUG gets there in ~20k requests)."""
    inode, size = mark
    parts = []
    if log.stat().st_ino != inode:  # rotated: the rest of the old file first
        rotated = log.with_name(log.name + ".1")
        if rotated.exists() and rotated.stat().st_ino == inode:
            parts.append((rotated, size))
        parts.append((log, 0))
    else:
        parts.append((log, size))
    lines: list[str] = []
    for path, offset in parts:
        with path.open(errors="replace") as f:
            f.seek(offset)
            lines += f.readlines()
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--records", type=int, default=400, help="timed records per run")
    ap.add_argument("--rate", type=float, default=30.0, help="timed records per second (one at a time, as clicks)")
    ap.add_argument("--work-ms", type=float, default=0.0, help="the consumer's CPU time after a poll with records")
    ap.add_argument("--background-rate", type=float, default=0.0, help="other records per second, from another process")
    ap.add_argument("--partitions", type=int, default=int(os.environ.get("KAFKA_RATINGS_PARTITIONS", "6")))
    ap.add_argument("--request-log", help="the broker's log with kafka.request.logger at DEBUG")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    from core.settings import get_settings

    log = Path(args.request_log) if args.request_log else None
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "broker": get_settings().kafka_bootstrap_servers,
               "args": vars(args), "runs": []}
    for _ in range(args.runs):
        mark = log_mark(log) if log else None
        row = one_run(args.records, args.rate, args.work_ms, args.background_rate, args.partitions)
        if log and mark:
            row["broker"] = broker_produce_times(lines_since(log, mark), row["topic"])
        results["runs"].append(row)
        a, h = row["ack_ms"], row["hop_ms"]
        print(f"{row['records']} records at {args.rate:g}/s: publish until ack p50 {a['p50']:.2f} p90 {a['p90']:.2f} "
              f"p99 {a['p99']:.2f} ms; send -> poll returns it p50 {h['p50']:.2f} p90 {h['p90']:.2f} "
              f"p99 {h['p99']:.2f} ms", flush=True)
        if row.get("broker"):
            print("  broker's own part of each produce (p50 / p99 ms): " + ", ".join(
                f"{f.replace('TimeMs', '')} {v['p50']:.2f} / {v['p99']:.2f}" for f, v in row["broker"].items()))
        elif log:
            print("  broker: no Produce lines from this run in the request log (is kafka.request.logger at DEBUG?)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
