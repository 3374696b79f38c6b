"""Trending kept up to date by what changed (core/trending.py), on real Redis and FerretDB.

Events go through the worker's real path (``kafka_workers.batch.handle_batch``: ``ratings``, the
histories, the marks for the refresh), and each refresh, at an explicit ``now``, must write the
lists the rule over the window's rating events ranks from scratch (``core.popular.trending_scores``,
what every refresh computed before): after rates, ratings given again, removals, "not interested",
one account rating many products, an account deleted, a vote dated in the future and votes ageing
out of the window. A refresh after new events reads the histories of their users and nothing
else; a rebuild (Redis flushed, or a mark lost while Redis was down) gives the same lists.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable

import pytest
import redis
from pymongo import MongoClient, monitoring

from core import mongo, popular, redis_client, stored_lists, trending, trending_store, trending_votes
from core.events import DELETE_ACCOUNT, NOT_INTERESTED, UNRATE, RatingEvent
from realtime_support import rt_catalog, worker_env  # noqa: F401  (fixtures)
from trending_support import apply_batch, env, list_names  # noqa: F401  (env: a fixture)

pytestmark = pytest.mark.integration
DAY = 86400.0
LIMIT = 10


def _from_scratch(db, now: float, without: frozenset[str] = frozenset()) -> dict[str, list[dict]]:
    """The rule before the change: every rating event of the window in ``ratings`` (but those of
    the users ``without``), ranked again."""
    events = [e for e in db[mongo.RATINGS].find({"ts": {"$gte": now - trending_votes.WINDOW_S}})
              if e.get("action", "rate") in ("rate", "unrate") and e.get("user_id") not in without]
    return popular.ranked(popular.trending_scores(events, now), list_names(db), LIMIT, db)


def _written(db) -> dict[str, list[dict]]:
    return {name: stored_lists.get_popular(name, "trending", db=db) for name in list_names(db)}


def _same(got: dict[str, list[dict]], want: dict[str, list[dict]]) -> bool:
    """Same products in the same order, scores equal to their rounding (both are rounded to 4 places)."""
    assert {n: [i["product_id"] for i in items] for n, items in got.items()} == \
        {n: [i["product_id"] for i in items] for n, items in want.items()}
    return all(math.isclose(a["score"], b["score"], abs_tol=1.01e-4)
               for n in want for a, b in zip(got[n], want[n]))


def _refresh_and_check(db, now: float, through=None) -> dict[str, list[dict]]:
    """Refresh at ``now`` (``through`` another handle on the database: one whose reads are counted)
    and check the lists against the from-scratch ranking."""
    assert popular.refresh_trending(LIMIT, db=db if through is None else through, now=now) == len(list_names(db))
    written = _written(db)
    assert _same(written, _from_scratch(db, now))
    return written


def _t0(db) -> float:
    return float(trending_store.client().hget(trending_store.key(db.name, "meta"), "t0"))


class _Reads(monitoring.CommandListener):
    """The ``find`` commands a client sends: (collection, filter)."""

    def __init__(self) -> None:
        self.finds: list[tuple[str, dict]] = []

    def started(self, event) -> None:
        if event.command_name == "find":
            self.finds.append((event.command["find"], dict(event.command.get("filter") or {})))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass

    def ids_read(self, collection: str) -> set[str]:
        return {i for c, f in self.finds if c == collection for i in f.get("_id", {}).get("$in", [])}


def _watched(db) -> tuple[mongo.ReloadableDatabase, _Reads, MongoClient]:
    from core.settings import get_settings

    reads = _Reads()
    client = MongoClient(get_settings().mongo_uri, event_listeners=[reads])
    return mongo.ReloadableDatabase(client, db.name), reads, client


def test_incremental_lists_equal_the_from_scratch_ranking_through_changes_and_ageing(env):
    db, p = env.db, env.products
    t = time.time() - 6 * DAY
    apply_batch(RatingEvent(user_id="tr-1", product_id=p[0], rating=5, ts=t),
           RatingEvent(user_id="tr-1", product_id=p[1], rating=4, ts=t + 10),
           RatingEvent(user_id="tr-2", product_id=p[0], rating=3, ts=t + 20),
           RatingEvent(user_id="tr-3", product_id=p[3], rating=5, ts=t + 30),
           *[RatingEvent(user_id="tr-flood", product_id=p[4 + i], rating=5, ts=t + 40 + i) for i in range(20)])
    _refresh_and_check(db, t + DAY)  # the first refresh builds the state (from the window's events)
    t0 = _t0(db)

    apply_batch(RatingEvent(user_id="tr-1", product_id=p[0], rating=2, ts=t + DAY + 1),  # rated again
           RatingEvent(user_id="tr-2", product_id=p[0], rating=0, ts=t + DAY + 2, action=UNRATE),
           RatingEvent(user_id="tr-3", product_id=p[5], rating=0, ts=t + DAY + 3, action=NOT_INTERESTED),
           RatingEvent(user_id="tr-4", product_id=p[2], rating=4, ts=t + DAY + 4),
           RatingEvent(user_id="tr-4", product_id=p[4], rating=3, ts=t + DAY + 5))
    _refresh_and_check(db, t + 1.5 * DAY)
    assert not any(i["product_id"] == p[0] and i["score"] > 0.5 for i in _written(db)[mongo.ALL])

    apply_batch(RatingEvent(user_id="tr-3", product_id="", rating=0, ts=t + 2 * DAY, action=DELETE_ACCOUNT),
           RatingEvent(user_id="tr-5", product_id=p[6], rating=5, ts=t + 2 * DAY + 3600))  # an hour ahead
    lists = _refresh_and_check(db, t + 2 * DAY)
    assert p[3] not in {i["product_id"] for i in lists[mongo.ALL]}  # the deleted account's vote is gone
    _refresh_and_check(db, t + 2 * DAY + 7200)  # the vote from the future counts as its time now

    # votes leave the window: tr-1's p[1] and five of the flood's twenty (their weights are split again)
    _refresh_and_check(db, t + 7 * DAY + 45)
    _refresh_and_check(db, t + 8 * DAY)  # only the second day's votes and after
    assert _t0(db) == t0, "every refresh above updated the state it built, none rebuilt it"
    _refresh_and_check(db, t + 8 * DAY + 2)  # T0 over a week old: rebuilt around a new one
    assert _t0(db) == t + 8 * DAY + 2
    assert [i["product_id"] for i in _refresh_and_check(db, t + 9 * DAY + 3599)[mongo.ALL]] == [p[6]]
    # no rating made or taken back within the window any more: the lists are left as they are
    assert popular.refresh_trending(LIMIT, db=db, now=t + 9 * DAY + 3601) == 0
    assert _from_scratch(db, t + 9 * DAY + 3601)[mongo.ALL] == []


def _stored_row(db, user: str) -> list:
    import json

    return json.loads(trending_store.client().hget(trending_store.key(db.name, "users"), user) or "[]")


def _score(db, product: str) -> float | None:
    return trending_store.client().zscore(trending_store.list_key(db.name, mongo.ALL), product)


def test_a_heavy_rater_counts_its_most_recent_votes_through_new_votes_removals_and_ageing(env):
    """An account with more votes in the window than ``MAX_VOTES_PER_USER`` counts its most recent
    ones, in the state (which then holds that many rows for it: a refresh after its next vote
    recomputes that many terms, not all it made) as in the from-scratch ranking, through a new
    vote, a removal (a vote beyond the cap comes back), ageing (none beyond the cap comes back) and
    a rebuild. Ten of its votes share one ts at the cut: the histories' tie rule decides."""
    db, p = env.db, env.products
    cap, t = trending_votes.MAX_VOTES_PER_USER, time.time() - 3 * DAY
    n = cap + 50
    at = [t + 60 * (45 if 45 <= i < 55 else i) for i in range(n)]  # p[45..54] tied at the cut
    apply_batch(*[RatingEvent(user_id="tr-bot", product_id=p[i], rating=1 + i % 5, ts=at[i]) for i in range(n)],
           RatingEvent(user_id="tr-h1", product_id=p[2], rating=4, ts=t + 30),
           RatingEvent(user_id="tr-h2", product_id=p[120], rating=5, ts=t + 90))
    _refresh_and_check(db, t + DAY)
    t0 = _t0(db)
    assert len(_stored_row(db, "tr-bot")) == cap
    assert _score(db, p[0]) is None and _score(db, p[n - 1]) is not None  # beyond the cap / the newest
    kept = {row[0] for row in _stored_row(db, "tr-bot")}
    assert len(kept & set(p[45:55])) == 5, "half of the tied votes are within the cap"

    apply_batch(RatingEvent(user_id="tr-bot", product_id=p[n], rating=5, ts=t + DAY + 10))
    _refresh_and_check(db, t + DAY + 60)
    assert len(_stored_row(db, "tr-bot")) == cap and p[n] in {row[0] for row in _stored_row(db, "tr-bot")}

    apply_batch(RatingEvent(user_id="tr-bot", product_id=p[n - 1], rating=0, ts=t + DAY + 20, action=UNRATE))
    _refresh_and_check(db, t + DAY + 120)  # the newest beyond the cap counts again
    assert len(_stored_row(db, "tr-bot")) == cap

    for later in (t + 7 * DAY + 60 * 50 + 1, t + 7 * DAY + 60 * 120 + 1):  # its oldest kept votes age out
        _refresh_and_check(db, later)
        assert _stored_row(db, "tr-bot") and _score(db, p[0]) is None
    assert _t0(db) == t0, "updated, never rebuilt"
    trending.drop_state(db.name)
    _refresh_and_check(db, t + 7 * DAY + 60 * 120 + 1)  # a rebuild from the events: the same lists


