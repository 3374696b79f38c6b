"""The worker's batched path (``kafka_workers.batch.handle_batch``): a poll's events grouped by user,
each user's applied in memory and written once, have exactly the effects of the same events handled
one at a time (``handle``: a batch of one each), on the real MongoDB-protocol server.

Two copies of one stream of events (ratings, a rating given again, removals, "not interested" and
its undo, an older "not interested" after the undo, a redelivered event, an unknown product, a deleted account, a rating older than the stored one) go
to two sets of users: one copy through ``handle`` event by event, the other through
``handle_batch`` in polls. Histories, exclusions, lists, stored ratings and outcomes must match.
"""
from __future__ import annotations

import json
import time

import pytest

from core import (artifacts, cancellation, catalog, erasure, locking, mongo, rating_history, shopper_controls,
                  stored_lists)
from core.events import DELETE_ACCOUNT, INTERESTED_AGAIN, NOT_INTERESTED, UNRATE, RatingEvent
from realtime_support import TOP_N, forget_users, publish_model
from realtime_support import rt_catalog, worker_env  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


def _stream(prefix: str, p: list[str], unknown: str) -> list[RatingEvent]:
    now = time.time() - 100
    u = [f"{prefix}-{i}" for i in range(4)]
    e = [
        RatingEvent(user_id=u[0], product_id=p[0], rating=5, ts=now + 1),
        RatingEvent(user_id=u[1], product_id=p[1], rating=2, ts=now + 2),
        RatingEvent(user_id=u[0], product_id=p[2], rating=4, ts=now + 3),
        RatingEvent(user_id=u[0], product_id=p[0], rating=0, ts=now + 4, action=UNRATE),
        RatingEvent(user_id=u[1], product_id=p[3], rating=0, ts=now + 5, action=NOT_INTERESTED),
        RatingEvent(user_id=u[2], product_id=unknown, rating=3, ts=now + 6),
        RatingEvent(user_id=u[2], product_id=p[4], rating=3, ts=now + 7),
        RatingEvent(user_id=u[0], product_id=p[0], rating=1, ts=now + 2),  # older than the removal
        RatingEvent(user_id=u[3], product_id=p[5], rating=4, ts=now + 8),
        RatingEvent(user_id=u[3], product_id="", rating=0, ts=now + 9, action=DELETE_ACCOUNT),
        RatingEvent(user_id=u[3], product_id=p[6], rating=4, ts=now + 10),  # after the deletion
        RatingEvent(user_id=u[1], product_id=p[1], rating=5, ts=now + 11),  # rated again
        RatingEvent(user_id=u[2], product_id=p[250], rating=5, ts=now + 12),  # unknown to the model
        RatingEvent(user_id=u[2], product_id=p[7], rating=0, ts=now + 13, action=NOT_INTERESTED),
        RatingEvent(user_id=u[2], product_id=p[8], rating=0, ts=now + 14, action=NOT_INTERESTED),
        RatingEvent(user_id=u[2], product_id=p[7], rating=0, ts=now + 15, action=INTERESTED_AGAIN),
        RatingEvent(user_id=u[2], product_id=p[7], rating=0, ts=now + 14.5, action=NOT_INTERESTED),  # older than the undo
    ]
    return e + [e[2]]  # a redelivery in the same poll


def _state(db, users: list[str], stream: list[RatingEvent]) -> dict:
    out, position = {}, {e.event_id: i for i, e in enumerate(stream)}
    for k, user in enumerate(users):
        recs = stored_lists.get_recommendations(user, db=db)
        out[k] = {"history": rating_history.user_history(user, db=db), "excluded": shopper_controls.exclusions(user, db=db),
                  "source": position.get((recs or {}).get("source_event_id")),
                  "items": [i["product_id"] for i in (recs or {}).get("items", [])],
                  "model": (recs or {}).get("model_version"),
                  "ratings": sorted((d["product_id"], d["rating"], d["action"], d["state"], d.get("model_version"))
                                    for d in db[mongo.RATINGS].find({"user_id": user}))}
    return out


def _reload(name: str, docs: list[dict], db=None) -> None:
    """A reload as mongo_load does it: these documents become the collection's new live generation."""
    staging = mongo.replace_collection_start(name, db=db)
    mongo.insert_docs(staging, docs, db=db)
    mongo.replace_collection_finish(name, db=db)


