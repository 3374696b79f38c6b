"""Trending scores kept in Redis and updated by what changed since the last refresh.

The rule is core.popular's (:func:`core.popular.trending_scores`) and lives in core/trending_votes.py:
a user's votes are their history's most recent ratings within the window, and product p scores
S(p), the sum of its voters' decayed terms. Redis keeps s(p), S(p) without the factor common to
every term, in a sorted set per category and one for all products ("forward decay", around an
origin T0): the order is S's, and S(p) = s(p) * 2 ** -((now - T0) / H). A user's terms change only
when their history changes (its writers mark them: :func:`mark_changed`) or when one of their
votes leaves the window (a sorted set of users by that time), so a refresh recomputes those
users' terms alone, subtracting what it added for them before. Reading the whole week instead
was a scan of every stored rating on FerretDB each minute (docs/benchmarks.md).

The state is rebuilt (a new T0 = now) from the window's rating events (one scan of ``ratings``,
what every refresh paid before; the same votes, as the workers apply those events to the
histories; folded as they are read, so it holds the week's distinct votes, not its events) when
it is missing (first run, Redis flushed or its keys expired), when it is older than the last
commit (Redis restarted from a snapshot, or failed over: the marks since are lost; see
:func:`_rolled_back`), when a writer could not mark a user (Redis was down: it leaves a note in
MongoDB) and when the publish job asks (a batch load
replaced the histories and the catalog). Once T0 is a week old the stored votes are
recomputed around a new one, which keeps 2 ** ((t - T0) / H) between 2 ** -7 and 2 ** 8.

The code, in the order a refresh runs through it:

    core/trending.py          the writers' marks (:func:`mark_changed`, :func:`request_rebuild`),
                              the refresh (:func:`update`: under the lock, which users to compute
                              again and their votes) and the readers (:func:`top`, :func:`drop_state`)
    core/trending_votes.py    the rule: a user's votes and their terms, the fold of the window's events
    core/trending_commit.py   the users' old terms out and new ones in, per list and product
    core/trending_store.py    the keys, the lock (Hold, LockLost) and the writes: a MULTI per CHUNK
                              users, or a rebuild's chunks then a switch

Each constant has one definition (WINDOW_S, HALF_LIFE_S, MAX_VOTES_PER_USER and CHUNK in
trending_votes; LOCK_S, STATE_TTL_S and SEP in trending_store; REBASE_AFTER_S, WAIT_S, MISSED and
NOTE_KEPT_S here), which the other modules read when they use it (``trending_votes.CHUNK``), so a
test patches it on its own module.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Iterable

import redis
from pymongo.database import Database

from core import mongo, rating_history, trending_commit, trending_store, trending_votes
from core.settings import TASK_TIME_LIMIT_S
from core.trending_store import LockLost  # update raises it; callers catch it as trending.LockLost

log = logging.getLogger(__name__)

REBASE_AFTER_S = 7 * 86400  # T0 older than this: the stored votes are recomputed around a new one
# how long the publish job waits for a refresh holding the state: a renewing one may hold it as long
# as Celery lets a task run (core.settings.TASK_TIME_LIMIT_S, an hour), then LOCK_S more
WAIT_S = TASK_TIME_LIMIT_S + trending_store.LOCK_S
MISSED = "trending-state"  # ``popular`` document asking for a rebuild (:func:`request_rebuild`)
COMMITTED = "trending-commit"  # ``popular`` document: the stamp of the last commit (:func:`_rolled_back`)
NOTE_KEPT_S = 60.0  # the refreshes rebuild this long after a missed mark (its events' insert may lag)


# --- the writers: which users changed ---------------------------------------------------------

def mark_changed(users: Iterable[str], db: Database | None = None) -> None:
    """Note that these users' histories changed (or were deleted): one pipelined ``SADD``.

    Called after the history write, so a refresh that takes the mark reads the new history. With
    Redis down the write still counts: a note in MongoDB makes the next refresh rebuild.
    """
    users = list(dict.fromkeys(users))
    if not users:
        return
    db = db if db is not None else mongo.get_db()
    from core import list_state  # its client: short timeouts, shared with the worker's announcements

    try:
        pipe = list_state.client().pipeline(transaction=False)
        pipe.sadd(trending_store.key(db.name, "dirty"), *users)
        pipe.expire(trending_store.key(db.name, "dirty"), trending_store.STATE_TTL_S)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("trending: %d changed users not marked in Redis (%s); the next refresh rebuilds", len(users), exc)
        request_rebuild(db)


def request_rebuild(db: Database) -> None:
    """Make the next refreshes rebuild the state from the window's events: a note in MongoDB, which
    works with Redis down. Written by a writer that could not mark its users, and by the batch load
    (spark_jobs/mongo_load.py), which replaces histories and moves products between categories: the
    stored votes keep each product's category, and the publish job that would rebuild may never
    come (a failed train, a rejected model)."""
    db[mongo.POPULAR].update_one({"_id": MISSED}, {"$set": {"missed_at": time.time()}}, upsert=True)


# --- the refresh -------------------------------------------------------------------------------

def update(db: Database, now: float, rebuild: bool = False, wait: bool = False) -> bool | None:
    """Bring the state up to ``now``; True when a rating was made or taken back within the window
    (trending is live), None when another refresh holds the state (and ``wait`` is not set)."""
    r = trending_store.client()
    lock = r.lock(trending_store.key(db.name, "lock"), timeout=trending_store.LOCK_S, blocking=wait,
                  blocking_timeout=WAIT_S if wait else None)
    if not lock.acquire():
        if wait:  # the publish job: it must not take "busy" for "nothing is live" (see core.popular)
            raise LockLost(f"trending state of {db.name}: held by another refresh for over {WAIT_S} s")
        return None
    try:
        return _update(r, db, now, rebuild, trending_store.Hold(lock, db.name))
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            log.warning("trending: the state's lock expired during a refresh (LOCK_S=%d)", trending_store.LOCK_S)


def _update(r: redis.Redis, db: Database, now: float, rebuild: bool, hold: trending_store.Hold) -> bool:
    """:func:`update` under the lock: which users to compute again, their votes, the commit."""
    def k(part: str) -> str:
        return trending_store.key(db.name, part)

    raw = {a.decode(): b.decode() for a, b in r.hgetall(k("meta")).items()}
    meta = {a: float(b) for a, b in raw.items() if a != "server"}
    notes = {d["_id"]: d for d in db[mongo.POPULAR].find({"_id": {"$in": [MISSED, COMMITTED]}})}
    missed, stamp = notes.get(MISSED), float((notes.get(COMMITTED) or {}).get("stamp") or 0)
    server = _server_id(r)
    if meta and _rolled_back(meta, raw.get("server"), stamp, server):
        log.warning("trending: the state in Redis is older than its last commit (Redis restarted or was "
                    "restored, and the marks since then with it); rebuilding it from the week's ratings")
        rebuild = True
    # the marks are taken before any history is read: one added later is for a write read later
    pipe = r.pipeline(transaction=True)
    pipe.sunionstore(k("taking"), [k("taking"), k("dirty")])  # (which drops the destination's expiry)
    pipe.delete(k("dirty"))
    pipe.expire(k("taking"), trending_store.STATE_TTL_S)
    pipe.smembers(k("taking"))
    changed = {u.decode() for u in pipe.execute()[3]}
    old: dict[str, list] = {}  # the stored rows of the users computed again (none in a rebuild)
    if rebuild or missed or not meta:  # from the window's rating events, as the refresh did each minute
        carried, live_until = _week_votes(db, now, hold)
        meta, rebuild = {"t0": now, "live_until": live_until}, True
    elif now - meta["t0"] > REBASE_AFTER_S:  # every stored vote again, around a new T0
        carried = trending_votes.stored_votes(trending_store.all_rows(r, k("users"), hold), now)
        meta, rebuild = {"t0": now, "live_until": meta["live_until"]}, True
    else:  # a vote leaving the window changes no history: the user's other votes are those stored
        expiring = {u.decode() for u in r.zrangebyscore(k("due"), "-inf", f"({now!r}")}
        users = sorted(changed | expiring)
        old = {u: json.loads(v) for u, v in zip(users, r.hmget(k("users"), users) if users else []) if v}
        carried = trending_votes.stored_votes(old, now)
    # the marked users' histories win: a worker's batch stores its ratings after it marks them
    fields = {"ratings": 1, "removed": 1, rating_history.BATCH: 1}
    histories = trending_store.read_by_ids(db, mongo.USER_HISTORY, changed, fields, hold)
    # updated in place, not copied: a rebuild's commit pops each user's votes as it writes them, which
    # frees them only if nothing else holds the dict
    new = carried
    new.update((u, trending_votes.votes(histories.get(u), now)) for u in changed)
    activity = [trending_votes.last_activity(h) + trending_votes.WINDOW_S for h in histories.values()]
    meta["live_until"] = max([meta["live_until"], *activity])
    meta["stamp"] = max(stamp, meta.get("stamp", 0.0)) + 1
    trending_commit.commit(r, db, now, {**meta, **({"server": server} if server else {})}, old, new, rebuild, hold)
    db[mongo.POPULAR].update_one({"_id": COMMITTED}, {"$set": {"stamp": meta["stamp"], "at": time.time()}},
                                 upsert=True)
    # the note goes once its change is surely in ``ratings`` (a worker batch stores its events after
    # marking), unless a writer missed its mark again since it was read
    if missed and float(missed.get("missed_at") or 0) < time.time() - NOTE_KEPT_S:
        db[mongo.POPULAR].delete_one({"_id": MISSED, "missed_at": missed.get("missed_at")})
    return now <= meta["live_until"]


def _server_id(r: redis.Redis) -> str | None:
    """The Redis server process's ``run_id`` (a new one at every start, and on another server after
    a failover); None where ``INFO`` is not allowed (then only the commit stamp tells)."""
    try:
        return r.info("server").get("run_id") or None
    except redis.ResponseError:
        return None


def _rolled_back(meta: dict[str, float], stored_server: str | None, stamp: float, server: str | None) -> bool:
    """Is the state Redis holds older than what the refreshes wrote? Then the writers' marks since
    are gone too (a user who rated since would not be computed again until their next rating).

    Redis keeps its data in memory; restarted (a crash, an OOM kill, a reboot), it reloads its last
    snapshot or append-only file, which may miss the last minutes, and a replica promoted by a
    failover may lag. Two signs, each enough: the state was written by another Redis process than
    the one serving now (its ``run_id``; a restart that lost nothing rebuilds too, once), or a later
    commit's stamp is in MongoDB (each commit counts one up, in Redis's ``meta`` and then MongoDB),
    for a server whose ``INFO`` is not allowed or a state restored from elsewhere. The marks a
    running server loses otherwise (evicted under ``maxmemory``) neither sign shows: the state's
    keys must not be evictable (``noeviction``, or a ``volatile-*`` policy with spare memory).
    """
    return stamp > meta.get("stamp", 0.0) or bool(server and stored_server and server != stored_server)


def _week_votes(db: Database, now: float, hold: trending_store.Hold) -> tuple[dict[str, list], float]:
    """A rebuild's votes, folded from the window's rating events, and until when trending is live
    (a window after the newest event). The scan renews every CHUNK documents read, the fold every
    CHUNK events and users it keeps."""
    week = trending_votes.fold_events(trending_votes.live_events(db, now, hold.renew), hold.renew)
    hold.renew()
    return week.votes, (week.newest if week.newest is not None else 0.0) + trending_votes.WINDOW_S


# --- the readers -------------------------------------------------------------------------------

def top(db: Database, names: Iterable[str], limit: int, now: float) -> dict[str, list[dict[str, Any]]]:
    """The lists ``names`` at ``now``: top ``limit`` by score, ties by product id (core.popular's
    order), each ``{product_id, score}`` with the score at ``now`` rounded as before."""
    r, names = trending_store.client(), list(names)
    pipe = r.pipeline(transaction=True)  # T0 and the scores of one state (a rebuild moves both)
    pipe.hget(trending_store.key(db.name, "meta"), "t0")
    for name in names:
        pipe.zrevrange(trending_store.list_key(db.name, name), 0, limit - 1, withscores=True)
    t0, *heads = pipe.execute()
    t0 = float(t0 or now)
    pipe = r.pipeline(transaction=False)
    for name, head in zip(names, heads):  # members tied with the last one may sort before it by id
        if len(head) == limit:
            pipe.zrangebyscore(trending_store.list_key(db.name, name), head[-1][1], head[-1][1],
                               withscores=True)
    ties = iter(pipe.execute())
    factor = 2.0 ** ((t0 - now) / trending_votes.HALF_LIFE_S)
    out = {}
    for name, head in zip(names, heads):
        rows = {p.decode(): s for p, s in (head + (next(ties) if len(head) == limit else []))}
        ranked = sorted(rows.items(), key=lambda x: (-x[1], x[0]))[:limit]
        out[name] = [{"product_id": p, "score": round(s * factor, 4)} for p, s in ranked]
    return out


def drop_state(db_name: str) -> None:
    """Forget the state of database ``db_name`` (tests, benchmarks): the next refresh rebuilds."""
    r = trending_store.client()
    cats = [c.decode() for c in r.smembers(trending_store.key(db_name, "cats"))]
    parts = ("meta", "all", "users", "voters", "due", "cats", "dirty", "taking", "lock")
    r.delete(*(trending_store.key(db_name, part) for part in parts),
             *(trending_store.list_key(db_name, c) for c in cats))
    trending_store.drop_staging(r, db_name)
