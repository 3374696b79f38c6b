"""A rebuild (and the weekly rebase) of the trending state (core/trending.py), on real Redis and
FerretDB: written in chunks into staging keys and switched in by one small MULTI, not one MULTI of
the whole state (which kept Redis from answering its other clients, the site's cache, Celery and
the workers' marks, for as long as it ran); readers see the whole old state until the switch; a
scan longer than the lock's time renews the lock instead of ending in LockLost; staging keys left
by a refresh that died are deleted by the next rebuild and expire meanwhile.

``trending_votes.CHUNK`` is set tiny so that a few votes take many chunks (``raising=False``: the
code before had no such constant, and these tests must fail on it for what it did, not for that).
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import pytest
import redis
from pymongo import MongoClient, monitoring

from core import mongo, popular, trending, trending_commit, trending_store, trending_votes
from core.events import UNRATE, RatingEvent
from realtime_support import rt_catalog, worker_env  # noqa: F401  (fixtures)
from trending_support import apply_batch, env, list_names  # noqa: F401  (env: a fixture)

pytestmark = pytest.mark.integration
DAY = 86400.0
LIMIT = 10


def _week(p: list[str], t: float, users: int = 12) -> None:
    """Votes of ``users`` users on products of two of the three categories (product i is in
    category i % 3: Keyboards, 2, gets none)."""
    apply_batch(*[RatingEvent(user_id=f"tb-{u}", product_id=p[3 * ((u * 5 + k) % 30) + (u + k) % 2],
                         rating=1 + (u + k) % 5, ts=t + u * 60 + k) for u in range(users) for k in range(3)])


def _state(db) -> dict:
    """Every live key of the state but ``meta``, whole (scores exact)."""
    r = trending_store.client()
    cats = sorted(c.decode() for c in r.smembers(trending_store.key(db.name, "cats")))
    return {"cats": cats, "voters": r.hgetall(trending_store.key(db.name, "voters")),
            "users": r.hgetall(trending_store.key(db.name, "users")),
            "due": r.zrange(trending_store.key(db.name, "due"), 0, -1, withscores=True),
            **{name: r.zrange(trending_store.list_key(db.name, name), 0, -1, withscores=True)
               for name in [mongo.ALL, *cats]}}


def _from_scratch(db, now: float) -> dict[str, list[dict]]:
    """The rule over the window's rating events, ranked in memory (core.popular)."""
    events = [e for e in db[mongo.RATINGS].find({"ts": {"$gte": now - trending_votes.WINDOW_S}})
              if e.get("action", "rate") in ("rate", "unrate")]
    return popular.ranked(popular.trending_scores(events, now), list_names(db), LIMIT, db)


def _same(got: dict[str, list[dict]], want: dict[str, list[dict]]) -> bool:
    assert {n: [i["product_id"] for i in items] for n, items in got.items()} == \
        {n: [i["product_id"] for i in items] for n, items in want.items()}
    return all(math.isclose(a["score"], b["score"], abs_tol=1.01e-4) for n in want for a, b in zip(got[n], want[n]))


@contextmanager
def _pipelines(after: Callable[[redis.client.Pipeline], None]) -> Iterator[None]:
    """Call ``after(pipeline)`` once each Redis pipeline of this process has run (not for those
    ``after`` itself sends)."""
    real = redis.client.Pipeline.execute
    busy = []

    def execute(pipe, *a, **kw):
        stack = list(pipe.command_stack)
        out = real(pipe, *a, **kw)
        if not busy:
            busy.append(1)
            try:
                pipe.sent = stack
                after(pipe)
            finally:
                busy.clear()
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(redis.client.Pipeline, "execute", execute)
    try:
        yield
    finally:
        mp.undo()


def _staging(db_name: str) -> list[bytes]:
    return list(trending_store.client().scan_iter(match=trending_store.key(db_name, "staging:") + "*"))


def test_a_rebuild_and_a_rebase_in_tiny_chunks_write_the_state_one_transaction_wrote(env, monkeypatch):
    db, p = env.db, env.products
    t = time.time() - 2 * DAY
    _week(p, t)
    now = t + DAY
    assert trending.update(db, now, rebuild=True) is True
    whole = _state(db)
    assert len(whole["users"]) == 12 and len(whole[mongo.ALL]) > 15

    monkeypatch.setattr(trending_votes, "CHUNK", 3, raising=False)
    sent: list[int] = []  # arguments of each pipeline the rebuild sends
    with _pipelines(lambda pipe: sent.append(sum(len(args) for args, _opts in pipe.sent))):
        assert trending.update(db, now, rebuild=True) is True
    assert _state(db) == whole
    assert _same(trending.top(db, list_names(db), LIMIT, now), _from_scratch(db, now))
    # no pipeline (MULTI or not) carried the state: at most a chunk of 3 entries (6 arguments with
    # ZADD's scores) with its key's expiries, or the switch's few commands per key
    assert len(sent) > 10 and max(sent) < 100, sent

    # the weekly rebase: every stored vote around a new T0, written the same way
    meta = trending_store.key(db.name, "meta")
    trending_store.client().hset(meta, "t0", now - trending.REBASE_AFTER_S - 1)
    assert trending.update(db, now) is True
    assert float(trending_store.client().hget(meta, "t0")) == now
    assert _state(db) == whole  # the same votes around the same T0: the same state as the rebuild's
    assert _staging(db.name) == []