def test_batches_have_the_effects_of_one_event_at_a_time(rt_catalog, worker_env):
    from kafka_workers.batch import handle_batch
    from kafka_workers.process import handle

    db, p = rt_catalog.db, rt_catalog.products
    model = artifacts.load_model(publish_model(rt_catalog.in_model, seed=31))
    one, many = _stream("rt-b1", p, "NOPE-b"), _stream("rt-bn", p, "NOPE-b")
    forget_users(db, [f"{prefix}-{i}" for prefix in ("rt-b1", "rt-bn") for i in range(4)])

    singles = [handle(e.to_bytes(), model) for e in one]
    batched = handle_batch(many[:6], model) + handle_batch(many[6:], model)

    assert [o.status for o in batched] == [o.status for o in singles]
    assert [o.status for o in singles].count("dead-letter") == 1 and singles[-1].status == "duplicate"
    want, got = _state(db, [f"rt-b1-{i}" for i in range(4)], one), _state(db, [f"rt-bn-{i}" for i in range(4)], many)
    for k in range(4):
        assert got[k]["history"].keys() == want[k]["history"].keys(), k
        assert {pid: r for pid, (r, _) in got[k]["history"].items()} == \
            {pid: r for pid, (r, _) in want[k]["history"].items()}, k
        assert (got[k]["excluded"], got[k]["items"], got[k]["model"], got[k]["ratings"], got[k]["source"]) == \
            (want[k]["excluded"], want[k]["items"], want[k]["model"], want[k]["ratings"], want[k]["source"]), k
    assert got[3]["history"] == {} and got[3]["ratings"] == [] and got[3]["items"] == []  # deleted stays deleted
    assert p[0] not in got[0]["history"] and got[1]["history"][p[1]][0] == 5.0 and got[1]["excluded"] == {p[3]}
    assert got[2]["excluded"] == {p[8]}  # shown again, and not hidden again by the older "not interested"

    # A redelivery of the whole batch changes nothing and is all duplicates (or dead letters / drops).
    before = _state(db, [f"rt-bn-{i}" for i in range(4)], many)
    again = handle_batch(many[:6], model)
    assert {o.status for o in again} <= {"duplicate", "dead-letter", "dropped", "processed"}
    assert [o.status for o in again if o.status == "processed"] == []
    after = _state(db, [f"rt-bn-{i}" for i in range(4)], many)
    assert {k: (v["history"], v["excluded"], v["ratings"]) for k, v in after.items()} == \
        {k: (v["history"], v["excluded"], v["ratings"]) for k, v in before.items()}


def test_a_reload_switching_histories_under_a_slow_batch_keeps_its_ratings(rt_catalog, worker_env, monkeypatch):
    """The batch stores its ratings after writing the histories; a reload that switched
    ``user_history`` in between (its replay of live ratings may already have run) must still end
    with the batch's ratings in the new generation. Simulated: the switch happens while the batch
    writes its lists, and the batch counts as slow (the fresh pointer check always runs)."""
    from kafka_workers import batch as batched

    db, p = rt_catalog.db, rt_catalog.products
    model = artifacts.load_model(publish_model(rt_catalog.in_model, seed=37))
    now = time.time() - 50
    batch = [RatingEvent(user_id=f"rt-rl-{i % 3}", product_id=p[i], rating=1 + i % 5, ts=now + i) for i in range(6)]
    forget_users(db, [f"rt-rl-{i}" for i in range(3)])
    write_lists = stored_lists.write_recommendations_many

    def switch_then_write(*args, **kwargs):  # the reload: a new generation, built before this batch
        kept = [d for d in db[mongo.USER_HISTORY].find() if not str(d["_id"]).startswith("rt-rl-")]
        _reload(mongo.USER_HISTORY, kept, db=db)
        return write_lists(*args, **kwargs)

    monkeypatch.setattr(stored_lists, "write_recommendations_many", switch_then_write)
    monkeypatch.setattr(mongo, "RETIRE_GRACE_S", mongo.POINTER_TTL_S)  # every batch counts as slow
    try:
        outcomes = batched.handle_batch(batch, model)
        assert [o.status for o in outcomes] == ["processed"] * 6
        for i in range(3):
            want = {e.product_id: float(e.rating) for e in batch if e.user_id == f"rt-rl-{i}"}
            assert rating_history.user_ratings(f"rt-rl-{i}", db=db) == want, i
    finally:
        mongo.drop_retired(wait=True, db=db)