def test_a_refresh_reads_only_the_histories_of_the_users_that_changed(env):
    db, p = env.db, env.products
    t = time.time() - 2 * DAY
    apply_batch(*[RatingEvent(user_id=f"tr-r{u}", product_id=p[(u * 7 + k) % 50], rating=1 + (u + k) % 5,
                         ts=t + u * 60 + k) for u in range(40) for k in range(3)])
    before = _refresh_and_check(db, t + DAY + 600)
    t0 = _t0(db)

    changed = ["tr-r3", "tr-r17", "tr-new-1", "tr-new-2"]
    apply_batch(*[RatingEvent(user_id=u, product_id=p[60 + k + i], rating=5, ts=t + DAY + 10 * i + k)
             for i, u in enumerate(changed) for k in range(3)])
    watched, reads, client = _watched(db)
    try:
        lists = _refresh_and_check(db, t + DAY + 600, through=watched)
    finally:
        client.close()
    assert reads.ids_read(mongo.USER_HISTORY) == set(changed)
    assert not [f for c, f in reads.finds if c == mongo.RATINGS], "no scan of the rating events"
    assert _t0(db) == t0
    assert lists != before, "the new users' votes changed the lists"


def test_a_batch_review_dated_within_the_week_is_not_a_vote(env):
    """Trending is the shoppers' live ratings: a batch review in a history, dated within the window
    (the load lists it there, core.rating_history.BATCH), is not a vote when a refresh reads that
    history after the shopper's next live rating, nor after the worker rewrote the history again,
    as it is not in the window's events a rebuild folds. Before, the refresh counted it."""
    db, p = env.db, env.products
    t = time.time() - 2 * DAY
    loaded = {"_id": "tr-b1", "ratings": [{"p": p[10], "r": 5.0, "t": t}, {"p": p[11], "r": 4.0, "t": t + 1},
                                          {"p": p[12], "r": 5.0, "t": t - 30 * DAY}],
              "removed": [], "batch": [p[10], p[11]]}  # as spark_jobs.mongo_load.user_history_docs writes it
    db[mongo.USER_HISTORY].insert_one(loaded)
    apply_batch(RatingEvent(user_id="tr-b2", product_id=p[0], rating=5, ts=t + 10))
    _refresh_and_check(db, t + DAY)  # built from the events: no batch review
    apply_batch(RatingEvent(user_id="tr-b1", product_id=p[1], rating=3, ts=t + DAY + 1))
    lists = _refresh_and_check(db, t + DAY + 60)  # tr-b1's history read: its live rating alone votes
    assert {i["product_id"] for i in lists[mongo.ALL]} == {p[0], p[1]}
    # a live rating of a listed product replaces the batch review: it votes, the other one still not
    apply_batch(RatingEvent(user_id="tr-b1", product_id=p[11], rating=2, ts=t + DAY + 2))
    assert db[mongo.USER_HISTORY].find_one({"_id": "tr-b1"})["batch"] == [p[10]]
    lists = _refresh_and_check(db, t + DAY + 120)
    assert {i["product_id"] for i in lists[mongo.ALL]} == {p[0], p[1], p[11]}


