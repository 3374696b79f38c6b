"""A writer of a user's history or list that stalls past its lock's lease (``LOCK_STALE_S``) while
another writer takes the lock over must not write afterwards: what it computed from its read would
replace the newer writer's history or list (core.locking.still_held).

Real servers and real writers; only the timing is injected: the lease is shortened (no test waits
10 s) and the stalled writer waits, at a point between its read and its write, until the other
writer has taken its lock over and written.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from core import locking, rating_history, stored_lists
from core.events import RatingEvent
from realtime_support import forget_users
from realtime_support import rt_catalog, worker_env  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

STALLED = "stalled-writer"


class Stall:
    """Stalls the thread named ``STALLED`` at the point a wrapped function is called, until the
    other writer is done (:meth:`run`)."""

    def __init__(self) -> None:
        self.reached, self.released, self.errors = threading.Event(), threading.Event(), []

    def wrap(self, fn: Callable, after: bool = True) -> Callable:
        def stalled(*args, **kwargs):
            if threading.current_thread().name == STALLED and not self.reached.is_set() and not after:
                self._wait()
            result = fn(*args, **kwargs)
            if threading.current_thread().name == STALLED and not self.reached.is_set() and after:
                self._wait()
            return result
        return stalled

    def _wait(self) -> None:
        self.reached.set()
        assert self.released.wait(120), "the other writer never finished"

    def run(self, stalled: Callable[[], object], other: Callable[[], object]) -> list[BaseException]:
        """Run ``stalled`` in its own thread; once it stalls, ``other`` here; then let it go on.
        Returns what ``stalled`` raised."""
        def body() -> None:
            try:
                stalled()
            except BaseException as exc:  # noqa: BLE001 - returned to the test
                self.errors.append(exc)

        thread = threading.Thread(target=body, name=STALLED)
        thread.start()
        try:
            assert self.reached.wait(60), f"the stalled writer never reached its stall: {self.errors}"
            other()  # waits until the stalled writer's lock is stale, takes it over, writes
        finally:
            self.released.set()
            thread.join(120)
        return self.errors


@pytest.fixture
def short_lease(monkeypatch):
    monkeypatch.setattr(locking, "LOCK_STALE_S", 0.5)


def test_a_stalled_history_writer_does_not_overwrite_the_history_of_the_writer_that_took_over(
        rt_catalog, short_lease, monkeypatch):
    db, p = rt_catalog.db, rt_catalog.products
    user = "rt-fence-history"
    forget_users(db, [user])
    stall = Stall()
    monkeypatch.setattr(rating_history, "is_deleted_user", stall.wrap(rating_history.is_deleted_user))
    errors = stall.run(lambda: rating_history.add_to_history(user, p[0], 5, time.time(), db=db),
                       lambda: rating_history.add_to_history(user, p[1], 4, time.time(), db=db))
    assert p[1] in rating_history.user_ratings(user, db=db), "the stalled writer replaced the newer history"
    assert [type(e) for e in errors] == [locking.LeaseLost]
    rating_history.add_to_history(user, p[0], 5, time.time(), db=db)  # what the worker's retry does
    assert set(rating_history.user_ratings(user, db=db)) == {p[0], p[1]}


def test_a_stalled_list_writer_does_not_replace_the_newer_list(rt_catalog, short_lease, monkeypatch):
    """Celery's re-scoring (an older ``as_of``) stalls after its check of the stored list's
    ``as_of`` and before its write; a worker's list from the newer history is written meanwhile."""
    db, p = rt_catalog.db, rt_catalog.products
    user = "rt-fence-list"
    forget_users(db, [user])
    stall = Stall()
    monkeypatch.setattr(stored_lists, "stored_list", stall.wrap(stored_lists.stored_list, after=False))
    celery_as_of = time.time()
    errors = stall.run(
        lambda: stored_lists.write_recommendations(user, [{"product_id": p[2]}], "celery", as_of=celery_as_of, db=db),
        lambda: stored_lists.write_recommendations(user, [{"product_id": p[3]}], "worker", source_event_id="e1",
                                                   as_of=time.time(), db=db))
    doc = stored_lists.get_live_recommendations(user, db=db)
    assert doc["source_event_id"] == "e1", "the stalled writer replaced the newer list"
    assert [type(e) for e in errors] == [locking.LeaseLost]


def test_a_stalled_batch_does_not_overwrite_the_history_of_the_writer_that_took_over(
        rt_catalog, worker_env, short_lease, monkeypatch):
    """The worker's batch path: its users' locks are taken with its events' claims, its histories
    read, then (stalled past the lease) it would write them and their lists in bulk."""
    from kafka_workers import batch
    from kafka_workers.process import handle_event

    db, p = rt_catalog.db, rt_catalog.products
    user = "rt-fence-batch"
    forget_users(db, [user])
    stall = Stall()
    monkeypatch.setattr(batch, "_apply_to_histories", stall.wrap(batch._apply_to_histories))
    first = RatingEvent(user_id=user, product_id=p[0], rating=5, ts=time.time() - 1)
    second = RatingEvent(user_id=user, product_id=p[1], rating=4)
    errors = stall.run(lambda: batch.handle_batch([first], None),
                       lambda: handle_event(second, None))
    assert p[1] in rating_history.user_ratings(user, db=db), "the stalled batch replaced the newer history"
    assert stored_lists.get_live_recommendations(user, db=db)["source_event_id"] == second.event_id
    assert [type(e) for e in errors] == [locking.LeaseLost]
    assert handle_event(first, None).status == "processed"  # the worker's one-at-a-time retry
    assert set(rating_history.user_ratings(user, db=db)) == {p[0], p[1]}