def test_a_batch_of_many_users_keeps_exclusions_and_deleted_accounts(rt_catalog, worker_env):
    """A poll of 40 users, each their own fold-in (the backlog spread thin): a stored "not
    interested" still keeps its product off the list, and a deleted account's rating is dropped."""
    from core import recommend
    from kafka_workers.batch import handle_batch

    db, p = rt_catalog.db, rt_catalog.products
    model = artifacts.load_model(publish_model(rt_catalog.in_model, seed=41))
    users = [f"rt-bw-{i}" for i in range(40)]
    forget_users(db, users)
    now = time.time() - 30
    batch = [RatingEvent(user_id=u, product_id=p[i % 40], rating=1 + i % 5, ts=now + i) for i, u in enumerate(users)]
    picky, gone = users[5], users[9]
    unwanted = recommend.recommend(model, {batch[5].product_id: float(batch[5].rating)}, n=TOP_N)[0]["product_id"]
    shopper_controls.change_exclusion(picky, unwanted, hide=True, ts=now - 10, db=db)
    erasure.record_deleted_user(gone, db=db)

    outcomes = handle_batch(batch, model)

    assert [o.status for o in outcomes] == ["dropped" if u == gone else "processed" for u in users]
    items = [i["product_id"] for i in stored_lists.get_recommendations(picky, db=db)["items"]]
    assert len(items) == TOP_N and unwanted not in items
    assert shopper_controls.exclusions(picky, db=db) == {unwanted}
    assert rating_history.user_history(gone, db=db) == {} and stored_lists.get_recommendations(gone, db=db) is None
    assert db[mongo.RATINGS].count_documents({"user_id": gone}) == 0
    assert all(stored_lists.get_recommendations(u, db=db) for u in users if u != gone)


def test_a_batch_reads_deleted_accounts_with_its_histories_and_announces_under_its_locks(
        rt_catalog, worker_env, monkeypatch):
    """The round trips a one-event batch saves: its user's lock is taken by the insert that claims
    its event; ``deleted_users`` is read for every user (a reload may bring a deleted account's
    history back), in the same call as the histories; and the list is announced while the batch
    still holds the user's locks, before the ratings' insert (neither the release nor that insert
    is between the rating and the page)."""
    from core import list_state
    from kafka_workers.batch import handle_batch

    db, p = rt_catalog.db, rt_catalog.products
    model = artifacts.load_model(publish_model(rt_catalog.in_model, seed=43))
    user = "rt-bd-0"
    forget_users(db, [user])
    read, calls, held_at_announce, stored_at_announce = [], [], [], []
    find_many, announce_many = mongo.find_by_ids_many, list_state.announce_many

    def spy_reads(requests, db=None):
        requests = [(c, list(ids), proj) for c, ids, proj in requests]
        read.extend((c, ids) for c, ids, _ in requests if ids)
        calls.append({c.split("__g")[0] for c, ids, _ in requests if ids})  # a generation by its collection
        return find_many(requests, db=db)

    def spy_announce(versions):
        held_at_announce.append({d["_id"] for d in db[mongo.EVENT_CLAIMS].find({"_id": {"$regex": f"{user}$"}})})
        stored_at_announce.append(db[mongo.RATINGS].count_documents({"user_id": user}))
        return announce_many(versions)

    monkeypatch.setattr(mongo, "find_by_ids_many", spy_reads)
    monkeypatch.setattr(list_state, "announce_many", spy_announce)
    claimed_with, claim_batch = [], cancellation.claim_batch
    monkeypatch.setattr(cancellation, "claim_batch",
                        lambda ids, *a, **kw: claimed_with.append(sorted(kw.get("locks", ()))) or claim_batch(ids, *a, **kw))
    monkeypatch.setattr(locking, "take_locks", lambda *a, **kw: pytest.fail("a lock taken by a command of its own"))
    now = time.time() - 20
    first = handle_batch([RatingEvent(user_id=user, product_id=p[0], rating=4, ts=now)], model)
    assert (mongo.DELETED_USERS, [user]) in read  # a new user: looked up
    read.clear()
    second = handle_batch([RatingEvent(user_id=user, product_id=p[1], rating=5, ts=now + 1)], model)

    assert [o.status for o in first + second] == ["processed", "processed"]
    assert (mongo.DELETED_USERS, [user]) in read  # has a history: looked up all the same
    assert [c for c in calls if mongo.DELETED_USERS in c] == [c for c in calls if mongo.USER_HISTORY in c]  # one read
    assert held_at_announce == [{locking.writer_lock_name(user)}] * 2  # one lock document for history and list
    assert claimed_with == [[locking.writer_lock_name(user)]] * 2  # taken by the insert that claims the event
    assert stored_at_announce == [0, 1]  # each batch's rating is inserted after its announcement
    assert db[mongo.RATINGS].count_documents({"user_id": user, "state": "processed"}) == 2
    assert db[mongo.EVENT_CLAIMS].count_documents({"_id": {"$regex": f"{user}$"}}) == 0
    assert stored_lists.get_recommendations(user, db=db)["source_event_id"] == second[0].event.event_id