def test_a_live_rating_tying_a_listed_batch_review_is_a_vote(env):
    """A live rating of the same product, rating and ts as a listed batch review: the reload's merge
    lets the live rating win (not listed) and the window's events hold it as a vote, so the history
    writers (a worker's batch, ``change_history``) take it off the list too. Before, the history changed
    nothing and kept it listed: a refresh left out the vote a rebuild counted."""
    from core import rating_history

    db, p = env.db, env.products
    t = time.time() - 2 * DAY
    for user, pid in (("tr-tie1", p[13]), ("tr-tie2", p[14])):
        db[mongo.USER_HISTORY].insert_one(rating_history.history_doc(user, {pid: (4.0, t + 5)}, {}, batch=[pid]))
    apply_batch(RatingEvent(user_id="tr-tie1", product_id=p[13], rating=4, ts=t + 5))
    db[mongo.RATINGS].insert_one(rating_history.rating_doc(  # stored, then applied by change_history
        {"event_id": "tr-tie2-e", "user_id": "tr-tie2", "product_id": p[14], "rating": 4, "ts": t + 5}))
    rating_history.add_to_history("tr-tie2", p[14], 4.0, t + 5, db=db)
    assert [rating_history.BATCH in db[mongo.USER_HISTORY].find_one({"_id": u}) for u in ("tr-tie1", "tr-tie2")] \
        == [False, False]
    lists = _refresh_and_check(db, t + DAY)
    assert {p[13], p[14]} <= {i["product_id"] for i in lists[mongo.ALL]}