def test_a_rebuild_and_a_rebase_stage_each_chunk_of_users_before_computing_the_next(env, monkeypatch):
    """Their memory: a chunk of users' rows and due times is staged, and those users' votes dropped
    from the commit's ``new``, before the next chunk's rows are computed; only the sums per (list,
    product) are held whole. Fails on the code before, which computed every user's rows (and kept
    every user's votes) before its first write."""
    db, p = env.db, env.products
    t = time.time() - 2 * DAY
    _week(p, t)  # 12 voters
    now = t + DAY
    monkeypatch.setattr(trending_votes, "CHUNK", 5, raising=False)
    computed: list[int] = []  # one per user whose terms (and so rows) were computed
    commits: list[dict] = []  # the ``new`` each commit was given
    real_terms, real_commit = trending_votes.terms, trending_commit.commit

    def terms(*args):
        computed.append(1)
        return real_terms(*args)

    def commit(r, db_, now_, meta, old, new, *rest):
        commits.append(new)
        return real_commit(r, db_, now_, meta, old, new, *rest)

    monkeypatch.setattr(trending_votes, "terms", terms)
    monkeypatch.setattr(trending_commit, "commit", commit)
    staged: list[tuple[int, int]] = []  # at each chunk of rows staged: (users computed, users left in new)

    def note_users_chunk(pipe) -> None:
        for args, _opts in pipe.sent:
            if args[0] == "HSET" and str(args[1]).startswith(trending_store.key(db.name, "staging:")) \
                    and str(args[1]).endswith(":users"):
                staged.append((len(computed), len(commits[-1])))

    for rebase in (False, True):
        computed.clear()
        staged.clear()
        if rebase:  # every stored vote again around a new T0, written the same way
            trending_store.client().hset(trending_store.key(db.name, "meta"), "t0", now - trending.REBASE_AFTER_S - 1)
        with _pipelines(note_users_chunk):
            assert trending.update(db, now, rebuild=not rebase) is True
        assert staged == [(5, 7), (10, 2), (12, 0)], (rebase, staged)
        assert len(trending_store.client().hgetall(trending_store.key(db.name, "users"))) == 12
        assert _same(trending.top(db, list_names(db), LIMIT, now), _from_scratch(db, now))


def test_a_reader_between_two_chunks_of_a_rebuild_sees_the_whole_old_state(env, monkeypatch):
    db, p = env.db, env.products
    t = time.time() - 2 * DAY
    _week(p, t)
    apply_batch(RatingEvent(user_id="tb-k", product_id=p[2], rating=5, ts=t + 3600))  # Keyboards' one vote
    now = t + DAY
    assert trending.update(db, now, rebuild=True) is True
    names = list_names(db)
    before = trending.top(db, names, LIMIT, now)
    assert [i["product_id"] for i in before["Keyboards"]] == [p[2]]

    # new voters, and Keyboards' vote taken back: its list must go with the old state
    apply_batch(*[RatingEvent(user_id=f"tb-new{u}", product_id=p[90 + 3 * u], rating=5, ts=t + DAY - 60 + u)
             for u in range(8)],
           RatingEvent(user_id="tb-k", product_id=p[2], rating=0, ts=t + DAY - 30, action=UNRATE))
    monkeypatch.setattr(trending_votes, "CHUNK", 2, raising=False)
    seen = []

    def read_between(pipe) -> None:
        if not pipe.transaction:  # a chunk's pipeline (the switch is a MULTI)
            seen.append(trending.top(db, names, LIMIT, now))

    with _pipelines(read_between):
        assert trending.update(db, now, rebuild=True) is True
    assert len(seen) > 5, "the rebuild wrote in chunks, each followed by a reader"
    assert all(lists == before for lists in seen), "a reader saw part of the new state"
    after = trending.top(db, names, LIMIT, now)
    assert _same(after, _from_scratch(db, now)) and after != before
    assert after["Keyboards"] == []
    r = trending_store.client()
    assert not r.exists(trending_store.list_key(db.name, "Keyboards"))
    assert b"Keyboards" not in r.smembers(trending_store.key(db.name, "cats"))