def test_a_batch_reads_exclusions_only_for_users_it_has_not_seen_without_them(rt_catalog, worker_env, monkeypatch):
    """A user this worker saw with no "not interested" item is not looked up in ``exclusions``
    again, until the worker writes one for them (batched or one event at a time) or a rebalance
    may have given them to another worker; a product they excluded never comes back."""
    from core import recommend
    from kafka_workers.batch import handle_batch
    from kafka_workers.process import handle
    from kafka_workers.commits import CommitOnRevoke

    db, p = rt_catalog.db, rt_catalog.products
    model = artifacts.load_model(publish_model(rt_catalog.in_model, seed=47))
    user, other = "rt-bx-0", "rt-bx-1"
    forget_users(db, [user, other])
    read = []
    find_many = mongo.find_by_ids_many

    def spy_reads(requests, db=None):
        requests = [(c, list(ids), proj) for c, ids, proj in requests]
        read.extend(ids for c, ids, _ in requests if c == mongo.EXCLUSIONS and ids)
        return find_many(requests, db=db)

    def batch(*events: RatingEvent) -> list[str]:
        read.clear()
        assert [o.status for o in handle_batch(list(events), model)] == ["processed"] * len(events)
        return sorted(u for ids in read for u in ids)

    def items(u: str) -> list[str]:
        return [i["product_id"] for i in stored_lists.get_recommendations(u, db=db)["items"]]

    monkeypatch.setattr(mongo, "find_by_ids_many", spy_reads)
    now = time.time() - 50
    assert batch(RatingEvent(user_id=user, product_id=p[0], rating=5, ts=now),
                 RatingEvent(user_id=other, product_id=p[1], rating=4, ts=now)) == [user, other]
    assert batch(RatingEvent(user_id=user, product_id=p[2], rating=4, ts=now + 1)) == []  # seen without any
    unwanted = items(user)[0]
    # adding one reads them first: another worker may have stored one since (a rebalance)
    assert batch(RatingEvent(user_id=user, product_id=unwanted, rating=0, ts=now + 2, action=NOT_INTERESTED)) == [user]
    assert unwanted not in items(user)
    history = {p[0]: 5.0, p[2]: 4.0, p[3]: 5.0}
    assert unwanted in [i["product_id"] for i in recommend.recommend(model, history, n=TOP_N)]  # would come back
    assert batch(RatingEvent(user_id=user, product_id=p[3], rating=5, ts=now + 3)) == [user]  # has one: read
    assert unwanted not in items(user) and shopper_controls.exclusions(user, db=db) == {unwanted}

    assert batch(RatingEvent(user_id=other, product_id=p[4], rating=3, ts=now + 4)) == []
    handle(RatingEvent(user_id=other, product_id=p[5], rating=0, ts=now + 5, action=NOT_INTERESTED).to_bytes(), model)
    assert batch(RatingEvent(user_id=other, product_id=p[6], rating=3, ts=now + 6)) == [other]  # written one at a time

    forget_users(db, [other])
    assert batch(RatingEvent(user_id=other, product_id=p[7], rating=3, ts=now + 7)) == [other]
    assert batch(RatingEvent(user_id=other, product_id=p[8], rating=3, ts=now + 8)) == []
    CommitOnRevoke({}).on_partitions_assigned(set())  # a rebalance: the user may have moved meanwhile
    assert batch(RatingEvent(user_id=other, product_id=p[9], rating=3, ts=now + 9)) == [other]


def test_lists_are_stored_as_one_string_and_read_back_as_written(rt_catalog, worker_env):
    """A batch's list and a single event's list are stored as one string (``core.stored_lists.stored_list``)
    and read back as the items they announced; a list stored as objects by an earlier version
    still reads, and a newer stored list that ``write_recommendations`` keeps comes back whole."""
    from kafka_workers.batch import handle_batch
    from kafka_workers.process import handle_event

    db, p = rt_catalog.db, rt_catalog.products
    model = artifacts.load_model(publish_model(rt_catalog.in_model, seed=44))
    users = ["rt-sl-0", "rt-sl-1", "rt-sl-old"]
    forget_users(db, users)
    now = time.time() - 20
    handle_batch([RatingEvent(user_id=users[0], product_id=p[0], rating=5, ts=now)], model)
    handle_event(RatingEvent(user_id=users[1], product_id=p[1], rating=4, ts=now), model)

    for user in users[:2]:
        raw = db[mongo.RECOMMENDATIONS].find_one({"_id": user})
        assert "items" not in raw and len(json.loads(raw["items_json"])) == TOP_N
        items = stored_lists.get_recommendations(user, db=db)["items"]
        assert items == json.loads(raw["items_json"])
        assert set(items[0]) == {"product_id", "score", "because"} and items[0]["because"] in p

    old = {"_id": users[2], "items": [{"product_id": p[3], "score": 1.0, "because": p[4]}], "model_version": "v0",
           "source_event_id": None, "updated_at": time.time(), "as_of": time.time() + 3600}
    db[mongo.RECOMMENDATIONS].replace_one({"_id": users[2]}, old, upsert=True)
    assert stored_lists.get_recommendations(users[2], db=db)["items"] == old["items"]
    kept = stored_lists.write_recommendations(users[2], [{"product_id": p[5], "score": 2.0, "because": None}], "v1",
                                              as_of=time.time(), db=db)  # older than the stored list: kept
    assert kept["items"] == old["items"]
    forget_users(db, users)


