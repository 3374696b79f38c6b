"""A message that makes processing raise (not a bad event: a bad model, a document MongoDB refuses)
is retried a few times, then dead-lettered with the reason; the worker never stops on it, and the
partition moves on. After the fix, the dead-letter command lists it and replays it, once.

The poison here is real: a published model whose fold-in matrix is singular, so numpy raises
``LinAlgError`` for every user who rated an item the model knows, in the worker's own process.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core import artifacts, mongo, rating_history, stored_lists
from core.events import RatingEvent
from realtime_support import (ROOT, committed_and_end_offsets, process_env, processed_ids, publish_all, publish_model,
                              read_topic, wait_until, worker_stats)
from realtime_support import rt, rt_catalog  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


def _publish_singular_model(item_ids: list[str]) -> str:
    """Zero factors and no regularisation: A = YᵀY + 0·I is singular, np.linalg.solve raises."""
    version = artifacts.save_model(item_ids, np.zeros((len(item_ids), 8), dtype=np.float32),
                                   {"kind": "explicit", "reg": 0.0}, metrics={"synthetic": True, "broken": True})
    artifacts.publish(version)
    return version


def _all_committed(rt):
    """A check that the group committed up to the end of every partition that holds messages."""
    def check() -> bool:
        committed, ends = committed_and_end_offsets(rt.group, rt.topic)
        return all(committed.get(p, 0) == end for p, end in ends.items())
    return check


def _dead_letters(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kafka_workers.dead_letters", *args], cwd=ROOT,
                          env=process_env(), capture_output=True, text=True, timeout=120)


def _poison_and_good(rt) -> tuple[list[RatingEvent], list[RatingEvent]]:
    _publish_singular_model(rt.catalog.in_model)
    # The model knows these products: folding the user in raises LinAlgError.
    poison = [RatingEvent(user_id=f"rt-px-{i}", product_id=rt.catalog.in_model[i], rating=4) for i in range(3)]
    # The model does not know these: the popular fallback, no fold-in, processed normally.
    good = [RatingEvent(user_id=f"rt-px-ok-{i}", product_id=rt.catalog.not_in_model[i], rating=5) for i in range(3)]
    events = []
    for p, g in zip(poison, good):
        events += [p, g]
    publish_all(events)
    return poison, good


def test_an_exception_while_processing_dead_letters_the_message_and_the_worker_carries_on(rt):
    poison, good = _poison_and_good(rt)
    worker = rt.start_worker(WORKER_RETRY_DELAY_S="0.05")

    letters = read_topic(rt.dead_letter_topic, len(poison), timeout_s=90)
    assert worker.alive(), f"the worker died on a poison message:\n{worker.log()[-2000:]}"
    reasons = {json.loads(r.value)["event_id"]: json.loads(r.value) for r in letters}
    assert set(reasons) == {e.event_id for e in poison}, [json.loads(r.value)["reason"] for r in letters]
    for letter in reasons.values():
        assert "LinAlgError" in letter["reason"] and letter["attempts"] == 3, letter
    wait_until(lambda: processed_ids([e.event_id for e in good], rt.db) == {e.event_id for e in good}, 60,
               "the good events behind the poison ones processed")
    # Count in = count out + count rejected, and the partition is not stuck: offsets reach the end.
    stats = wait_until(lambda: (s := worker_stats(worker.pid)) and s["processed"] == len(good)
                       and s["dead-letter"] >= len(poison) and s, 60, "stats (a dead letter counts once sent)")
    assert stats["dead-letter"] == len(poison)
    wait_until(_all_committed(rt), 60, "the committed offsets to reach the end of the log")
    assert worker.alive()


def test_dead_letters_are_listed_with_reasons_and_replayed_once_after_the_fix(rt):
    poison, good = _poison_and_good(rt)
    worker = rt.start_worker(WORKER_RETRY_DELAY_S="0.05")
    read_topic(rt.dead_letter_topic, len(poison), timeout_s=90)

    listed = _dead_letters("list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    by_event = {r["event_id"]: r for r in rows}
    assert set(by_event) == {e.event_id for e in poison}
    assert all("LinAlgError" in r["reason"] and not r["replayed"] for r in rows)
    human = _dead_letters("list")
    assert human.returncode == 0 and all(r["id"] in human.stdout for r in rows) and "LinAlgError" in human.stdout

    # The fix: a sound model. Replay two of the three, one of them twice.
    fixed = publish_model(rt.catalog.in_model, seed=5)
    wait_until(lambda: (w := worker_stats(worker.pid)) and w["model_version"] == fixed, 60, "the worker on the fix")
    chosen = [by_event[poison[0].event_id]["id"], by_event[poison[1].event_id]["id"]]
    first = _dead_letters("replay", "--id", chosen[0], "--id", chosen[1])
    assert first.returncode == 0, first.stdout + first.stderr
    wait_until(lambda: processed_ids([poison[0].event_id, poison[1].event_id], rt.db) ==
               {poison[0].event_id, poison[1].event_id}, 90, "the replayed events processed")
    again = _dead_letters("replay", "--id", chosen[0])
    assert again.returncode == 0 and "already replayed" in again.stdout, again.stdout + again.stderr
    unknown = _dead_letters("replay", "--id", "no-such-letter")
    assert unknown.returncode == 2 and "no dead letter" in unknown.stderr

    # One effect: each replayed rating stored once, in the user's history, in a fresh list; the
    # third (not replayed) stays out; the topic got each replayed event once more, no copies.
    for e in poison[:2]:
        assert rt.db[mongo.RATINGS].count_documents({"_id": e.event_id}) == 1
        assert rating_history.user_ratings(e.user_id, db=rt.db)[e.product_id] == 4.0
        assert stored_lists.get_recommendations(e.user_id, db=rt.db)["source_event_id"] == e.event_id
    assert rating_history.get_rating(poison[2].event_id, db=rt.db)["state"] != "processed"
    replayed = [r for r in read_topic(rt.topic, 2 * len(poison) + 2, timeout_s=30)
                if json.loads(r.value)["event_id"] in {poison[0].event_id, poison[1].event_id}]
    assert len(replayed) == 4, "each replayed once (plus the original)"
    after = [json.loads(line) for line in _dead_letters("list", "--json").stdout.splitlines() if line.strip()]
    assert {r["id"] for r in after if r["replayed"]} == set(chosen)

