"""The trending state in Redis: its keys, the lock a refresh holds, and how a refresh writes.

core/trending.py decides what a refresh computes; this module is where the result lives and how it
gets there without readers seeing half of it. A refresh's change is usually small (the users marked
since the last one) and goes in one MULTI per ``CHUNK`` users (:func:`write_update`; a reader may
see some of its users computed again and not yet the others, each consistent); a rebuild's or
rebase's is the whole state, written in chunks into staging keys and switched in by one small MULTI
(:class:`Staging`), since one MULTI of it all kept Redis, shared with the site's cache,
Celery's broker and the workers' marks, from answering anyone while it ran. Both check the lock's
token first (:func:`_checked_multi`): a refresh that lost its lock writes nothing. A long read
(every stored row for a rebase, a backlog of marked histories) goes ``CHUNK`` at a time with the
lock renewed between (:class:`Hold`, :func:`all_rows`, :func:`read_by_ids`).

The keys, per database (``recsys:<db>:trending:<part>``; every live one expires after two windows
unused):

    all, cat:<name>  sorted set   product -> s(p), overall and per category (what :func:`core.trending.top` reads)
    voters           hash         "<list>\x1f<product>" -> its number of voters (none left: removed)
    users            hash         user -> JSON rows [product, rating, ts, category, term]: exactly
                                  the terms this state added for them, so they can be subtracted
    due              sorted set   user -> when their oldest vote leaves the window
    meta             hash         t0, live_until (trending is live until then), stamp (counts the
                                  commits, also kept in MongoDB) and server (the Redis run_id that
                                  wrote it): core.trending._rolled_back
    cats             set          the category lists written (a rebuild replaces them)
    dirty, taking    set          users marked by the writers; a refresh moves "dirty" into
                                  "taking" before it reads any history and deletes "taking" in its
                                  commit, so a refresh that dies leaves the marks to the next one
    lock             string       one refresh at a time (redis-py's lock; its token checked at commit,
                                  renewed between chunks of a long refresh: :class:`Hold`)
    staging:<token>:<part>        a rebuild's (or rebase's) new all, cat:<name>, users, voters, due
                                  and cats, written in chunks by the refresh holding the lock of
                                  token <token>, then renamed over the live keys in one small MULTI
                                  (:func:`_switch`); they expire LOCK_S after their last chunk, and
                                  a rebuild deletes any left by a refresh that died
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import islice
from typing import Iterable

import redis
from pymongo.database import Database

from core import mongo, redis_client, trending_votes

# every live key: a deployment whose refresh stopped that long starts afresh
STATE_TTL_S = 2 * trending_votes.WINDOW_S
# how long a refresh that died keeps the state from the others; a live one renews the lock between
# chunks (Hold), so this only has to exceed the longest step between two renewals (docs/benchmarks.md)
LOCK_S = 300
SEP = "\x1f"  # between a list's name and a product id in the voter counts (neither holds it)


class LockLost(RuntimeError):
    """The state's lock was not held when needed: this refresh went ``LOCK_S`` without renewing it
    (another may have started; nothing of it is live: staged keys are dropped, the marks it took
    stay for the next refresh), or the publish job waited ``core.trending.WAIT_S`` in vain."""


def key(db_name: str, part: str) -> str:
    """Keys carry the database name: one Redis serves several deployments and test sessions."""
    return f"recsys:{db_name}:trending:{part}"


def list_part(name: str) -> str:
    """The key part of list ``name`` (``mongo.ALL`` or a category)."""
    return "all" if name == mongo.ALL else f"cat:{name}"


def list_key(db_name: str, name: str) -> str:
    """The sorted set of list ``name`` (``mongo.ALL`` or a category)."""
    return key(db_name, list_part(name))


def staging_key(db_name: str, token: bytes, part: str) -> str:
    """Where a rebuild writes ``part`` before the switch: per database, and per refresh (its lock's
    token), so a refresh that lost its lock and still writes a chunk cannot mix into the next one's."""
    return key(db_name, f"staging:{token.decode()}:{part}")


def client() -> redis.Redis:
    """A rebuild's replies are large: a longer timeout than the site's (core.list_state)."""
    return redis_client.client(redis_client.BULK_TIMEOUT_S, redis_client.BULK_CONNECT_TIMEOUT_S)


# --- the lock, and the long reads that renew it ------------------------------------------------

class Hold:
    """The state's lock while a refresh works. A long one (a rebuild scans the whole week; the
    lock's time cannot follow the site's traffic) renews it to ``LOCK_S`` between chunks, so a
    rebuild of any size finishes, while a refresh that died frees the state ``LOCK_S`` after its
    last renewal."""

    def __init__(self, lock: redis.lock.Lock, db_name: str) -> None:
        self.lock, self.db_name = lock, db_name
        self.token: bytes = lock.local.token

    def renew(self) -> None:
        """Hold the lock ``LOCK_S`` more; LockLost when it expired (another refresh may have it)."""
        try:
            self.lock.reacquire()
        except redis.exceptions.LockError as exc:
            raise LockLost(f"trending state of {self.db_name}: lock lost during the refresh") from exc