def test_the_worker_s_tail_keeps_locks_and_ratings_until_it_is_finished(rt_catalog, worker_env):
    """With the worker's ``Tail``, a batch leaves its user's lock taken and its ratings waiting: a
    later batch of that user takes no second lock, a redelivery meanwhile is a duplicate, and
    ``finish`` gives the lock back and inserts both ratings, processed. A deletion of the account
    in a later batch finishes the tail first, so no rating of the deleted account is inserted
    after its data went."""
    from kafka_workers.batch import Tail, finish, handle_batch

    db, p = rt_catalog.db, rt_catalog.products
    model = artifacts.load_model(publish_model(rt_catalog.in_model, seed=45))
    user, gone = "rt-tail-0", "rt-tail-gone"
    forget_users(db, [user, gone])
    tail, now = Tail(), time.time() - 20
    first = handle_batch([RatingEvent(user_id=user, product_id=p[0], rating=4, ts=now)], model, tail)
    second = handle_batch([RatingEvent(user_id=user, product_id=p[1], rating=5, ts=now + 1)], model, tail)

    assert [o.status for o in first + second] == ["processed", "processed"]
    assert stored_lists.get_recommendations(user, db=db)["source_event_id"] == second[0].event.event_id
    assert [d["token"] for d in db[mongo.EVENT_CLAIMS].find({"_id": locking.writer_lock_name(user)})] == [tail.token]
    assert db[mongo.RATINGS].count_documents({"user_id": user}) == 0 and len(tail.ratings) == 2
    again = handle_batch([first[0].event], model, tail)  # redelivered before its rating was inserted
    assert [o.status for o in again] == ["duplicate"] and len(tail.ratings) == 2
    assert stored_lists.get_recommendations(user, db=db)["source_event_id"] == second[0].event.event_id
    finish(tail)
    assert not tail
    assert db[mongo.EVENT_CLAIMS].count_documents({"_id": locking.writer_lock_name(user)}) == 0
    assert db[mongo.RATINGS].count_documents({"user_id": user, "state": "processed"}) == 2

    handle_batch([RatingEvent(user_id=gone, product_id=p[2], rating=3, ts=now + 2)], model, tail)
    deleted = handle_batch([RatingEvent(user_id=gone, product_id="", rating=0, ts=now + 3, action=DELETE_ACCOUNT)],
                           model, tail)
    finish(tail)
    assert [o.status for o in deleted] == ["processed"]
    assert db[mongo.RATINGS].count_documents({"user_id": gone}) == 0
    assert db[mongo.EVENT_CLAIMS].count_documents({"_id": locking.writer_lock_name(gone)}) == 0
    forget_users(db, [user, gone])


def test_a_batch_that_must_wait_for_a_lock_gives_back_the_tail_s_first(rt_catalog, worker_env):
    """Another writer holds a user's lock (a Celery re-scoring, say): the batch that needs it
    finishes its tail, giving back the locks it kept, before it waits. Two workers that each kept a
    lock the other needs would otherwise wait on each other until the locks went stale."""
    import threading

    from kafka_workers.batch import Tail, finish, handle_batch

    db, p = rt_catalog.db, rt_catalog.products
    model = artifacts.load_model(publish_model(rt_catalog.in_model, seed=46))
    kept, busy = "rt-tail-kept", "rt-tail-busy"
    forget_users(db, [kept, busy])
    tail, now = Tail(), time.time() - 20
    handle_batch([RatingEvent(user_id=kept, product_id=p[0], rating=4, ts=now)], model, tail)
    assert locking.writer_lock_name(kept) in tail.locks
    holding, saw_release = threading.Event(), []

    def other_writer() -> None:
        with locking.writer_lock(busy, db=db):
            holding.set()
            deadline = time.monotonic() + 5  # (the lock goes stale after locking.LOCK_STALE_S: longer)
            while time.monotonic() < deadline:
                if db[mongo.EVENT_CLAIMS].count_documents({"_id": locking.writer_lock_name(kept)}) == 0:
                    saw_release.append(True)
                    break
                time.sleep(0.02)

    thread = threading.Thread(target=other_writer)
    thread.start()
    assert holding.wait(10)
    outcomes = handle_batch([RatingEvent(user_id=busy, product_id=p[1], rating=5, ts=now + 1)], model, tail)
    thread.join()
    assert saw_release == [True]  # the kept lock went back while the other writer still held its own
    assert [o.status for o in outcomes] == ["processed"]
    assert db[mongo.RATINGS].count_documents({"user_id": kept, "state": "processed"}) == 1  # finished then
    assert tail.locks == {locking.writer_lock_name(busy)}
    finish(tail)
    forget_users(db, [kept, busy])


