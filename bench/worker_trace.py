"""A Kafka worker that records where its time goes, for the latency benchmark.

    WORKER_TRACE_DIR=/tmp/trace python bench/worker_trace.py   # as python -m kafka_workers.worker

``bench/realtime_latency.py --trace`` starts its workers this way (by path, so that the checkout
of another commit given with ``--compare-code`` runs its own worker under it) and prints
:func:`summary` of each worker's file (``<dir>/worker-<pid>.jsonl``) after the latency run. The
worker's code is not changed: pymongo's command monitoring records each MongoDB command (its
wall-clock start and the client's round trip, which includes the server's work and the wait for a
core), and a wrapper around ``kafka_workers.batch.handle_batch`` records each batch (start, end,
and its events' users and times). A rating's time before its batch starts is Kafka's hop plus the
wait for the batch ahead of it; :func:`summary` tells the two apart by whether the worker was in a
batch when the rating was made.
"""
from __future__ import annotations

import atexit
import bisect
import functools
import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

TRACE_DIR = "WORKER_TRACE_DIR"


def install(path: str):
    """Record commands and batches into ``path`` (JSON lines); before the worker module is imported,
    which binds ``handle_batch`` by name. Returns the open file, for :func:`install_spans`."""
    from pymongo import monitoring

    try:
        from kafka_workers import batch as batched
    except ImportError:  # a revision before kafka_workers/batch.py (a --compare-code run)
        from kafka_workers import process as batched

    out = open(path, "a", buffering=1 << 16)
    atexit.register(out.close)
    started: dict[tuple, tuple[float, str]] = {}

    class Listener(monitoring.CommandListener):
        def started(self, event) -> None:
            collection = event.command.get(event.command_name)
            started[(event.connection_id, event.request_id)] = (
                time.time(), collection if isinstance(collection, str) else "")

        def succeeded(self, event) -> None:
            self._write(event, True)

        def failed(self, event) -> None:
            self._write(event, False)

        def _write(self, event, ok: bool) -> None:
            t0, collection = started.pop((event.connection_id, event.request_id), (None, ""))
            out.write(json.dumps({"kind": "command", "name": event.command_name, "collection": collection,
                                  "t0": t0, "us": event.duration_micros, "ok": ok}) + "\n")

    monitoring.register(Listener())
    inner = batched.handle_batch

    @functools.wraps(inner)
    def traced(batch, *args, **kwargs):
        t0 = time.time()
        try:
            return inner(batch, *args, **kwargs)
        finally:
            out.write(json.dumps({"kind": "batch", "t0": t0, "t1": time.time(), "ts": [e.ts for e in batch],
                                  "users": [e.user_id for e in batch]}) + "\n")

    batched.handle_batch = traced
    return out


def _span(name: str, inner: Callable, out) -> Callable:
    """``inner`` recording each call as a span (start, end): what the worker did between batches."""
    @functools.wraps(inner)
    def traced(*args, **kwargs):
        t0 = time.time()
        try:
            return inner(*args, **kwargs)
        finally:
            out.write(json.dumps({"kind": "span", "name": name, "t0": t0, "t1": time.time()}) + "\n")
    return traced


def install_spans(worker, out) -> None:
    """The worker's polls, tail finishes and commits as spans; after the worker module is imported
    (its loop looks these names up at each call, in ``kafka_workers.commits``; in a revision before
    that module, in the worker module itself)."""
    from kafka import KafkaConsumer

    try:
        from kafka_workers import commits
    except ImportError:  # a revision before kafka_workers/commits.py (a --compare-code run)
        commits = worker
    KafkaConsumer.poll = _span("poll", KafkaConsumer.poll, out)
    commits.finish_tail = _span("finish", commits.finish_tail, out)
    commits.commit = _span("commit", commits.commit, out)


