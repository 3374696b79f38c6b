"""Celery tasks. Each is idempotent (it recomputes and replaces), so a retry or a late ack is harmless."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from bisect import bisect_right
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Iterator

import redis
from celery import signals
from celery.exceptions import SoftTimeLimitExceeded
from celery.worker import state as worker_state
from threadpoolctl import threadpool_limits

from core import (artifacts, erasure, list_state, locking, mongo, popular, published, rating_history, recommend,
                  redis_client, shopper_controls, stored_lists)
from core.cache_keys import LAST_RESCORED_MODEL
from core.settings import get_settings
from kafka_workers.celery_app import CONFIG, RESCORE_TASK, app

log = logging.getLogger(__name__)


@app.task
def refresh_popular(limit: int = 50) -> int:
    """Most-reviewed products overall and per category (core.popular; publish runs it too)."""
    return popular.refresh_popular(limit)


@app.task
def refresh_trending(limit: int = 50) -> int:
    """Trending of the last week's live ratings, updated with what changed since the last run
    (core.popular, core.trending; publish runs it too, rebuilding the state)."""
    return popular.refresh_trending(limit)


@app.task
def finish_erasures() -> dict[str, int]:
    """Finish account erasures that stopped and were never run again (core.erasure;
    ``ERASURE_SWEEP_S`` after the deletion, so a deletion still running on the site is left alone)."""
    return erasure.finish_erasures(CONFIG.erasure_sweep_s)


def _site_database() -> None:
    """Django set up in this worker process, once, for the site's database (``DATABASE_URL``) and
    its models, as ``recsite/manage.py`` sets it up. Only :func:`delete_expired_tokens` needs it: the
    other tasks read MongoDB and Redis alone, so settings that do not load (production's
    ``DJANGO_SECRET_KEY`` missing) fail that task only. The site's ``LOGGING`` is not applied:
    ``django.setup()`` would replace the root handlers Celery set up with the site's own."""
    from django.apps import apps

    if apps.ready:
        return
    recsite = str(Path(__file__).resolve().parents[1] / "recsite")
    if recsite not in sys.path:
        sys.path.append(recsite)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsite.settings")
    import django
    from django.conf import settings

    settings.LOGGING_CONFIG = None  # Celery's logging stays as Celery configured it
    django.setup()


@app.task
def delete_expired_tokens() -> int:
    """Delete every account's expired API tokens (``accounts.tokens.delete_expired``): a sign-in
    deletes its own account's, but a device that never comes back left its token for good. Returns
    how many were deleted. The connections are closed before and after if unusable or older than
    ``CONN_MAX_AGE``, as Django does around each request (a worker lives for days). Claims on an
    e-mail address older than ``EMAIL_CONFIRM_TTL`` go too (``accounts.confirmation``): their links
    have expired, and the account page asks for the address again."""
    _site_database()
    from django.db import close_old_connections

    from accounts.confirmation import delete_expired_claims
    from accounts.tokens import delete_expired

    close_old_connections()
    try:
        claims = delete_expired_claims()
        if claims:
            log.info("deleted %d unconfirmed e-mail address(es) older than EMAIL_CONFIRM_TTL", claims)
        return delete_expired()
    finally:
        close_old_connections()


def _queued_key(version: str) -> str:
    return f"recsys:rescore:queued:{version}"


def _running_key(version: str) -> str:
    return f"recsys:rescore:running:{version}"


# The last user a re-score wrote (its checkpoint, where the next run goes on), with its version and
# the last version re-scored to the end when it started (``LAST_RESCORED_MODEL``). One key for every
# version: a run of another version replaces it at its start, so a version made current again (staff
# go back to it) starts over, instead of going on from a checkpoint of before the other's lists.
PROGRESS_KEY = "recsys:rescore:progress"


# A running re-score renews its running mark from a thread (_renewed) and at each checkpoint, where it
# stores how far it got (every CHECKPOINT_S); the mark expires RUNNING_LEASE_S after the last renewal.
# A run killed where it cannot hand over (SIGKILL, SIGTERM before its handler is in place, a lost
# host) holds its version back that long, not RESCORE_TIME_LIMIT_S, and the run check_model queues
# then goes on from the checkpoint.
RUNNING_LEASE_S = 300
CHECKPOINT_S = 10.0
PROGRESS_TTL_S = 7 * 86400