def test_a_small_catalog_is_remembered_once_per_generation(rt_catalog, worker_env, monkeypatch):
    """A catalog of at most the limit is read whole, once per generation, and its products are not
    read again by a batch; a reload's new generation is read afresh, so a product it no longer
    holds is unknown again (dead-lettered), never remembered from the old one."""
    from kafka_workers.batch import handle_batch

    db, p = rt_catalog.db, rt_catalog.products
    model = artifacts.load_model(publish_model(rt_catalog.in_model, seed=53))
    docs = list(db[mongo.PRODUCTS].find({}))
    n, user = len(docs), "rt-rc-0"
    forget_users(db, [user])
    looked_up = []
    find_many = mongo.find_by_ids_many

    def spy_reads(requests, db=None):
        requests = [(c, list(ids), proj) for c, ids, proj in requests]
        looked_up.extend(i for c, ids, _ in requests if c.split("__g")[0] == mongo.PRODUCTS for i in ids)
        return find_many(requests, db=db)

    monkeypatch.setattr(mongo, "find_by_ids_many", spy_reads)
    monkeypatch.setattr(catalog, "_known_products", {})
    monkeypatch.setattr(catalog, "_catalog_read", {})
    assert catalog.remember_catalog(n - 1) == 0  # larger than the limit: learnt product by product
    assert catalog.products_to_look_up(p[:3]).ids == p[:3]
    catalog._catalog_read.clear()
    assert catalog.remember_catalog(n) == n
    assert catalog.remember_catalog(n) == 0  # once per generation
    now = time.time() - 30
    out = handle_batch([RatingEvent(user_id=user, product_id=p[0], rating=4, ts=now)], model)
    assert [o.status for o in out] == ["processed"] and looked_up == []

    try:
        _reload(mongo.PRODUCTS, [d for d in docs if d["_id"] != p[1]])
        assert catalog.products_to_look_up([p[0], p[1]]).ids == [p[0], p[1]]  # the new generation: not known yet
        assert catalog.remember_catalog(n) == n - 1
        out = handle_batch([RatingEvent(user_id=user, product_id=p[1], rating=4, ts=now + 1),
                            RatingEvent(user_id=user, product_id=p[2], rating=4, ts=now + 2)], model)
        assert [(o.status, o.reason) for o in out] == [("dead-letter", f"unknown product {p[1]}"), ("processed", "")]
        assert looked_up == [p[1]]  # only the one it does not hold, read to be sure
    finally:
        _reload(mongo.PRODUCTS, docs)


def test_a_running_worker_reads_a_reloaded_catalog_when_the_new_model_comes(rt_catalog, worker_env, monkeypatch):
    """A reload writes a new catalog generation and the pipeline publishes a model after it: the
    worker that loads that model reads the new generation whole (a small catalog), instead of
    learning its products again one batch at a time as events name them."""
    import threading
    import uuid

    from kafka_workers import worker
    from realtime_support import wait_until

    db = rt_catalog.db
    docs = list(db[mongo.PRODUCTS].find({}))
    monkeypatch.setattr(catalog, "_known_products", {})
    monkeypatch.setattr(catalog, "_catalog_read", {})
    monkeypatch.setenv("KAFKA_WORKER_GROUP", f"it-remember-{uuid.uuid4().hex[:6]}")
    publish_model(rt_catalog.in_model, seed=54)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop, "it-remember"), daemon=True)
    thread.start()
    try:
        wait_until(lambda: db.name in catalog._catalog_read, 60, "the worker to read the catalog at its start")
        _reload(mongo.PRODUCTS, docs[1:])
        generation = mongo.live_generation(mongo.PRODUCTS, db)
        assert catalog._catalog_read[db.name] != generation
        publish_model(rt_catalog.in_model, seed=55)
        ids = [d["_id"] for d in docs]
        wait_until(lambda: catalog.products_to_look_up(ids).ids == [docs[0]["_id"]], 60,
                   "the worker to read the new generation with the new model")
        assert catalog._catalog_read[db.name] == generation
    finally:
        stop.set()
        thread.join(30)
        _reload(mongo.PRODUCTS, docs)