def _commands_during(match: str, run: Callable[[], object]) -> list[str]:
    """The commands Redis ran, for any client, whose text holds ``match`` while ``run()`` ran (MONITOR
    on a connection of its own; ``run``'s exception, if any, is raised after the monitor stops)."""
    from core.settings import get_settings

    seen: list[str] = []
    ready, done = threading.Event(), f"{match}:monitor-done"
    mon = redis.Redis.from_url(get_settings().redis_url)

    def watch() -> None:
        with mon.monitor() as m:
            ready.set()
            for c in m.listen():
                if done in c["command"]:
                    return
                if match in c["command"]:
                    seen.append(c["command"])

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    assert ready.wait(10)
    try:
        run()
    finally:
        trending_store.client().exists(done)
        th.join(30)
        mon.close()
    return seen


def test_a_large_refresh_commits_in_parts_and_one_stopped_between_them_leaves_its_users_to_the_next(env, monkeypatch):
    """A refresh writes ``CHUNK`` users per MULTI, so a large one (a backlog of marks) does not keep
    Redis from everyone else for its whole length; each part is a whole change of its users, so a
    refresh stopped after a part leaves a state the next one (which computes every marked user
    again from what is stored) brings to the same lists as the rule from scratch."""
    db, p = env.db, env.products
    t = time.time() - DAY
    apply_batch(*[RatingEvent(user_id=f"tr-c{u}", product_id=p[u % 7], rating=1 + u % 5, ts=t + u) for u in range(6)])
    _refresh_and_check(db, t + 60)
    monkeypatch.setattr(trending_votes, "CHUNK", 2)
    apply_batch(*[RatingEvent(user_id=f"tr-c{u}", product_id=p[10 + u % 3], rating=5, ts=t + 100 + u)
                  for u in range(5)])
    users_key = trending_store.key(db.name, "users")
    writes = _commands_during(users_key, lambda: _refresh_and_check(db, t + 200))
    assert len([c for c in writes if c.startswith("HSET ")]) == 3, writes  # users 2 + 2 + 1

    apply_batch(*[RatingEvent(user_id=f"tr-c{u}", product_id=p[20 + u % 4], rating=2, ts=t + 300 + u)
                  for u in range(5)],
                RatingEvent(user_id="tr-c1", product_id=p[10], rating=0, ts=t + 310, action=UNRATE))
    real, parts = trending_store.write_update, []

    def stops_after_one_part(*args, **kwargs):
        real(*args, **kwargs)
        parts.append(1)
        raise trending.LockLost("stopped after its first part")

    monkeypatch.setattr(trending_store, "write_update", stops_after_one_part)
    with pytest.raises(trending.LockLost):
        popular.refresh_trending(LIMIT, db=db, now=t + 400)
    monkeypatch.setattr(trending_store, "write_update", real)
    assert parts == [1] and trending_store.client().scard(trending_store.key(db.name, "taking")) == 5
    _refresh_and_check(db, t + 400)
    _refresh_and_check(db, t + 500)