class _SlowRatings(monitoring.CommandListener):
    """FerretDB slow to read ``ratings``: each reply waits ``per_event_s`` per event it holds, and
    notes how long the trending lock has left."""

    def __init__(self, per_event_s: float, lock_key: str) -> None:
        self.per_event_s, self.lock_key, self.ttls_ms, self.replies = per_event_s, lock_key, [], 0

    def started(self, event) -> None:
        pass

    def succeeded(self, event) -> None:
        if event.command_name not in ("find", "getMore"):
            return
        cursor = (event.reply or {}).get("cursor") or {}
        if not str(cursor.get("ns", "")).endswith(f".{mongo.RATINGS}"):
            return
        self.replies += 1
        time.sleep(self.per_event_s * len(cursor.get("firstBatch", cursor.get("nextBatch", []))))
        self.ttls_ms.append(trending_store.client().pttl(self.lock_key))

    def failed(self, event) -> None:
        pass


def test_a_rebuild_whose_scan_outlasts_the_lock_time_renews_the_lock_and_commits(env, monkeypatch):
    from core.settings import get_settings

    db, p = env.db, env.products
    t = time.time() - 2 * DAY
    _week(p, t, users=8)  # 24 events: 2.4 s of reading against a lock of 1 s
    monkeypatch.setattr(trending_store, "LOCK_S", 1)
    monkeypatch.setattr(trending_votes, "CHUNK", 2, raising=False)
    slow = _SlowRatings(0.1, trending_store.key(db.name, "lock"))
    client = MongoClient(get_settings().mongo_uri, event_listeners=[slow])
    try:
        assert trending.update(mongo.ReloadableDatabase(client, db.name), t + DAY, rebuild=True) is True
    finally:
        client.close()
    assert slow.replies > 3
    # renewed to LOCK_S, never longer: a refresh that dies frees the state within LOCK_S
    assert all(0 < ttl <= 1000 for ttl in slow.ttls_ms), slow.ttls_ms
    assert _same(trending.top(db, list_names(db), LIMIT, t + DAY), _from_scratch(db, t + DAY))


def test_staging_keys_expire_and_a_refresh_that_died_leaves_none_to_the_next_rebuild(env, monkeypatch):
    db, p = env.db, env.products
    r = trending_store.client()
    t = time.time() - 2 * DAY
    _week(p, t)
    assert trending.update(db, t + DAY, rebuild=True) is True
    before = _state(db)
    # what a refresh killed during its writes left (no expiry: the worst case), here and in another database
    dead = trending_store.key(db.name, "staging:dead-refresh:users")
    other = trending_store.key(f"{db.name}-other", "staging:dead-refresh:users")
    r.hset(dead, "tb-0", "[]")
    r.hset(other, "tb-0", "[]")
    try:
        _week(p, t + 600, users=14)  # two more users
        monkeypatch.setattr(trending_votes, "CHUNK", 2, raising=False)

        chunks = []

        def fail_at_third_chunk(pipe) -> None:
            if not pipe.transaction and _staging(db.name):
                chunks.append(1)
                if len(chunks) == 3:
                    raise RuntimeError("the refresh dies")

        with _pipelines(fail_at_third_chunk), pytest.raises(RuntimeError, match="dies"):
            trending.update(db, t + DAY, rebuild=True)
        assert _state(db) == before, "the live state is untouched"
        assert _staging(db.name) == [], "the rebuild that failed deleted its staging keys, and the dead one's"

        r.hset(dead, "tb-0", "[]")
        ttls: list[int] = []

        def note_ttls(pipe) -> None:
            if not pipe.transaction:
                ttls.extend(r.ttl(k) for k in _staging(db.name))

        with _pipelines(note_ttls):
            assert trending.update(db, t + DAY, rebuild=True) is True
        assert ttls and all(0 < ttl <= trending_store.LOCK_S for ttl in ttls), ttls
        assert _staging(db.name) == []
        assert r.exists(other), "another database's keys are its own"
        assert len(_state(db)["users"]) == 14
        assert _same(trending.top(db, list_names(db), LIMIT, t + DAY), _from_scratch(db, t + DAY))
    finally:
        r.delete(dead, other)


class _SlowHistories(monitoring.CommandListener):
    """FerretDB slow to read ``user_history``: each reply waits ``per_doc_s`` per document."""

    def __init__(self, per_doc_s: float) -> None:
        self.per_doc_s, self.replies = per_doc_s, 0

    def started(self, event) -> None:
        pass

    def succeeded(self, event) -> None:
        cursor = (event.reply or {}).get("cursor") or {}
        if event.command_name in ("find", "getMore") and str(cursor.get("ns", "")).endswith(f".{mongo.USER_HISTORY}"):
            self.replies += 1
            time.sleep(self.per_doc_s * len(cursor.get("firstBatch", cursor.get("nextBatch", []))))

    def failed(self, event) -> None:
        pass