def test_a_catalog_reload_between_a_batch_s_plan_and_its_read_keeps_remembered_products(
        rt_catalog, worker_env, monkeypatch):
    """A batch decides which products to read from the generation it remembers products of, then
    reads them beside its other reads. A reload that moved the catalog's pointer in between (seen by
    this process once its cached pointer expired) made it judge a remembered product against the new
    generation's empty set: a valid rating dead-lettered as "unknown product" (CI, a rating sent
    while mongo_load ran). The batch now plans, reads and judges against one generation."""
    from kafka_workers.batch import handle_batch

    db, p = rt_catalog.db, rt_catalog.products
    model = artifacts.load_model(publish_model(rt_catalog.in_model, seed=59))
    docs = list(db[mongo.PRODUCTS].find({}))
    user = "rt-rg-0"
    forget_users(db, [user])
    monkeypatch.setattr(catalog, "_known_products", {})
    monkeypatch.setattr(catalog, "_catalog_read", {})
    assert catalog.remember_catalog(len(docs)) == len(docs)
    find_many, planned = mongo.find_by_ids_many, []

    def reload_then_read(requests, db=None):  # the reload lands between the plan and the read
        if not planned:
            planned.extend(c for c, _, _ in requests if c.split("__g")[0] == mongo.PRODUCTS)
            _reload(mongo.PRODUCTS, docs)
            mongo.forget_pointers()  # this process's cached pointer expires now
        return find_many(requests, db=db)

    monkeypatch.setattr(mongo, "find_by_ids_many", reload_then_read)
    try:
        out = handle_batch([RatingEvent(user_id=user, product_id=p[0], rating=4, ts=time.time() - 20)], model)
        assert planned and planned[0] != mongo.live_generation(mongo.PRODUCTS, db)  # planned before the reload
        assert [(o.status, o.reason) for o in out] == [("processed", "")]
    finally:
        mongo.drop_retired(wait=True, db=db)


def test_a_product_read_from_a_generation_dropped_since_the_plan_is_looked_for_in_the_live_one(
        rt_catalog, worker_env, monkeypatch):
    """A batch's reads can start seconds after its plan (small batches read one collection after
    another); a reload meanwhile may have retired and dropped the generation planned, and a product
    not remembered yet read as missing from it: dead-lettered as "unknown product". A product not
    found is looked for once more in the generation live now."""
    from kafka_workers.batch import handle_batch

    db, p = rt_catalog.db, rt_catalog.products
    model = artifacts.load_model(publish_model(rt_catalog.in_model, seed=61))
    docs = list(db[mongo.PRODUCTS].find({}))
    user = "rt-rg-1"
    forget_users(db, [user])
    monkeypatch.setattr(catalog, "_known_products", {})  # nothing remembered: the product must be read
    monkeypatch.setattr(mongo, "RETIRE_GRACE_S", 0.0)
    _reload(mongo.PRODUCTS, docs)  # the catalog in a generation (the session's first is not one)
    find_many, dropped = mongo.find_by_ids_many, []

    def reload_and_drop_then_read(requests, db=None):
        if not dropped:
            dropped.extend(c for c, _, _ in requests if c.split("__g")[0] == mongo.PRODUCTS)
            _reload(mongo.PRODUCTS, docs)
            mongo.drop_retired(wait=True, db=rt_catalog.db)
        return find_many(requests, db=db)

    monkeypatch.setattr(mongo, "find_by_ids_many", reload_and_drop_then_read)
    out = handle_batch([RatingEvent(user_id=user, product_id=p[0], rating=4, ts=time.time() - 20)], model)
    assert dropped and dropped[0] not in db.list_collection_names()  # the planned generation is gone
    assert [(o.status, o.reason) for o in out] == [("processed", "")]


def test_a_reload_of_the_histories_between_a_batch_s_read_and_write_keeps_what_it_loaded(
        rt_catalog, worker_env, monkeypatch):
    """A batch read a user's history from one generation and wrote it whole by the collection's
    name, which a reload could have moved meanwhile: the new generation's history of that user
    (what the load brought, a linked reviewer's new reviews) was replaced by the old one plus the
    batch's rating. The batch now writes the generation it read, and one whose pointer moved in
    between is handled one event at a time (the worker's fallback), which reads the new one, and
    again if a reload meets it too."""
    from kafka_workers.batch import HistoriesReloaded, handle_batch
    from kafka_workers.process import handle

    db, p = rt_catalog.db, rt_catalog.products
    model = artifacts.load_model(publish_model(rt_catalog.in_model, seed=67))
    user = "rt-rh-0"
    forget_users(db, [user])
    mongo.bulk_upsert(mongo.USER_HISTORY, [rating_history.history_doc(user, {p[1]: (3.0, 1.3e9)}, {})], db=db)
    find_many, reloaded = mongo.find_by_ids_many, []

    def read_then_reload(requests, db=None):  # the reload's switch lands between the read and the write
        out = find_many(requests, db=db)
        if not reloaded and any(c.split("__g")[0] == mongo.USER_HISTORY for c, _, _ in requests):
            reloaded.append(True)
            kept = [d for d in rt_catalog.db[mongo.USER_HISTORY].find() if d["_id"] != user]
            loaded = rating_history.history_doc(user, {p[1]: (3.0, 1.3e9), p[2]: (5.0, 1.3e9)}, {})
            _reload(mongo.USER_HISTORY, kept + [loaded], db=rt_catalog.db)
            mongo.forget_pointers()
        return out

    monkeypatch.setattr(mongo, "find_by_ids_many", read_then_reload)
    batch = [RatingEvent(user_id=user, product_id=p[0], rating=4, ts=time.time() - 20)]
    try:
        with pytest.raises(HistoriesReloaded):  # written by name, the batch replaced the new history
            handle_batch(batch, model)
        assert reloaded and rating_history.user_ratings(user, db=db) == {p[1]: 3.0, p[2]: 5.0}  # nothing written
        reloaded.clear()  # and once more, under the worker's fallback: it reads the new generation again
        assert [handle(e.to_bytes(), model).status for e in batch] == ["processed"]
        assert reloaded and rating_history.user_ratings(user, db=db) == {p[0]: 4.0, p[1]: 3.0, p[2]: 5.0}
    finally:
        mongo.drop_retired(wait=True, db=db)