def test_redis_flushed_or_a_mark_lost_rebuilds_the_same_lists(env, monkeypatch):
    from core import list_state

    db, p = env.db, env.products
    t = time.time() - 3 * DAY
    apply_batch(*[RatingEvent(user_id=f"tr-f{u}", product_id=p[(u * 5 + k) % 40], rating=1 + (u * k) % 5,
                         ts=t + u * 100 + k) for u in range(25) for k in range(4)])
    apply_batch(RatingEvent(user_id="tr-f3", product_id=p[1], rating=0, ts=t + DAY, action=UNRATE))
    before = _refresh_and_check(db, t + 2 * DAY)

    trending.drop_state(db.name)  # Redis flushed (or its keys expired)
    watched, reads, client = _watched(db)
    try:
        assert _same(_refresh_and_check(db, t + 2 * DAY, through=watched), before)
    finally:
        client.close()
    assert [f for c, f in reads.finds if c == mongo.RATINGS], "the rebuild found its users in the window's events"
    assert _t0(db) == t + 2 * DAY

    # Redis down while a worker applies a batch: the history is written, the mark is not
    with monkeypatch.context() as m:
        m.setattr(list_state, "client", lambda: redis.Redis(port=1, socket_connect_timeout=0.2))
        apply_batch(RatingEvent(user_id="tr-f-down", product_id=p[90], rating=5, ts=t + 2 * DAY + 5))
    assert trending_store.client().scard(trending_store.key(db.name, "dirty")) == 0
    lists = _refresh_and_check(db, t + 2 * DAY + 60)  # the note in MongoDB made it rebuild
    assert lists[mongo.ALL][0]["product_id"] == p[90]
    assert _t0(db) == t + 2 * DAY + 60
    monkeypatch.setattr(trending, "NOTE_KEPT_S", 0.0)  # (kept a minute: its events' insert may lag)
    _refresh_and_check(db, t + 2 * DAY + 120)
    assert db[mongo.POPULAR].find_one({"_id": trending.MISSED}) is None
    _refresh_and_check(db, t + 2 * DAY + 180)
    assert _t0(db) == t + 2 * DAY + 120, "rebuilt while the note was there, then updated"


def _rated_after_the_snapshot(p: list[str], t: float) -> None:
    """Three shoppers rate one product: with the one vote of before, it heads the lists."""
    apply_batch(*[RatingEvent(user_id=f"tr-snap-{u}", product_id=p[7], rating=5, ts=t + 100 + k)
                  for k, u in enumerate("bcd")])


def test_a_state_restored_from_an_older_copy_is_rebuilt(env):
    """The state goes back to an older copy (as Redis reloading a snapshot: DUMP/RESTORE of its
    keys here, the server keeps running) after a refresh committed more: complete, so it would be
    updated, while the marks of what came after the copy are gone. The commit stamp in MongoDB is
    newer than the copy's: the refresh rebuilds."""
    db, p = env.db, env.products
    t = time.time() - DAY
    apply_batch(RatingEvent(user_id="tr-snap-a", product_id=p[1], rating=5, ts=t))
    _refresh_and_check(db, t + 60)
    r = trending_store.client()
    pattern = trending_store.key(db.name, "") + "*"
    snapshot = {k: r.dump(k) for k in r.scan_iter(match=pattern)}
    _rated_after_the_snapshot(p, t)
    assert _refresh_and_check(db, t + 120)[mongo.ALL][0]["product_id"] == p[7]
    r.delete(*r.scan_iter(match=pattern))
    for k, blob in snapshot.items():
        r.restore(k, 0, blob)
    assert _refresh_and_check(db, t + 180)[mongo.ALL][0]["product_id"] == p[7]
    assert _t0(db) == t + 180, "rebuilt"
    assert _refresh_and_check(db, t + 240) and _t0(db) == t + 180, "then updated again"