def _pct(values: list[float], q: int) -> float | None:
    """The q-th percentile; None when there are too few values to tell a tail (a p99 needs 100)."""
    if not values or (q > 50 and len(values) < 100 / (100 - q)):
        return None
    return values[0] if len(values) == 1 else statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summary(path: Path | str, measured: Callable[[str], bool]) -> dict[str, Any]:
    """What the trace says about the events of users ``measured`` picks, in one-event batches."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    batches = sorted((r for r in records if r["kind"] == "batch"), key=lambda r: r["t0"])
    commands = sorted((r for r in records if r["kind"] == "command" and r["t0"] is not None), key=lambda r: r["t0"])
    spans = sorted((r for r in records if r["kind"] == "span"), key=lambda r: r["t0"])
    span_starts = [s["t0"] for s in spans]
    if not batches:
        return {}
    span = batches[-1]["t1"] - batches[0]["t0"]
    out: dict[str, Any] = {
        "events": sum(len(b["ts"]) for b in batches), "batches": len(batches), "seconds": round(span, 2),
        "busy_share": round(sum(b["t1"] - b["t0"] for b in batches) / span, 3) if span > 0 else None}
    starts = [b["t0"] for b in batches]
    idle_wait, busy_wait, walls, sequences, shared = [], [], [], Counter(), 0
    idle_in: dict[str, list[float]] = {}  # idle waits by what the worker was doing when the rating was made
    per_command: dict[str, list[float]] = {}
    c = 0
    for b in batches:
        while c < len(commands) and commands[c]["t0"] < b["t0"]:
            c += 1
        own = []
        while c < len(commands) and commands[c]["t0"] <= b["t1"]:
            own.append(commands[c])
            c += 1
        if not any(measured(u) for u in b["users"]):
            continue
        if len(b["ts"]) != 1:  # in a batch with other events: not a one-event batch, counted apart
            shared += sum(1 for u in b["users"] if measured(u))
            continue
        made = b["ts"][0]
        waited = (b["t0"] - made) * 1000
        before = bisect.bisect_right(starts, made) - 1  # the last batch started before the rating was made
        busy = before >= 0 and batches[before]["t1"] > made
        (busy_wait if busy else idle_wait).append(waited)
        if not busy and spans:
            k = bisect.bisect_right(span_starts, made) - 1
            doing = spans[k]["name"] if k >= 0 and spans[k]["t1"] > made else "other"
            if doing == "poll" and batches[bisect.bisect_left(starts, spans[k]["t1"])] is not b:
                doing = "poll, another batch first"  # that poll returned someone else's event first
            idle_in.setdefault(doing, []).append(waited)
        walls.append((b["t1"] - b["t0"]) * 1000)
        names = [f"{o['name']} {o['collection']}" for o in own]
        sequences[" > ".join(names)] += 1
        for name, o in zip(names, own):
            per_command.setdefault(name, []).append(o["us"] / 1000)
    n = len(walls)
    out.update({
        "measured_batches": n, "measured_in_shared_batches": shared,
        "pickup_idle_ms": {"n": len(idle_wait), "p50": _pct(idle_wait, 50), "p99": _pct(idle_wait, 99)},
        "pickup_busy_ms": {"n": len(busy_wait), "p50": _pct(busy_wait, 50), "p99": _pct(busy_wait, 99)},
        "pickup_idle_by_activity_ms": {name: {"n": len(v), "p50": _pct(v, 50), "p99": _pct(v, 99)}
                                       for name, v in sorted(idle_in.items(), key=lambda kv: -len(kv[1]))},
        "batch_ms": {"p50": _pct(walls, 50), "p99": _pct(walls, 99)},
        "sequences": [{"share": round(k / n, 3), "commands": s} for s, k in sequences.most_common(4)],
        "commands_ms": {name: {"share_of_batches": round(len(v) / n, 3), "p50": _pct(v, 50), "p99": _pct(v, 99)}
                        for name, v in sorted(per_command.items(), key=lambda kv: -len(kv[1]))},
    })
    return out


def print_summary(s: dict[str, Any]) -> None:
    if not s:
        print("  trace: no batches recorded")
        return
    f = (lambda v: "-" if v is None else f"{v:.1f}")
    print(f"  trace: {s['events']} events in {s['batches']} batches over {s['seconds']} s, the worker in a batch "
          f"{s['busy_share']:.0%} of the time")
    for key, label in (("pickup_idle_ms", "worker idle"), ("pickup_busy_ms", "worker in a batch")):
        p = s[key]
        print(f"  rating made -> its batch starts, {label} when it was made: {p['n']} ratings, "
              f"p50 {f(p['p50'])} ms, p99 {f(p['p99'])} ms")
    for name, p in s.get("pickup_idle_by_activity_ms", {}).items():
        print(f"    idle, in {name:<26}: {p['n']} ratings, p50 {f(p['p50'])} ms, p99 {f(p['p99'])} ms")
    print(f"  (the figures below are of the measured ratings that had a batch of their own; "
          f"{s.get('measured_in_shared_batches', 0)} shared one with other events and are not in them)")
    print(f"  its one-event batch: p50 {f(s['batch_ms']['p50'])} ms, p99 {f(s['batch_ms']['p99'])} ms; commands:")
    for name, c in s["commands_ms"].items():
        print(f"    {name:<34} in {c['share_of_batches']:>4.0%} of batches, p50 {f(c['p50'])} ms, p99 {f(c['p99'])} ms")


def main() -> int:
    folder = Path(os.environ.get(TRACE_DIR) or ".")
    folder.mkdir(parents=True, exist_ok=True)
    out = install(str(folder / f"worker-{os.getpid()}.jsonl"))
    from kafka_workers import worker

    install_spans(worker, out)
    return worker.main()


if __name__ == "__main__":
    raise SystemExit(main())
