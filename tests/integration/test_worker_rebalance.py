"""A rebalance in the middle of a worker's work: nothing lost, nothing handled twice, and the
revoked partitions' offsets committed only after their writes (the worker's rebalance listener,
``kafka_workers.commits.CommitOnRevoke``).

Real Kafka (the session's broker, this test's own topic and group), real MongoDB, the worker's
own consumer (``make_consumer``) and message path (``retry.process_with_retry``), driven step by step
so the rebalance lands exactly where it matters: member A has written the results of records from
every partition, but its commit was refused (the broker answers RebalanceInProgress while a
group is rebalancing), when member B joins the group. A's next poll gives its partitions up; the
listener must commit what A wrote before they go, so B resumes right after it. Without the
listener, B would start again from the last commit and handle A's records a second time (checked:
with ``subscribe`` called without the listener this test fails, "A wrote up to offset 76, B
started at 0").

Why the refusal is injected: ``worker.run`` commits before a poll (at once when idle, else at
most ``WORKER_COMMIT_EVERY_MS`` after a batch), and the broker accepts commits from the current
generation while the group is preparing a rebalance, so under natural timing only the batches
of the last moment can be uncommitted when the partitions go, and no step-by-step driving puts a
rebalance exactly there (the same test without the refusal passes with or without the listener).
The refusal leaves a whole poll's work uncommitted, which the listener must commit.
"""
from __future__ import annotations

import threading
import time

import pytest
from kafka.errors import RebalanceInProgressError
from kafka.structs import OffsetAndMetadata

from core import mongo
from core.events import parse_event
from realtime_support import committed_and_end_offsets, make_events, publish_all, wait_until
from realtime_support import rt, rt_catalog  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.integration]


def test_a_rebalance_mid_work_loses_nothing_and_redoes_nothing(rt, monkeypatch):
    from kafka_workers.commits import commit
    from kafka_workers.consumer import make_consumer
    from kafka_workers.model_holder import ModelHolder
    from kafka_workers.retry import process_with_retry

    db = rt.db
    events = make_events([f"rb-{i:03d}" for i in range(90)], rt.catalog.in_model, per_user=4, seed=21)
    publish_all(events)
    holder, stop = ModelHolder(), threading.Event()
    holder.refresh(force=True)
    outcomes: dict[str, list[tuple[str, str, int, int]]] = {"A": [], "B": []}

    def work(name: str, consumer, pending, records_by_tp) -> None:
        """What ``worker.run`` does with one poll: handle each record, then mark it for commit."""
        for tp, records in records_by_tp.items():
            for record in records:
                outcome = process_with_retry(record, holder, stop)
                outcomes[name].append((outcome.status, parse_event(record.value).event_id, tp.partition,
                                       record.offset))
            pending[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)

    # --- member A alone: it gets every partition and handles records from each ---
    pending_a: dict = {}
    a = make_consumer(pending_a)
    n_partitions = len(a.partitions_for_topic(rt.topic) or wait_until(
        lambda: a.partitions_for_topic(rt.topic), 30, "the topic's partitions"))
    deadline = time.monotonic() + 120
    while len(pending_a) < n_partitions and time.monotonic() < deadline:
        work("A", a, pending_a, a.poll(timeout_ms=500, max_records=20))
    assert len(pending_a) == n_partitions, f"A handled records of {len(pending_a)} of {n_partitions} partitions"
    written = {tp.partition: meta.offset for tp, meta in pending_a.items()}

    # ... and its commits are refused from now until it rejoins: the group is rebalancing (the
    # broker's answer then). Only the listener's commit, made inside poll() while A still owns the
    # partitions, goes through. A fault injected at A's own consumer; Kafka and MongoDB are real.
    real_commit, state = a.commit, {"polling": False, "refusing": True}

    def commit_unless_rebalancing(*args, **kwargs):
        if state["refusing"] and not state["polling"]:
            raise RebalanceInProgressError("the group is rebalancing")
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(a, "commit", commit_unless_rebalancing)
    assert commit(a, pending_a) is False and len(pending_a) == n_partitions, "kept for a later commit"
    committed, _ = committed_and_end_offsets(rt.group, rt.topic)
    assert all(committed.get(p, -1) in (-1, None) for p in written), f"nothing committed yet: {committed}"
    before = set(a.assignment())

    # --- member B joins: the group rebalances while A holds written but uncommitted work ---
    pending_b: dict = {}
    b = make_consumer(pending_b)
    first_offsets_b: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for name, consumer, pending in (("A", a, pending_a), ("B", b, pending_b)):
                state["polling"] = name == "A"
                polled = consumer.poll(timeout_ms=300)
                state["polling"] = False
                if name == "A" and set(a.assignment()) != before:
                    state["refusing"] = False  # A rejoined: its commits are accepted again
                if name == "B":
                    for tp, records in polled.items():
                        first_offsets_b.setdefault(tp.partition, records[0].offset)
                work(name, consumer, pending, polled)
                commit(consumer, pending)
            done = sum(1 for o in outcomes["A"] + outcomes["B"] if o[0] in ("processed", "duplicate"))
            if a.assignment() and b.assignment() and done >= len(events) and not pending_a and not pending_b:
                break
        assert a.assignment() and b.assignment(), "the group did not rebalance to two members"
        moved = {tp.partition for tp in b.assignment()}
        assert moved, "no partition moved to B"

        # B resumed each partition it took over exactly where A's writes ended: no gap, no overlap.
        for p in moved & set(first_offsets_b):
            assert first_offsets_b[p] == written[p], (
                f"partition {p}: A wrote up to offset {written[p]}, B started at {first_offsets_b[p]}")
        twice = [o for o in outcomes["A"] + outcomes["B"] if o[0] == "duplicate"]
        assert not twice, f"{len(twice)} records handled a second time after the rebalance, e.g. {twice[:3]}"
        assert not [o for o in outcomes["A"] + outcomes["B"] if o[0] not in ("processed",)]

        # Every event stored exactly once and processed; the group committed up to the end.
        ids = [d["_id"] for d in db[mongo.RATINGS].find({"user_id": {"$regex": "^rb-"}}, {"_id": 1})]
        assert sorted(ids) == sorted(e.event_id for e in events)
        assert db[mongo.RATINGS].count_documents({"user_id": {"$regex": "^rb-"}, "state": "processed"}) == len(events)
        handled = [o[1] for o in outcomes["A"] + outcomes["B"]]
        assert sorted(handled) == sorted(e.event_id for e in events), "each event handled once in all"
        committed, ends = committed_and_end_offsets(rt.group, rt.topic)
        assert committed == ends, f"committed {committed} != log ends {ends}"
    finally:
        b.close(autocommit=False)
        a.close(autocommit=False)
