"""A writer of a user's history or list that stalls past its lock's lease (``LOCK_STALE_S``) while
another writer takes the lock over must not write afterwards: what it computed from its read would
replace the newer writer's history or list (core.locking.still_held). The same for the other
named locks' holders (core.locking.fenced_lock): an account deletion's product and search keys, a
reload's pointer.

Real servers and real writers; only the timing is injected: the lease is shortened (no test waits
10 s) and the stalled writer waits, at a point between its read and its write, until the other
writer has taken its lock over and written.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from core import erasure, locking, rating_history, stored_lists
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


# --- the other named locks: a product's, the search keys', a collection's pointer -------------

@pytest.fixture
def own_db(monkeypatch, settings, mongo_db):
    from realtime_support import own_database

    yield from own_database(monkeypatch, settings.mongo_db, "lock_fencing")


def _page(pid: str, users: list[str]) -> dict:
    return {"_id": f"{pid}:1", "pages": 1, "items": [
        {"user_id": u, "rating": 4.0, "ts": 1.0 + i, "summary": f"{u} words", "helpful_votes": 0}
        for i, u in enumerate(users)]}


def test_a_stalled_deletion_does_not_bring_back_a_review_another_deletion_removed(own_db, short_lease, monkeypatch):
    """Two accounts' deletions erase their reviews from one product's page (the product's lock,
    ``core.erasure._erase_reviews``); the first stalls between its read of the page and
    its write, the second takes the lock over and erases its review. The stalled one must not
    write its page (with the second account's review) nor its counts; its re-run finishes it."""
    from pymongo.collection import Collection

    from core import mongo
    from core.erasure import _erase_reviews

    db = own_db
    db[mongo.PRODUCTS].insert_one({"_id": "P", "n_reviews": 3, "avg_rating": 4.0, "rating_hist": {"4": 3},
                                   "sample_summary": ""})
    db[mongo.PRODUCT_REVIEWS].insert_one(_page("P", ["a", "b", "c"]))
    stall = Stall()
    monkeypatch.setattr(Collection, "find_one", stall.wrap(Collection.find_one))  # after its read of the page
    errors = stall.run(lambda: _erase_reviews("P", "a", db, mark="erasing_a"),
                       lambda: _erase_reviews("P", "b", db, mark="erasing_b"))
    users = [r["user_id"] for r in db[mongo.PRODUCT_REVIEWS].find_one({"_id": "P:1"})["items"]]
    assert "b" not in users, "the stalled deletion brought back the review the other one removed"
    assert [type(e) for e in errors] == [locking.LeaseLost]
    _erase_reviews("P", "a", db, mark="erasing_a")  # its re-run (the worker's delete_account, the load's eraser)
    assert [r["user_id"] for r in db[mongo.PRODUCT_REVIEWS].find_one({"_id": "P:1"})["items"]] == ["c"]
    assert db[mongo.PRODUCTS].find_one({"_id": "P"})["n_reviews"] == 1


def test_a_stalled_deletion_does_not_bring_back_search_postings_another_deletion_removed(
        own_db, short_lease, monkeypatch):
    """Two deletions take their products off one search key (its lock, ``_unlist_words``); the
    first stalls between its read of the key and its write."""
    from core import mongo, search
    from core.erasure import _unlist_words

    db = own_db
    ids = ["P1", "P2", "P3"]
    db[mongo.SEARCH_INDEX].insert_one({"_id": "word", "n": 3, "ids": " ".join(ids), "tiers": search.REVIEW * 3,
                                       "ranks": "0 1 2", "cats": ["c"], "cat": "0 0 0"})
    stall = Stall()
    monkeypatch.setattr(mongo, "find_by_ids", stall.wrap(mongo.find_by_ids))
    errors = stall.run(lambda: _unlist_words({"word": {"P1"}}, db), lambda: _unlist_words({"word": {"P2"}}, db))
    assert "P2" not in db[mongo.SEARCH_INDEX].find_one({"_id": "word"})["ids"].split(), \
        "the stalled deletion brought back the posting the other one removed"
    assert [type(e) for e in errors] == [locking.LeaseLost]
    _unlist_words({"word": {"P1"}}, db)
    assert db[mongo.SEARCH_INDEX].find_one({"_id": "word"})["ids"] == "P3"


def test_a_stalled_reload_start_does_not_overwrite_a_newer_start(own_db, short_lease, monkeypatch):
    """Two full reloads of one collection begin (normally kept apart by the batch lock: here one
    lost it while stalled); the first stalls between its read of the pointer and its write. The
    newer start's generation must stay the one being loaded, and the stalled one's is not left."""
    from core import mongo

    db = own_db
    stall = Stall()
    monkeypatch.setattr(db, "drop_collection", stall.wrap(db.drop_collection, after=False))
    started = []
    errors = stall.run(lambda: started.append(mongo.replace_collection_start("things", db=db)),
                       lambda: started.append(mongo.replace_collection_start("things", db=db)))
    pointer = mongo.raw_collection(db, mongo.POINTERS).find_one({"_id": "things"})
    assert pointer["staging"] == started[0], "the stalled start replaced the newer start's generation"
    assert [type(e) for e in errors] == [locking.LeaseLost]
    assert [c for c in db.list_collection_names() if c.startswith("things__g")] == [started[0]]
    assert mongo.replace_collection_finish("things", db=db, staging=started[0]) == started[0]


# --- the site's account deletion, when it loses a product's lock --------------------------------

def _taken_over_after_reading(page_id: str, takeover: Callable[[], object]) -> Callable:
    """``Collection.find_one`` that, after its first read of review page ``page_id``, lets
    ``takeover`` run (in this thread: the reader stalls meanwhile) before returning the page."""
    from pymongo.collection import Collection

    original, done = Collection.find_one, []

    def find_one(self, *args, **kwargs):
        doc = original(self, *args, **kwargs)
        if not done and args and args[0] == {"_id": page_id}:
            done.append(True)
            takeover()
        return doc
    return find_one


@pytest.mark.django_db
@pytest.mark.parametrize("via", ["page", "api"])
def test_a_deletion_that_loses_a_product_lock_deletes_the_account_and_the_sweep_ends_it(
        own_db, short_lease, monkeypatch, site_cache, client, make_user, via):
    """"Delete my account" stalls after reading a product's review page, past the lease; another
    deletion takes the product's lock over and erases its own review. The stalled erasure raises
    ``LeaseLost`` (nothing written): the site answered 500, then 503 asking the shopper to delete
    again, and whoever did not kept the account (name, e-mail) and the reviews. The account is
    deleted at once, the shopper told that some reviews are still being removed, and Celery's
    sweep ends the erasure as one uninterrupted deletion would."""
    from django.contrib.auth.models import User
    from pymongo.collection import Collection

    from accounts.models import AccountDeletion
    from core import mongo
    from core.erasure import _erase_reviews
    from tests.site_catalog import PASSWORD

    db, reviewer = own_db, f"LEASE{via.upper()}"
    db[mongo.PRODUCTS].insert_one({"_id": "P", "n_reviews": 3, "avg_rating": 4.0, "rating_hist": {"4": 3},
                                   "sample_summary": ""})
    db[mongo.PRODUCT_REVIEWS].insert_one(_page("P", [reviewer, "b", "c"]))
    db[mongo.USER_HISTORY].insert_one(rating_history.history_doc(reviewer, {"P": (4.0, 1.0)}, {}))
    user = make_user(reviewer_id=reviewer)
    client.force_login(user)
    find_one = Collection.find_one
    other = lambda: _erase_reviews("P", "b", db, mark="erasing_b")  # noqa: E731 - another account's deletion
    monkeypatch.setattr(Collection, "find_one", _taken_over_after_reading("P:1", other))

    if via == "api":
        answer = client.post("/api/account/delete/", {"password": PASSWORD}, content_type="application/json")
        assert answer.status_code == 202 and answer.json()["erasure"] == "in progress", answer.content
    else:
        answer = client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"})
        assert answer.status_code == 200, answer.content
        assert "was interrupted part-way" in " ".join(answer.content.decode().split()), answer.content
    assert not User.objects.filter(pk=user.pk).exists()
    assert [r.counts["unfinished"] for r in AccountDeletion.objects.all()] == ["LeaseLost"]
    assert db[mongo.USER_HISTORY].find_one({"_id": reviewer}) is not None  # the erasure stopped midway
    users = [r["user_id"] for r in db[mongo.PRODUCT_REVIEWS].find_one({"_id": "P:1"})["items"]]
    assert users == [reviewer, "c"], users  # its write of the page was not made; the other's was

    monkeypatch.setattr(Collection, "find_one", find_one)  # no more takeovers
    assert erasure.finish_erasures(0, db=db) == {"finished": 1, "stopped": 0}
    assert [r["user_id"] for r in db[mongo.PRODUCT_REVIEWS].find_one({"_id": "P:1"})["items"]] == ["c"]
    assert db[mongo.PRODUCTS].find_one({"_id": "P"})["n_reviews"] == 1
    assert db[mongo.USER_HISTORY].find_one({"_id": reviewer}) is None


def _held_product(db, reviewer: str, monkeypatch) -> None:
    """Product P reviewed by ``reviewer`` and "b", its lock held by another writer on a live lease,
    and a fenced lock's wait shortened to 0.2 s (30 s on the site)."""
    import time

    from core import mongo

    db[mongo.PRODUCTS].insert_one({"_id": "P", "n_reviews": 2, "avg_rating": 4.0, "rating_hist": {"4": 2},
                                   "sample_summary": ""})
    db[mongo.PRODUCT_REVIEWS].insert_one(_page("P", [reviewer, "b"]))
    db[mongo.USER_HISTORY].insert_one(rating_history.history_doc(reviewer, {"P": (4.0, 1.0)}, {}))
    db[mongo.EVENT_CLAIMS].insert_one({**locking.lock_doc("product:P", "other-writer", time.time()),
                                "expires": time.time() + 600})  # a live holder, on a lease
    monkeypatch.setattr(locking.fenced_lock.__wrapped__, "__defaults__", (None, 0.2))  # wait_s: 0.2 s


@pytest.mark.django_db
@pytest.mark.parametrize("via", ["page", "api"])
def test_a_deletion_that_waits_too_long_for_a_product_lock_still_deletes_the_account(
        own_db, monkeypatch, site_cache, client, make_user, via):
    """Another writer holds the product's lock past the deletion's wait (``LockHeld``, 30 s on the
    site, shortened here): the site answered 500, then 503. Like a lost lock: the account is
    deleted, the rest left to the sweep."""
    from django.contrib.auth.models import User

    from accounts.models import AccountDeletion
    from tests.site_catalog import PASSWORD

    db, reviewer = own_db, f"HELD{via.upper()}"
    _held_product(db, reviewer, monkeypatch)
    user = make_user(reviewer_id=reviewer)
    client.force_login(user)
    held = (client.post("/api/account/delete/", {"password": PASSWORD}, content_type="application/json")
            if via == "api" else client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"}))
    assert held.status_code == (202 if via == "api" else 200), held.content
    assert not User.objects.filter(pk=user.pk).exists()
    assert [r.counts["unfinished"] for r in AccountDeletion.objects.all()] == ["LockHeld"]


@pytest.mark.django_db
def test_the_staff_record_of_a_deletion_left_to_the_sweep_says_when_the_sweep_ended_it(
        own_db, monkeypatch, site_cache, client, admin_client, make_user):
    """The staff record of an erasure that stopped kept the failure's name and no end, also after
    Celery's sweep (no Django there) finished it: staff saw an unfinished deletion for ever. Opening
    the records now notes when a run again ended it, through a random reference both the record and
    the deleted mark hold until then; a deletion erased at once has its end from the start."""
    from accounts.models import AccountDeletion
    from core import mongo
    from tests.site_catalog import PASSWORD

    from pymongo.errors import AutoReconnect, ExecutionTimeout

    db = own_db
    _held_product(db, "SWEPT", monkeypatch)
    client.force_login(make_user(reviewer_id="SWEPT"))
    erase = erasure.delete_user_data

    def fails_once(*args, **kwargs):  # the first request fails after the mark was made: asked again
        monkeypatch.setattr(erasure, "delete_user_data", erase)
        raise AutoReconnect("connection lost")
    monkeypatch.setattr(erasure, "delete_user_data", fails_once)
    assert client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"}).status_code == 503
    assert mongo.BREAKER.is_open  # the site's middleware saw MongoDB fail
    mongo.BREAKER.success()  # it is back (the admin does not read while the breaker is open)
    assert db[mongo.DELETED_USERS].find_one({"_id": "SWEPT"}) is not None and not AccountDeletion.objects.exists()
    assert client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"}).status_code == 200
    record = AccountDeletion.objects.get()
    assert record.counts["unfinished"] == "LockHeld" and record.erased_at is None and record.erasure_ref
    assert admin_client.get("/admin/accounts/accountdeletion/").status_code == 200
    record.refresh_from_db()
    assert record.erased_at is None, "noted as ended before any run ended it"
    mongo.BREAKER.failure()  # MongoDB failed moments ago: the admin does not wait for it
    down = admin_client.get("/admin/accounts/accountdeletion/")
    assert down.status_code == 200 and b"Could not read the erasures" in down.content
    mongo.BREAKER.success()
    with monkeypatch.context() as slow:  # the admin's own read timing out does not open the site's breaker
        slow.setattr(erasure, "erasures_ended", _raises(ExecutionTimeout("operation exceeded time limit")))
        down = admin_client.get("/admin/accounts/accountdeletion/")
    assert down.status_code == 200 and b"Could not read the erasures" in down.content and not mongo.BREAKER.is_open

    db[mongo.EVENT_CLAIMS].delete_many({})  # the other writer is gone; the sweep runs
    assert erasure.finish_erasures(0, db=db) == {"finished": 1, "stopped": 0}
    page = admin_client.get(f"/admin/accounts/accountdeletion/{record.pk}/change/")
    assert page.status_code == 200
    record.refresh_from_db()
    assert record.erased_at is not None and record.erasure_ref == "", (record.erased_at, record.erasure_ref)
    assert db[mongo.DELETED_USERS].find_one({"_id": "SWEPT"})["erased_at"] == pytest.approx(
        record.erased_at.timestamp(), abs=1e-3)

    client.force_login(make_user(reviewer_id="AT_ONCE"))  # nothing in the way: erased in the request
    assert client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"}).status_code == 200
    at_once = AccountDeletion.objects.exclude(pk=record.pk).get()
    assert at_once.erased_at is not None and at_once.erasure_ref == "" and "unfinished" not in at_once.counts


def _raises(exc: BaseException) -> Callable:
    def fail(*args, **kwargs):
        raise exc
    return fail


@pytest.mark.django_db
def test_a_deletion_whose_erasure_reference_cannot_be_noted_still_deletes_the_account(
        own_db, monkeypatch, site_cache, client, admin_client, make_user):
    """MongoDB failing on the reference's write, after the erasure stopped, answered 503 and kept
    the account (name, e-mail) with its mark made: the workers dropped its ratings while it still
    logged in. The reference is only for the staff record: the deletion goes on, the record says
    its end is unknown."""
    from pymongo.errors import AutoReconnect

    from accounts.models import AccountDeletion
    from django.contrib.auth.models import User
    from tests.site_catalog import PASSWORD

    _held_product(own_db, "NONOTE", monkeypatch)
    user = make_user(reviewer_id="NONOTE")
    client.force_login(user)
    monkeypatch.setattr(erasure, "note_unfinished_erasure", _raises(AutoReconnect("connection lost")))
    answer = client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"})
    assert answer.status_code == 200, answer.content
    assert not User.objects.filter(pk=user.pk).exists()
    record = AccountDeletion.objects.get()
    assert record.counts["unfinished"] == "LockHeld" and record.erasure_ref == "" and record.erased_at is None
    assert b"unknown (stopped before this was noted)" in admin_client.get("/admin/accounts/accountdeletion/").content


@pytest.mark.django_db
def test_a_deletion_stopped_after_an_earlier_run_ended_is_not_shown_as_ended(
        own_db, monkeypatch, site_cache, client, admin_client, make_user):
    """An earlier run of the deletion ended (its Django part failed, the shopper asked again) and a
    write in flight then brought some of the account back: this run stops on it. The mark's old
    ``erased_at`` made the record show that earlier end at once, and the sweep, which looks for
    marks without one, never ran the erasure again."""
    from accounts.models import AccountDeletion
    from core import mongo
    from tests.site_catalog import PASSWORD

    db = own_db
    erasure.record_deleted_user("AGAIN", db=db)
    erasure.record_erased("AGAIN", db=db)  # the earlier run's end
    _held_product(db, "AGAIN", monkeypatch)  # what came back, behind a held lock
    client.force_login(make_user(reviewer_id="AGAIN"))
    assert client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"}).status_code == 200
    assert admin_client.get("/admin/accounts/accountdeletion/").status_code == 200
    record = AccountDeletion.objects.get()
    assert record.counts["unfinished"] == "LockHeld" and record.erased_at is None, record.erased_at
    assert "AGAIN" in erasure.unfinished_erasures(0, 10, db=db)
    assert "erased_at" not in db[mongo.DELETED_USERS].find_one({"_id": "AGAIN"})


def test_the_workers_delete_account_leaves_an_erasure_it_cannot_finish_to_the_sweep(own_db, monkeypatch):
    """The site sends ``delete_account`` after its own erasure stopped (another writer holds a
    product's lock); the worker ran the erasure again, met the same lock, and raised: three tries
    of a 30 s wait holding the partition, then the event went to the dead letters. It hands the
    erasure to Celery's sweep, as the site does."""
    from core import mongo
    from core.events import DELETE_ACCOUNT
    from kafka_workers.batch import forget_user

    db, reviewer = own_db, "HELDWORKER"
    _held_product(db, reviewer, monkeypatch)
    erasure.record_deleted_user(reviewer, db=db)
    outcome = forget_user(RatingEvent(user_id=reviewer, product_id="", rating=0, action=DELETE_ACCOUNT))
    assert outcome.status == "processed"

    db[mongo.EVENT_CLAIMS].delete_one({"_id": "product:P"})  # the other writer is done
    assert erasure.finish_erasures(0, db=db) == {"finished": 1, "stopped": 0}
    assert [r["user_id"] for r in db[mongo.PRODUCT_REVIEWS].find_one({"_id": "P:1"})["items"]] == ["b"]