def all_rows(r: redis.Redis, users_key: str, hold: Hold) -> dict[str, list]:
    """Every user's stored rows (the rebase), read ``CHUNK`` at a time (HSCAN; a user seen twice
    has the same row) with the lock renewed between: one HGETALL of a large week's users (200,000
    at 1M events) kept Redis from answering anyone else while it built the reply."""
    rows: dict[str, list] = {}
    cursor = 0
    while True:
        cursor, page = r.hscan(users_key, cursor, count=trending_votes.CHUNK)
        rows.update((u.decode(), json.loads(v)) for u, v in page.items())
        hold.renew()
        if not cursor:
            return rows


def read_by_ids(db: Database, collection: str, ids: Iterable[str], projection: dict, hold: Hold) -> dict[str, dict]:
    """Documents by ``_id``, ``CHUNK`` ids per read with the lock renewed between: after marks piled
    up (Celery stopped for hours, a slow FerretDB) one read of them all outlasted the lock, every
    refresh then ended in LockLost and kept the marks for the next, which had more to read."""
    ids, out = sorted(ids), {}
    for start in range(0, len(ids), trending_votes.CHUNK):
        out.update(mongo.find_by_ids(collection, ids[start:start + trending_votes.CHUNK], projection, db=db))
        hold.renew()
    return out


# --- the writes --------------------------------------------------------------------------------

@dataclass
class Change:
    """What a refresh writes. ``scores``: per list, its products' new scores; ``gone``: per list,
    its products left without a voter; ``counts`` / ``no_voters``: the voter counts to set / the
    fields to remove (``<list>SEP<product>``); ``rows``, ``due``: the users' rows (JSON) and due
    times to set; ``gone_users``: users without a vote left; ``cats``: the category lists touched."""
    scores: dict[str, dict[str, float]]
    gone: dict[str, list[str]]
    counts: dict[str, int]
    no_voters: list[str]
    rows: dict[str, str]
    due: dict[str, float]
    gone_users: list[str]
    cats: set[str]


def _checked_multi(pipe: redis.client.Pipeline, db_name: str, token: bytes, *watched: str) -> None:
    """Start a MULTI that runs only if the lock (and ``watched``) did not change since: a refresh
    that held the lock longer than LOCK_S (another may have started) writes nothing."""
    pipe.watch(key(db_name, "lock"), *watched)
    if pipe.get(key(db_name, "lock")) != token:
        raise LockLost(f"trending state of {db_name}: lock lost before the commit")


def _finish(pipe: redis.client.Pipeline, db_name: str, meta: dict[str, float] | None, cats: Iterable[str]) -> None:
    """The end of every commit: the new T0 and liveness, the marks taken let go, the expiries (only
    those with ``meta`` None: a refresh's part before its last)."""
    if meta is not None:
        pipe.hset(key(db_name, "meta"), mapping=meta)
        pipe.delete(key(db_name, "taking"))
    for part in ("meta", "all", "users", "voters", "due", "cats"):
        pipe.expire(key(db_name, part), STATE_TTL_S)
    for c in cats:  # a list with members is touched within a window: its oldest vote leaves
        pipe.expire(list_key(db_name, c), STATE_TTL_S)


def write_update(r: redis.Redis, db_name: str, meta: dict[str, float] | None, change: Change, token: bytes) -> None:
    """A part of a refresh's change (``CHUNK`` of its users: core.trending_commit.commit) in one
    MULTI; the last (``meta`` given) also sets the meta and lets the marks taken go, so a refresh
    that dies before it leaves them to the next, which computes their users again."""
    def k(part: str) -> str:
        return key(db_name, part)

    with r.pipeline(transaction=True) as pipe:
        _checked_multi(pipe, db_name, token)
        pipe.multi()
        for name, scores in change.scores.items():
            if change.gone[name]:
                pipe.zrem(list_key(db_name, name), *change.gone[name])
            if scores:
                pipe.zadd(list_key(db_name, name), scores)
        if change.no_voters:
            pipe.hdel(k("voters"), *change.no_voters)
        if change.counts:
            pipe.hset(k("voters"), mapping=change.counts)
        if change.gone_users:
            pipe.hdel(k("users"), *change.gone_users)
            pipe.zrem(k("due"), *change.gone_users)
        if change.rows:
            pipe.hset(k("users"), mapping=change.rows)
            pipe.zadd(k("due"), change.due)
        if change.cats:
            pipe.sadd(k("cats"), *change.cats)
        _finish(pipe, db_name, meta, change.cats)
        try:
            pipe.execute()
        except redis.WatchError as exc:
            raise LockLost(f"trending state of {db_name}: lock lost before the commit") from exc


