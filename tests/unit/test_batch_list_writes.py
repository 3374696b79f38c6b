"""``kafka_workers.batch._write_with_lists``: a big batch computes its lists while the database
writes (histories first, lists after, in order; the lists' ``as_of`` after the histories are
stored), a small one writes in the calling thread, and no write outlives the call."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from core import locking, mongo, rating_history, stored_lists
from kafka_workers import batch


@pytest.fixture
def fake_db(monkeypatch):
    """The database calls recorded: (what, thread name, users, as_of, time finished)."""
    log: list[tuple] = []
    computing = threading.Event()

    def bulk_upsert(collection, docs, *args, **kwargs):
        docs = list(docs)
        if collection == mongo.USER_HISTORY:
            computing.wait(5)  # a big batch's lists are computed meanwhile; a sequential one waits 5 s
            log.append(("histories", threading.current_thread().name, [d["_id"] for d in docs], None, time.time()))

    def write_recommendations_many(lists, as_of, *args, **kwargs):
        if any(d["_id"] == "fail" for d in lists):
            raise RuntimeError("the database went away")
        time.sleep(0.01)
        log.append(("lists", threading.current_thread().name, [d["_id"] for d in lists], as_of, time.time()))
        return {d["_id"]: dict(d, as_of=as_of) for d in lists}

    def recommendations_for(history, model, n, excluded, popular=None):
        computing.set()
        return [{"product_id": "p1", "score": 1.0}], "v1"

    monkeypatch.setattr(mongo, "bulk_upsert", bulk_upsert)
    monkeypatch.setattr(mongo, "get_db", lambda: None)
    monkeypatch.setattr(mongo, "physical_name", lambda db, name: name)  # no reload: user_history is itself
    monkeypatch.setattr(mongo, "set_by_ids", lambda *a, **k: None)
    monkeypatch.setattr(stored_lists, "write_recommendations_many", write_recommendations_many)
    monkeypatch.setattr(batch, "recommendations_for", recommendations_for)
    return log, computing


def _write(users: list[str], fence: Callable[[], None] = lambda: None,
           lists_failed: Callable[[], None] = lambda: None) -> dict:
    return batch._write_with_lists({u: {"p0": 5.0} for u in users}, {u: set() for u in users}, None,
                                     {u: rating_history.history_doc(u, {"p0": (5.0, 1.0)}, {}) for u in users}, {},
                                     {u: f"e-{u}" for u in users}, fence, history_generation=mongo.USER_HISTORY,
                                     lists_failed=lists_failed)


def test_a_big_batch_computes_its_lists_while_the_histories_are_written(fake_db):
    log, _computing = fake_db
    users = [f"u{i}" for i in range(250)]
    t0 = time.monotonic()
    stored = _write(users)
    assert time.monotonic() - t0 < 4, "the lists were computed only after the histories' write returned"
    assert [what for what, *_ in log] == ["histories", "lists", "lists", "lists"]
    assert [u for what, _t, us, *_ in log if what == "lists" for u in us] == users  # in order, each once
    histories_done = log[0][4]
    assert all(as_of >= histories_done for what, _t, _us, as_of, _done in log if what == "lists")
    assert all(thread.startswith("batch-writes") for _w, thread, *_ in log)
    assert sorted(stored) == sorted(users) and stored["u7"]["source_event_id"] == "e-u7"


def test_a_small_batch_writes_in_the_calling_thread(fake_db):
    log, computing = fake_db
    computing.set()  # (its lists come after its histories: nothing to wait for)
    stored = _write(["a", "b"])
    assert [(what, thread, users) for what, thread, users, *_ in log] == [
        ("histories", "MainThread", ["a", "b"]), ("lists", "MainThread", ["a", "b"])]
    assert log[1][3] >= log[0][4] and sorted(stored) == ["a", "b"]


def test_a_failed_write_raises_after_every_write_of_the_batch_has_finished(fake_db):
    log, _computing = fake_db
    users = [f"u{i}" for i in range(100)] + ["fail"] + [f"v{i}" for i in range(150)]
    with pytest.raises(RuntimeError, match="went away"):
        _write(users)
    n = len(log)
    time.sleep(0.1)
    assert len(log) == n, "a write of the batch was still running after it raised"
    assert [what for what, *_ in log] == ["histories", "lists", "lists"]  # the chunks before and after the failed one


def test_the_fence_goes_before_each_write_and_a_lock_taken_over_stops_the_rest(fake_db):
    """(core.locking.fence: a batch stalled past its locks' lease while another writer took one)"""
    log, computing = fake_db
    computing.set()
    fenced = []

    def fence() -> None:
        fenced.append([what for what, *_ in log])
        if len(fenced) == 2:
            raise locking.LeaseLost("taken over")

    with pytest.raises(locking.LeaseLost):
        _write(["a", "b"], fence)
    assert fenced == [[], ["histories"]]
    assert [what for what, *_ in log] == ["histories"], "the lists written after the lock was taken over"


@pytest.mark.parametrize("users", [["a", "fail"], [f"u{i}" for i in range(100)] + ["fail"]])
def test_lists_that_fail_after_the_histories_are_written_are_reported_before_it_raises(fake_db, users):
    """The caller then stores the batch's events unprocessed and marks them for trending (the
    histories hold them: a dead letter's rating is stored); a batch stopped before its histories'
    write (its lock taken over) reports nothing."""
    log, computing = fake_db
    computing.set()
    reported = []
    with pytest.raises(RuntimeError, match="went away"):
        _write(users, lists_failed=lambda: reported.append([what for what, *_ in log]))
    assert reported == [["histories"] + ["lists"] * (len(users) > 2)]

    def lost() -> None:
        raise locking.LeaseLost("taken over")

    reported.clear()
    with pytest.raises(locking.LeaseLost):
        _write(users, lost, lists_failed=lambda: reported.append(True))
    assert reported == []