def test_a_backlog_of_marks_whose_histories_outlast_the_lock_time_still_commits(env, monkeypatch):
    """Marks piled up (Celery stopped, a slow FerretDB): reading their histories took longer than
    the lock, with no renewal, so every refresh ended in LockLost and kept the marks for the next,
    which had more to read: trending froze for good."""
    from core.settings import get_settings

    db, p = env.db, env.products
    t = time.time() - 2 * DAY
    _week(p, t, users=4)
    assert trending.update(db, t + DAY, rebuild=True) is True
    _week(p, t + 600, users=12)  # 8 more users marked, 12 histories to read
    monkeypatch.setattr(trending_store, "LOCK_S", 1)
    monkeypatch.setattr(trending_votes, "CHUNK", 2, raising=False)
    slow = _SlowHistories(0.15)  # 12 histories: 1.8 s against a lock of 1 s
    client = MongoClient(get_settings().mongo_uri, event_listeners=[slow])
    try:
        assert trending.update(mongo.ReloadableDatabase(client, db.name), t + DAY) is True
    finally:
        client.close()
    assert slow.replies > 1
    assert not trending_store.client().exists(trending_store.key(db.name, "taking")), "the marks were taken"
    assert _same(trending.top(db, list_names(db), LIMIT, t + DAY), _from_scratch(db, t + DAY))


def test_the_publish_job_waits_for_a_refresh_that_keeps_renewing_the_lock(env, monkeypatch):
    """Renewed, a refresh may hold the state longer than LOCK_S; the publish job's wait (once
    LOCK_S) gave up on it, ranked the week in memory and asked for a second rebuild."""
    import threading

    db, p = env.db, env.products
    t = time.time() - 2 * DAY
    _week(p, t, users=4)
    monkeypatch.setattr(trending_store, "LOCK_S", 1)
    holder = trending_store.client().lock(trending_store.key(db.name, "lock"), timeout=1, thread_local=False)
    assert holder.acquire(blocking=False)
    done = threading.Event()

    def renew_then_release() -> None:
        for _ in range(10):  # 3 s, three times LOCK_S
            time.sleep(0.3)
            holder.reacquire()
        done.set()  # before the release: the waiting refresh may run the instant after it
        holder.release()

    thread = threading.Thread(target=renew_then_release)
    thread.start()
    try:
        assert trending.update(db, t + DAY, rebuild=True, wait=True) is True
        assert done.is_set(), "it ran once the holder let go"
    finally:
        thread.join()
    assert _same(trending.top(db, list_names(db), LIMIT, t + DAY), _from_scratch(db, t + DAY))


def test_rows_stored_under_a_larger_cap_count_only_the_current_cap_of_votes(env, monkeypatch):
    """Rows written before the cap (or under a larger one) were carried over whole on ageing and by
    the rebase: an account's weight split over more votes than the rule counts, for up to a week."""
    db, p = env.db, env.products
    t = time.time() - 6 * DAY
    apply_batch(*[RatingEvent(user_id="tb-heavy", product_id=p[k], rating=5, ts=t + k * 3600) for k in range(8)])
    _week(p, t, users=3)
    monkeypatch.setattr(trending_votes, "MAX_VOTES_PER_USER", 1000)
    assert trending.update(db, t + DAY, rebuild=True) is True
    monkeypatch.setattr(trending_votes, "MAX_VOTES_PER_USER", 5)
    now = t + trending_votes.WINDOW_S + 1800  # the heavy account's first vote has left the window
    assert trending.update(db, now) is True
    assert _same(trending.top(db, list_names(db), LIMIT, now), _from_scratch(db, now))
    assert len(json.loads(trending_store.client().hget(trending_store.key(db.name, "users"), "tb-heavy"))) == 5


def test_the_marks_a_failed_refresh_took_expire_like_the_rest_of_the_state(env, monkeypatch):
    db, p = env.db, env.products
    t = time.time() - 2 * DAY
    _week(p, t, users=3)

    def dies(*_a, **_k) -> None:
        raise RuntimeError("the refresh dies")

    monkeypatch.setattr(trending_commit, "commit", dies)
    with pytest.raises(RuntimeError, match="dies"):
        trending.update(db, t + DAY)
    r = trending_store.client()
    assert r.scard(trending_store.key(db.name, "taking")) == 3, "kept for the next refresh"
    assert 0 < r.ttl(trending_store.key(db.name, "taking")) <= trending_store.STATE_TTL_S