def test_marks_lost_by_a_redis_restart_rebuild_the_state(env, tmp_path):
    """A private Redis (what bin/services runs: snapshots, no append-only file) is killed after its
    last snapshot and started again on it: the marks of the ratings made since, not yet refreshed,
    are gone, and no commit came after the snapshot to tell. The state was written by another Redis
    process than the one serving now (its run_id): the refresh rebuilds."""
    import subprocess

    from core import list_state
    from realtime_support import free_port, reset_core_caches, wait_until

    db, p = env.db, env.products
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(tmp_path),
                                 "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        redis_client._client.cache_clear()  # no pooled connection to the server before
        wait_until(lambda: _pings(url), 30, "the private Redis to answer")
        return proc

    t = time.time() - DAY
    mp = pytest.MonkeyPatch()
    mp.setenv("REDIS_URL", url)
    reset_core_caches()
    proc = start()
    try:
        apply_batch(RatingEvent(user_id="tr-snap-a", product_id=p[1], rating=5, ts=t))
        _refresh_and_check(db, t + 60)
        trending_store.client().save()  # the last snapshot
        _rated_after_the_snapshot(p, t)  # marked, not refreshed yet
        proc.kill()
        proc.wait()
        proc = start()
        assert trending_store.client().scard(trending_store.key(db.name, "dirty")) == 0, "the marks are gone"
        assert _refresh_and_check(db, t + 120)[mongo.ALL][0]["product_id"] == p[7]
    finally:
        proc.kill()
        proc.wait()
        mp.undo()  # the shared Redis again, for the fixture's cleanup and the next tests
        reset_core_caches()
        redis_client._client.cache_clear()


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def test_a_refresh_that_finds_the_state_held_leaves_it_to_the_holder(env):
    db, p = env.db, env.products
    t = time.time() - DAY
    apply_batch(RatingEvent(user_id="tr-l1", product_id=p[0], rating=5, ts=t))
    _refresh_and_check(db, t + 60)
    apply_batch(RatingEvent(user_id="tr-l2", product_id=p[1], rating=5, ts=t + 120))
    r, lock = trending_store.client(), trending_store.key(db.name, "lock")
    assert r.set(lock, "another refresh", nx=True, ex=60)
    try:
        assert popular.refresh_trending(LIMIT, db=db, now=t + 180) == 0  # Celery's: does not wait
        assert r.smembers(trending_store.key(db.name, "dirty")) == {b"tr-l2"}  # left for the next refresh
    finally:
        r.delete(lock)
    lists = _refresh_and_check(db, t + 180)
    assert [i["product_id"] for i in lists[mongo.ALL]] == [p[1], p[0]]


def test_the_publish_job_ranks_the_window_in_memory_when_redis_is_down(env, monkeypatch):
    db, p = env.db, env.products
    t = time.time() - DAY
    apply_batch(RatingEvent(user_id="tr-d1", product_id=p[0], rating=5, ts=t),
           RatingEvent(user_id="tr-d2", product_id=p[1], rating=4, ts=t + 60),
           RatingEvent(user_id="tr-d2", product_id=p[2], rating=2, ts=t + 120))
    with monkeypatch.context() as m:
        m.setattr(trending_store, "client", lambda: redis.Redis(port=1, socket_connect_timeout=0.2))
        with pytest.raises(redis.RedisError):  # Celery's refresh fails (and runs again a minute later)
            popular.refresh_trending(LIMIT, db=db, now=t + 600)
        assert popular.refresh_trending(LIMIT, db=db, quiet_fallback=True, now=t + 600) == len(list_names(db))
    assert _same(_written(db), _from_scratch(db, t + 600))
    assert [i["product_id"] for i in _written(db)[mongo.ALL]] == [p[0], p[1], p[2]]