# The running mark changes only through these two scripts, each one step in Redis: a GET then a SET
# (or DEL) from here let a run pass its checkpoint, or drop the mark, just after another run took it.
# KEYS[1]: the mark; ARGV[1]: the run's token; ARGV[2]: the lease (s).
_RENEW_MARK = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end  -- another run's (a mark that only expired is taken again)
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
_DROP_MARK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end  -- gone, or another run's: left alone
return redis.call('DEL', KEYS[1])
"""


def _renew_mark(r: redis.Redis, version: str, token: str) -> bool:
    """Renew the running mark for ``RUNNING_LEASE_S`` if it is the run ``token``'s or nobody's;
    False if another run holds it."""
    return bool(r.eval(_RENEW_MARK, 1, _running_key(version), token, RUNNING_LEASE_S))


def _drop_mark(r: redis.Redis, version: str, token: str) -> bool:
    """Delete the running mark if the run ``token`` holds it; False if not (another run's, or gone)."""
    return bool(r.eval(_DROP_MARK, 1, _running_key(version), token))


@app.task
def check_model() -> str | None:
    """Queue one re-scoring per newly published model version (``CURRENT``, see spark_jobs/publish.py).

    Beat calls this every few seconds; while a rescore runs (its running mark, a lease it renews)
    or waits in the queue (a Redis ``SET NX`` per version, expiring after the rescore's time limit,
    so a rescore lost before it started is queued again) the later calls queue no more. A run that
    was killed lets its lease run out: the next call queues it again, and it goes on from its
    checkpoint (``PROGRESS_KEY``).
    """
    # now, not from the second-old cache: checking is this task's job; the last known version while
    # the model store is unreachable, ModelStoreUnreachable (the task fails) if never read
    version = published.current_version(fresh=True)
    if version is None:
        return None
    r = redis_client.client()
    rescored, running = r.mget(LAST_RESCORED_MODEL, _running_key(version))  # one round trip, every few seconds
    if rescored == version.encode() or running is not None:
        return None
    if not r.set(_queued_key(version), "1", nx=True, ex=CONFIG.rescore_time_limit_s + 60):
        return None
    rescore_active_users.delay(version)
    return version


# --- stopping a re-score when its worker stops ---------------------------------------------------
# A stop (bin/services stop or restart, docker compose stop) during a re-score lost it for hours:
# Celery's warm shutdown waited for the hours-long task, supervisord killed it 30 s later (or SIGTERM
# killed the pool child at once), and its running and queued marks stayed until they expired
# (RESCORE_TIME_LIMIT_S). Now the loop stops between two users, queues the rest and lets go of
# its running mark, so the next worker carries on from the next user.

_STOP = threading.Event()  # this worker is shutting down: a re-score here hands over
_IN_POOL_CHILD = False  # a prefork pool's child process (where SIGTERM kills unless we catch it)


class _LoopEnded(Exception):
    """The re-score stopped early, after the user ``after``, with ``done`` lists written."""

    def __init__(self, after: str | None, done: int) -> None:
        super().__init__(after, done)
        self.after, self.done = after, done


class _Stopped(_LoopEnded):
    """The worker shuts down: the run hands the rest over (:func:`_hand_over`)."""


class _Superseded(_LoopEnded):
    """The running mark is another run's: this one stalled past ``RUNNING_LEASE_S`` and the next
    ``check_model`` queued a run that took over from the checkpoint. It stops, touching no mark."""


@signals.worker_process_init.connect
def _in_pool_child(**_kwargs) -> None:
    global _IN_POOL_CHILD
    _IN_POOL_CHILD = True
    _STOP.clear()


@signals.worker_shutting_down.connect
def _worker_shutting_down(**_kwargs) -> None:
    """In the worker's main process (SIGTERM or Ctrl-C to it alone, as ``docker compose stop``
    sends): a re-score in this process (solo or threads pool) sees the flag; one in a pool child is
    sent SIGTERM, which ``_sigterm_stops_the_rescore`` turns into the same flag there."""
    _STOP.set()
    for request in list(worker_state.active_requests):
        pid = getattr(request, "worker_pid", None)
        if request.name == RESCORE_TASK and pid and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass


@contextmanager
def _sigterm_stops_the_rescore() -> Iterator[None]:
    """While a re-score runs in a pool child, SIGTERM (supervisord's to the process group, or the
    main process's above) stops the loop instead of killing the child; then the default again
    (Celery resets SIGTERM in its children: outside a re-score it still ends one at once)."""
    if not _IN_POOL_CHILD or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: _STOP.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _hand_over(r: redis.Redis, version: str, token: str, active_days: int, batch_size: int,
               after: str | None) -> None:
    """Queue the users after ``after`` for the next worker. Its running mark goes first (else the
    copy, taken at once by another worker, would see it and end); the queued mark stays, renewed:
    a copy is queued, check_model need not queue another. Not queued: both marks go, and
    check_model queues the version again (from its checkpoint). A mark that is another run's by now
    (this one stalled past its lease) stays, and nothing is queued: that run goes on."""
    if not _drop_mark(r, version, token):
        log.warning("model %s: worker stopping; another run took the re-scoring over", version)
        return
    r.set(_queued_key(version), "1", ex=CONFIG.rescore_time_limit_s + 60)
    try:
        rescore_active_users.apply_async((version,), {"active_days": active_days, "batch_size": batch_size,
                                                      "start_after": after})
    except Exception:
        r.delete(_queued_key(version))
        raise
    log.warning("model %s: worker stopping; re-scoring handed over after user %r", version, after)


@app.task(time_limit=CONFIG.rescore_time_limit_s, soft_time_limit=CONFIG.rescore_time_limit_s - 60)
def rescore_active_users(version: str, active_days: int = 30, batch_size: int = 200,
                         start_after: str | None = None) -> int:
    """Re-score users who rated on the site recently with the new model, announcing each new
    list's version in Redis (``core.list_state``) as it is written.

    Runs once per version: a copy delivered while one runs (it holds the version's running lock)
    or after one finished (``LAST_RESCORED_MODEL``) returns 0 at once. A run that fails releases both
    locks, so the next ``check_model`` queues it again; one that ran out of time keeps its queued
    mark until that expires. A run whose version stops being current stops. A run whose worker
    shuts down stops between two users and queues the rest (``start_after``: the users after
    that one, in order), for the next worker. A run killed before it could (SIGKILL; SIGTERM
    while a long C call, the model's load, holds off its handler past the stop's grace period)
    leaves its checkpoint and a lease that runs out (``RUNNING_LEASE_S``): the next ``check_model``
    queues the version again and that run goes on from the checkpoint (``CHECKPOINT_S`` of work redone).
    """
    r = redis_client.client()
    if r.get(LAST_RESCORED_MODEL) == version.encode():  # a copy delivered late: done without a mark
        return 0
    token = uuid.uuid4().hex
    running = r.set(_running_key(version), token, nx=True, ex=RUNNING_LEASE_S)
    # not queued any more, either way: running, its mark keeps check_model off; a copy that found
    # another run holding it keeping the queued mark, check_model would not queue the version again
    # should that run die, until the mark expired (RESCORE_TIME_LIMIT_S)
    r.delete(_queued_key(version))
    if not running:
        log.info("model %s: a rescore is already running; this copy does nothing", version)
        return 0
    try:
        with _renewed(r, version, token) as superseded, _sigterm_stops_the_rescore():
            done = _rescore(version, active_days, batch_size, start_after, token, superseded)
    except _Superseded as ended:
        log.warning("model %s: another run took the re-scoring over after user %r", version, ended.after)
        return ended.done
    except _Stopped as stopped:
        _hand_over(r, version, token, active_days, batch_size, stopped.after)
        return stopped.done
    except SoftTimeLimitExceeded:
        # queued again at once it would run out of time again, over and over: its queued mark is
        # set until it expires (RESCORE_TIME_LIMIT_S), then check_model tries again (from the checkpoint)
        r.set(_queued_key(version), "1", ex=CONFIG.rescore_time_limit_s + 60)
        _drop_mark(r, version, token)
        log.error("model %s: re-scoring ran out of time (RESCORE_TIME_LIMIT_S=%d)", version,
                  CONFIG.rescore_time_limit_s)
        raise
    except BaseException:
        _end_run(r, version, token)
        raise
    _end_run(r, version, token)
    return done


def _end_run(r: redis.Redis, version: str, token: str) -> None:
    """Both marks go, the run's running mark and the version's queued one: the version may be made
    current again later (staff go back to it, after another was re-scored), and its queued mark
    would keep check_model from queueing it until the mark expired."""
    _drop_mark(r, version, token)
    r.delete(_queued_key(version))


def _renewed(r: redis.Redis, version: str, token: str) -> AbstractContextManager[threading.Event]:
    """Renew the run's running mark from a thread while the run goes on (``locking.LEASE_RENEWALS``
    times per ``RUNNING_LEASE_S``, by :func:`core.locking.renewing`, as a batch's lease), through the
    model's load and the active users' scan too: renewed only at its checkpoints, a run whose load
    and scan outlasted the lease was taken over by the next ``check_model``'s run and stopped at its
    first checkpoint, every time. Yields an event set once the mark is found another run's (the
    run stalled past its lease, and was taken over); a Redis error is tried again at the next renewal."""
    def renew() -> bool | None:
        try:
            return bool(_renew_mark(r, version, token))  # False: another run's mark
        except redis.RedisError as exc:
            log.warning("model %s: running mark not renewed (%s); trying again", version, exc)
            return None
    return locking.renewing(renew, RUNNING_LEASE_S / locking.LEASE_RENEWALS, f"rescore lease {version}")


def _active_users(active_days: int) -> list[str]:
    """Users who rated within ``active_days``, in order (a handed-over run goes on from one)."""
    since = time.time() - active_days * 86400
    return sorted({d["user_id"] for d in mongo.get_db()[mongo.RATINGS].find({"ts": {"$gte": since}}, {"user_id": 1})})


def _rescore_user(model, user: str) -> int:
    """1 if the user's list is now this re-score's, else 0 (nothing to recommend, account deleted,
    or a worker's list from a later read of the history kept; or this process stalled past the
    user's lock while another writer took it over, whose list is the newer one)."""
    as_of = time.time()
    items = recommend.recommend(model, rating_history.user_ratings(user), n=get_settings().top_n,
                                exclude=shopper_controls.exclusions(user))
    if not items:
        return 0
    try:
        doc = stored_lists.write_recommendations(user, items, model.version, as_of=as_of)
    except locking.LeaseLost as exc:
        log.warning("model %s: user %s not re-scored: %s", model.version, user, exc)
        return 0
    if doc is None:  # the account was deleted meanwhile: no list
        return 0
    list_state.announce(user, list_state.version_of(doc))
    return int(doc.get("as_of") == as_of)


def _checkpoint(r: redis.Redis, version: str, token: str, base: str | None, after: str | None, done: int) -> None:
    """Renew the run's running mark and store ``after``, the last user written (None: none yet), for
    a run after a kill (:func:`_resume_after`); ``base`` is ``LAST_RESCORED_MODEL`` at the run's
    start. :class:`_Superseded` if the mark is another run's by now. A mark that only expired (a
    model's load longer than the lease) is taken again."""
    if not _renew_mark(r, version, token):
        raise _Superseded(after, done)
    r.set(PROGRESS_KEY, json.dumps({"version": version, "base": base, "after": after}), ex=PROGRESS_TTL_S)


def _resume_after(r: redis.Redis, version: str, base: str | None, start_after: str | None) -> str | None:
    """Where a run goes on: after ``start_after`` (a hand-over) or the stored checkpoint, the later.
    The checkpoint counts only if it is this version's and no other version was re-scored to the end
    since (``base``): else the users before it may hold the other version's lists."""
    stored = json.loads(r.get(PROGRESS_KEY) or "{}")
    kept = stored.get("after") if (stored.get("version"), stored.get("base")) == (version, base) else None
    return max((u for u in (start_after, kept) if u is not None), default=None)


def _rescore(version: str, active_days: int, batch_size: int, start_after: str | None, token: str,
             superseded: threading.Event) -> int:
    """Re-score the active users after ``start_after`` (or the checkpoint) with ``version``, as the
    run whose running mark holds ``token``; returns how many lists are now this re-score's.
    ``superseded``: set when the mark's renewal found it another run's (:func:`_renewed`)."""
    r = redis_client.client()
    # Read again, now that this run holds the running mark: a run that finished between the caller's
    # read and the mark (it dropped its mark, so this one got it) set it, and deleted its checkpoint.
    # Without this look this run would re-score every user again; with the caller's value as
    # ``base``, a checkpoint's base could be one that no longer holds.
    rescored = r.get(LAST_RESCORED_MODEL)
    base = rescored.decode() if rescored else None
    if base == version:
        log.info("model %s: re-scored to the end by a run that finished as this one started", version)
        return 0
    model = artifacts.load_model(version)
    if model is None:
        return 0
    start_after = _resume_after(r, version, base, start_after)
    users = _active_users(active_days)
    if start_after is not None:
        users = users[bisect_right(users, start_after):]
    done, last, saved_at = 0, start_after, time.monotonic()
    _checkpoint(r, version, token, base, last, done)  # the model is loaded: the lease from here
    # One user's solve and scores gain nothing from OpenBLAS's second thread, whose wait for the
    # next call spins a core beside the workers and the database (1.6x the CPU per user at 10k items,
    # the same wall time: docs/benchmarks.md); the rating workers run with one thread too.
    with threadpool_limits(1, user_api="blas"):
        for start in range(0, len(users), batch_size):
            # a newer model came: its own re-score follows (and replaces the checkpoint, or the
            # version's lists outdate it: ``base``), so the checkpoint stays for a go-back before that
            # (read now, not from core.published's second-old cache, which may predate ``version``;
            # while the store is unreachable its last known version)
            if published.current_version(fresh=True) != version:
                log.info("model %s: no longer current; re-scoring stopped after %d users", version, done)
                return done
            for user in users[start:start + batch_size]:
                if superseded.is_set():  # first: a run taken over must not hand over (_Stopped)
                    raise _Superseded(last, done)
                if _STOP.is_set():
                    raise _Stopped(last, done)
                if time.monotonic() - saved_at >= CHECKPOINT_S:
                    _checkpoint(r, version, token, base, last, done)
                    saved_at = time.monotonic()
                done += _rescore_user(model, user)
                last = user
    r.set(LAST_RESCORED_MODEL, version)
    r.delete(PROGRESS_KEY)
    log.info("model %s: re-scored %d active users", version, done)
    return done