class Staging:
    """A rebuild's (or rebase's) whole state on its way in: written ``CHUNK`` entries at a time
    into staging keys, the lock renewed between chunks, then made live by one small MULTI
    (:meth:`finish`). One MULTI of it all (hundreds of thousands of entries at 1M events a week)
    kept Redis, which the site's cache, Celery's broker and the workers' marks share, from answering
    anyone while it ran; a mark that timed out then asked for another rebuild. Readers see the old
    state until the switch.

    Used as a context manager around the rebuild's writes (core.trending_commit streams the users'
    rows into it a chunk at a time): it holds the refresh's token and the parts staged so far, whose
    expiries each chunk pushes to ``LOCK_S``, and deletes them if anything fails before the switch.
    """

    def __init__(self, r: redis.Redis, db_name: str, hold: Hold) -> None:
        self.r, self.db_name, self.hold = r, db_name, hold
        self.parts: list[str] = []  # staged so far, in the order first written

    def __enter__(self) -> Staging:
        drop_staging(self.r, self.db_name)  # left by a refresh that died half-way (they also expire)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None or not self.parts:
            return
        try:  # best effort: else they expire, or the next rebuild deletes them
            self.r.unlink(*(self._key(p) for p in self.parts))
        except redis.RedisError:
            pass

    def _key(self, part: str) -> str:
        return staging_key(self.db_name, self.hold.token, part)

    def write(self, part: str, command: str, entries: Iterable) -> None:
        """``entries`` (pairs for ``zadd`` and ``hset``, members for ``sadd``) into staging part
        ``part``, ``CHUNK`` per pipeline (:func:`_write_chunk`), the lock renewed after each. Read
        as they go: no copy of a whole part is made."""
        it = iter(entries)
        while chunk := list(islice(it, trending_votes.CHUNK)):
            if part not in self.parts:
                self.parts.append(part)
            _write_chunk(self.r, self._key(part), command, chunk, [self._key(p) for p in self.parts])
            self.hold.renew()

    def finish(self, meta: dict[str, float], change: Change) -> None:
        """The lists, voter counts and category set of ``change`` staged (its users' rows and due
        times are written by then), then the switch (:func:`_switch`)."""
        for name, scores in change.scores.items():
            self.write(list_part(name), "zadd", scores.items())
        self.write("voters", "hset", change.counts.items())
        self.write("cats", "sadd", sorted(change.cats))
        _switch(self.r, self.db_name, meta, self.parts, change.cats, self.hold.token)


def _write_chunk(r: redis.Redis, into: str, command: str, entries: list, staged: list[str]) -> None:
    """One chunk into staging key ``into``, in a pipeline without MULTI (Redis serves other clients
    between its commands), and the expiry of every key ``staged`` so far pushed to ``LOCK_S`` from
    now: they outlive the refresh only by as long as its lock would."""
    pipe = r.pipeline(transaction=False)
    if command == "zadd":
        pipe.zadd(into, dict(entries))
    elif command == "hset":
        pipe.hset(into, mapping=dict(entries))
    else:
        pipe.sadd(into, *entries)
    for name in staged:
        pipe.expire(name, LOCK_S)
    pipe.execute()


def _switch(r: redis.Redis, db_name: str, meta: dict[str, float], staged: list[str], cats: set[str],
            token: bytes) -> None:
    """The staged state becomes the live one in one MULTI of a few commands per key: the live keys
    UNLINKed (Redis frees a large value in the background; a DEL, or a RENAME onto it, frees it
    while every client waits), then each staged key RENAMEd over its live name. Every category
    list of the old state goes, so a list the new state has not is empty, not stale, for
    :func:`core.trending.top`; a part the new state has not (no vote at all) is left deleted."""
    live = [key(db_name, p) for p in ("all", "users", "voters", "due", "cats")]
    staging = [staging_key(db_name, token, p) for p in staged]
    with r.pipeline(transaction=True) as pipe:
        _checked_multi(pipe, db_name, token, key(db_name, "cats"), *staging)
        old_cats = {c.decode() for c in pipe.smembers(key(db_name, "cats"))}
        if staging and pipe.exists(*staging) != len(staging):
            raise LockLost(f"trending state of {db_name}: staged keys expired before the switch")
        pipe.multi()
        pipe.unlink(*live, *(list_key(db_name, c) for c in old_cats | cats))
        for part, name in zip(staged, staging):
            pipe.rename(name, key(db_name, part))
        _finish(pipe, db_name, meta, cats)
        try:
            pipe.execute()
        except redis.WatchError as exc:
            raise LockLost(f"trending state of {db_name}: lock or staged keys changed before the switch") from exc


def drop_staging(r: redis.Redis, db_name: str) -> None:
    """Delete every staging key of database ``db_name`` (a refresh that died left them): SCAN, which
    answers other clients between its pages, and UNLINK."""
    pattern = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in key(db_name, "staging:")) + "*"
    batch: list[bytes] = []
    for name in r.scan_iter(match=pattern, count=1000):
        batch.append(name)
        if len(batch) >= 1000:
            r.unlink(*batch)
            batch = []
    if batch:
        r.unlink(*batch)