def test_a_change_already_in_the_history_is_still_marked_when_applied_again(env):
    """A worker batch that wrote its histories and then failed (its lists' write: MongoDB went away)
    is retried one event at a time, and the retry finds the change already there. It must still
    mark the user: the stored votes are only ever corrected by a mark or a rebuild, so without it
    the new vote would never count."""
    from core import rating_history

    db, p = env.db, env.products
    t = time.time() - DAY
    apply_batch(RatingEvent(user_id="tr-m0", product_id=p[3], rating=3, ts=t))
    _refresh_and_check(db, t + 60)
    # the failed batch's write: the history holds the rating, nobody marked it
    rating_history.change_history("tr-m1", p[0], 5.0, t + 120, db=db)
    trending_store.client().delete(trending_store.key(db.name, "dirty"))
    apply_batch(RatingEvent(user_id="tr-m1", product_id=p[0], rating=5, ts=t + 120))  # the retry: a batch of one
    lists = _refresh_and_check(db, t + 180)
    assert p[0] in [i["product_id"] for i in lists[mongo.ALL]]


def test_a_rebuild_that_scanned_before_a_batch_stored_its_ratings_is_corrected_by_the_next_refresh(env):
    """A worker batch writes its histories, then (its tail, up to TAIL_MAX_S later) its ratings. A
    rebuild (the publish job) scanning ``ratings`` in between misses the vote; the mark the tail
    leaves after its insert makes the next refresh read the history."""
    from kafka_workers.batch import Tail, finish, handle_batch

    db, p = env.db, env.products
    t = time.time() - DAY
    apply_batch(RatingEvent(user_id="tr-r0", product_id=p[3], rating=3, ts=t))
    _refresh_and_check(db, t + 60)
    tail = Tail()
    handle_batch([RatingEvent(user_id="tr-r1", product_id=p[0], rating=5, ts=t + 120)], None, tail)
    assert db[mongo.RATINGS].find_one({"user_id": "tr-r1"}) is None, "the tail holds the rating"
    assert trending.update(db, t + 150, rebuild=True) is True  # scans ratings: tr-r1 is not there
    assert p[0] not in [i["product_id"] for i in trending.top(db, [mongo.ALL], LIMIT, t + 150)[mongo.ALL]]
    finish(tail)
    lists = _refresh_and_check(db, t + 180)
    assert p[0] in [i["product_id"] for i in lists[mongo.ALL]]


def test_the_publish_job_does_not_take_a_held_state_for_a_quiet_site(env, monkeypatch):
    """The publish job waits for the state's lock; if another refresh keeps it past the wait, it
    ranks the window's events in memory (and asks for a rebuild), not the batch reviews' fallback,
    which would replace the live lists with the data's old weeks."""
    db, p = env.db, env.products
    t = time.time() - DAY
    apply_batch(RatingEvent(user_id="tr-h1", product_id=p[0], rating=5, ts=t),
           RatingEvent(user_id="tr-h2", product_id=p[1], rating=4, ts=t + 60))
    monkeypatch.setattr(trending, "WAIT_S", 1)
    r, lock = trending_store.client(), trending_store.key(db.name, "lock")
    assert r.set(lock, "another refresh", nx=True, ex=60)
    try:
        assert popular.refresh_trending(LIMIT, db=db, quiet_fallback=True, now=t + 600) == len(list_names(db))
    finally:
        r.delete(lock)
    assert _same(_written(db), _from_scratch(db, t + 600))
    assert db[mongo.POPULAR].find_one({"_id": trending.MISSED}) is not None, "the state missed this rebuild"