def test_a_reload_of_the_histories_between_one_event_s_read_and_write_keeps_what_it_loaded(
        rt_catalog, worker_env, monkeypatch):
    """A single history change (``rating_history.change_history``: a reload's replay of live
    ratings, a batch's ``_after_reload``) read the history and replaced it by the collection's name: a reload that moved the pointer in between
    lost what it loaded for that user. The change is made again on the new generation."""
    db, p = rt_catalog.db, rt_catalog.products
    user = "rt-rh-1"
    forget_users(db, [user])
    mongo.bulk_upsert(mongo.USER_HISTORY, [rating_history.history_doc(user, {p[1]: (3.0, 1.3e9)}, {})], db=db)
    is_deleted, reloaded = rating_history.is_deleted_user, []

    def reload_after_the_read(user_id, db=None):  # called right after the history's read
        if user_id == user and not reloaded:
            reloaded.append(True)
            kept = [d for d in rt_catalog.db[mongo.USER_HISTORY].find() if d["_id"] != user]
            loaded = rating_history.history_doc(user, {p[1]: (3.0, 1.3e9), p[2]: (5.0, 1.3e9)}, {})
            _reload(mongo.USER_HISTORY, kept + [loaded], db=rt_catalog.db)
            mongo.forget_pointers()
        return is_deleted(user_id, db=db)

    monkeypatch.setattr(rating_history, "is_deleted_user", reload_after_the_read)
    try:
        rating_history.add_to_history(user, p[0], 4.0, time.time() - 20, db=db)
        assert reloaded
        assert rating_history.user_ratings(user, db=db) == {p[0]: 4.0, p[1]: 3.0, p[2]: 5.0}
    finally:
        mongo.drop_retired(wait=True, db=db)


def test_the_one_message_path_claims_an_event_once_and_still_skips_a_cancelled_one(rt_catalog, worker_env, monkeypatch):
    """The worker's fallback (``kafka_workers.retry``, one message at a time) claimed every event
    twice: once before handling it and again in its batch of one, which then found "its" earlier
    claim, took the event for a redelivery and read its rating back (2-3 round trips more per
    message). One claim each; a cancelled event is still skipped and not stored."""
    import threading
    from types import SimpleNamespace

    from kafka_workers import retry

    db, p = rt_catalog.db, rt_catalog.products
    holder = SimpleNamespace(model=artifacts.load_model(publish_model(rt_catalog.in_model, seed=53)))
    user = "rt-once-0"
    forget_users(db, [user])
    claims, seen_before = [], []
    claim_batch = cancellation.claim_batch

    def spy_claim_batch(event_ids, db=None, locks=(), token=""):
        event_ids = list(event_ids)
        claims.extend(event_ids)
        answer = claim_batch(event_ids, db=db, locks=locks, token=token)
        seen_before.extend(answer[1])
        return answer

    monkeypatch.setattr(cancellation, "claim_batch", spy_claim_batch)

    def one(value: bytes, offset: int) -> str:
        record = SimpleNamespace(topic="ratings", partition=0, offset=offset, key=user.encode(), value=value)
        return retry.process_with_retry(record, holder, threading.Event()).status

    fresh = RatingEvent(user_id=user, product_id=p[0], rating=5, ts=time.time())
    assert one(fresh.to_bytes(), 1) == "processed"
    assert claims == [fresh.event_id] and seen_before == []
    assert db[mongo.RATINGS].find_one({"_id": fresh.event_id})["state"] == "processed"

    claims.clear()
    assert one(fresh.to_bytes(), 2) == "duplicate"  # a redelivery: found claimed, read back
    assert claims == [fresh.event_id] and seen_before == [fresh.event_id]

    gone = RatingEvent(user_id=user, product_id=p[1], rating=4, ts=time.time())
    assert cancellation.cancel(gone.event_id, db=db)
    assert one(gone.to_bytes(), 3) == "cancelled"
    assert db[mongo.RATINGS].find_one({"_id": gone.event_id}) is None
    assert p[1] not in rating_history.user_ratings(user, db=db)