def _race(db, now: float, wait: bool, during: Callable[[], None]) -> list:
    """Two refreshes at ``now`` (``wait``: the publish job's) released together by a barrier. The
    one that gets the state stops where it reads the histories (its marks taken) until the other
    has found the state held (or has got there too: no lock), while ``during`` runs (a worker
    batch marking more users); then both finish. Their results, or what they raised."""
    barrier, cond = threading.Barrier(2), threading.Condition()
    seen = {"paused": 0, "refused": 0, "released": False}
    refreshers: set[int] = set()
    real_find, real_acquire = mongo.find_by_ids, redis.lock.Lock.do_acquire

    def find_by_ids(collection, ids, *args, **kwargs):
        if collection == mongo.USER_HISTORY and threading.get_ident() in refreshers:
            with cond:
                seen["paused"] += 1
                cond.notify_all()
                cond.wait_for(lambda: seen["released"], timeout=120)
        return real_find(collection, ids, *args, **kwargs)

    def do_acquire(self, token):
        got = real_acquire(self, token)
        if not got and threading.get_ident() in refreshers:
            with cond:
                seen["refused"] += 1
                cond.notify_all()
        return got

    results: dict[int, object] = {}

    def refresh(i: int) -> None:
        refreshers.add(threading.get_ident())
        barrier.wait()
        try:
            results[i] = trending.update(db, now, wait=wait)
        except Exception as exc:  # noqa: BLE001  (asserted on below)
            results[i] = exc

    threads = [threading.Thread(target=refresh, args=(i,), daemon=True) for i in range(2)]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(mongo, "find_by_ids", find_by_ids)
        m.setattr(redis.lock.Lock, "do_acquire", do_acquire)
        for th in threads:
            th.start()
        with cond:  # a bound on the wait for safety, not a timing: the condition is what is checked
            overlapped = cond.wait_for(lambda: seen["paused"] and (seen["refused"] or seen["paused"] == 2),
                                       timeout=120)
        during()
        with cond:
            seen["released"] = True
            cond.notify_all()
        for th in threads:
            th.join(timeout=300)
    assert overlapped and not any(th.is_alive() for th in threads), seen
    return [results[0], results[1]]


def _racing_setup(env) -> tuple[float, set[str], Callable[[], None]]:
    """A built state, twenty users marked since (pending for the next refresh), and the batch of
    five more users that comes while the racing refreshes run: what it applies, and when."""
    db, p = env.db, env.products
    t = time.time() - DAY
    apply_batch(*[RatingEvent(user_id=f"tr-x{u}", product_id=p[(u * 3 + k) % 30], rating=1 + (u + k) % 5,
                         ts=t + u + k / 10) for u in range(10) for k in range(3)])
    _refresh_and_check(db, t + 60)
    apply_batch(*[RatingEvent(user_id=f"tr-x{u}", product_id=p[40 + (u + k) % 20], rating=5 - (u * k) % 5,
                         ts=t + 100 + u + k / 10) for u in range(5, 25) for k in range(3)])
    assert trending_store.client().scard(trending_store.key(db.name, "dirty")) == 20
    late = {f"tr-late{u}" for u in range(5)}

    def during() -> None:
        apply_batch(*[RatingEvent(user_id=u, product_id=p[70], rating=5, ts=t + 200 + i) for i, u in enumerate(sorted(late))])

    return t + 300, late, during


def test_two_refreshes_started_together_one_takes_the_marks_the_other_leaves_it(env):
    """Celery's refresh on two workers at once (a beat sent twice, a slow one overlapping the next):
    exactly one reads the marked users and updates the state, the other returns None at once; the
    users marked meanwhile stay marked for the next refresh, which then gives the from-scratch lists."""
    db = env.db
    now, late, during = _racing_setup(env)
    results = _race(db, now, False, during)
    assert sorted(results, key=repr) == [None, True], results
    r = trending_store.client()
    assert {u.decode() for u in r.smembers(trending_store.key(db.name, "dirty"))} == late
    assert not r.exists(trending_store.key(db.name, "taking"))
    assert _same(trending.top(db, list_names(db), LIMIT, now), _from_scratch(db, now, without=frozenset(late)))
    assert _from_scratch(db, now, without=frozenset(late)) != _from_scratch(db, now), "the late batch matters"
    _refresh_and_check(db, now)
    assert not r.exists(trending_store.key(db.name, "dirty"))


def test_a_publish_job_racing_a_refresh_waits_and_applies_its_own_pass(env):
    """Two refreshes that wait for the state (the publish job's) started together: the second waits
    for the first, then takes the users marked meanwhile itself; nothing is left marked and the
    state ranks as from scratch without another refresh."""
    db = env.db
    now, late, during = _racing_setup(env)
    assert _race(db, now, True, during) == [True, True]
    r = trending_store.client()
    assert not r.exists(trending_store.key(db.name, "dirty")) and not r.exists(trending_store.key(db.name, "taking"))
    assert _same(trending.top(db, list_names(db), LIMIT, now), _from_scratch(db, now))
